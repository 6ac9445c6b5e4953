"""DeepLabV3+ (Chen et al. 2018) on the package's :class:`~fetalbio.models.resnet.ResNetEncoder`.

Encoder with atrous last stage(s) (encoder stride 16 or 8) -> ASPP (1x1 branch, three atrous 3x3
branches, image-level pooling branch) -> decoder fusing the stride-4 low-level feature ->
classifier -> bilinear upsampling to the input resolution (``output_stride`` 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fetalbio.models.blocks import ConvBNReLU, check_input, init_head, init_weights, resize_to
from fetalbio.models.resnet import ResNetEncoder
from fetalbio.registry import MODELS

__all__ = ["ASPP", "DeepLabV3Plus"]


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling.

    ``(B, in_ch, h, w) -> (B, out_ch, h, w)``: concatenation of a 1x1 branch, one 3x3 branch per
    atrous rate and an image-level branch (global average pool -> 1x1 conv -> ReLU -> broadcast),
    projected by a 1x1 :class:`ConvBNReLU` (+ dropout).

    The image-level branch has a biased conv and no BatchNorm, so training also works on a
    batch of one (BatchNorm over a 1x1 map with B=1 is undefined).
    """

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int], dropout: float = 0.1) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_ch, out_ch, kernel_size=1)]
        branches += [ConvBNReLU(in_ch, out_ch, kernel_size=3, dilation=int(r)) for r in rates]
        self.branches = nn.ModuleList(branches)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, kernel_size=1), nn.ReLU())
        self.project = nn.Sequential(ConvBNReLU((len(branches) + 1) * out_ch, out_ch, kernel_size=1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [branch(x) for branch in self.branches]
        feats.append(self.image_pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(feats, dim=1))


@MODELS.register("deeplabv3plus")
class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ segmentation / heatmap network.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` raw logits; H, W multiples of
    ``encoder_stride``.

    Args:
        in_channels, out_channels: image channels and output channels.
        encoder_stride: 16 (last stage atrous) or 8 (last two stages atrous).
        layers, base_width, block: encoder layout (see :class:`ResNetEncoder`).
        aspp_rates: atrous rates at encoder stride 16; doubled at stride 8. The paper's (6, 12, 18)
            are for 513-pixel crops; the default (2, 4, 6) suits ~128-256 pixel inputs (feature
            maps of 8-16 cells at stride 16).
        aspp_width: channels of the ASPP branches and of the decoder.
        low_level_width: channels the stride-4 feature is reduced to before fusion (48 in the
            paper for 256-channel features).
        dropout: dropout after the ASPP projection.
    """

    output_kind = "dense"
    output_stride = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        encoder_stride: int = 16,
        layers: Sequence[int] = (2, 2, 2, 2),
        base_width: int = 16,
        block: str = "basic",
        aspp_rates: Sequence[int] = (2, 4, 6),
        aspp_width: int = 64,
        low_level_width: int = 24,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if encoder_stride not in (8, 16):
            raise ValueError(f"deeplabv3plus: encoder_stride must be 8 or 16, got {encoder_stride}")
        self.in_channels = in_channels
        dilate = (False, False, True) if encoder_stride == 16 else (False, True, True)
        self.encoder = ResNetEncoder(in_channels, layers, base_width, block, replace_stride_with_dilation=dilate)
        scale = 16 // encoder_stride
        self.aspp = ASPP(self.encoder.channels[-1], aspp_width, [r * scale for r in aspp_rates], dropout)
        self.low_level = ConvBNReLU(self.encoder.channels[0], low_level_width, kernel_size=1)
        self.decoder = nn.Sequential(ConvBNReLU(aspp_width + low_level_width, aspp_width), ConvBNReLU(aspp_width, aspp_width))
        self.head = nn.Conv2d(aspp_width, out_channels, kernel_size=1)
        self.input_multiple: int = encoder_stride
        init_weights(self)
        init_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "deeplabv3plus")
        c1, _, _, c4 = self.encoder(x)
        low = self.low_level(c1)  # (B, low_level_width, H/4, W/4)
        high = resize_to(self.aspp(c4), low)  # (B, aspp_width, H/4, W/4)
        y = self.head(self.decoder(torch.cat([high, low], dim=1)))  # (B, out, H/4, W/4)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
