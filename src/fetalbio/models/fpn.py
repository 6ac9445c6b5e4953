"""Attention feature pyramid (write-up 000, approach 3) for landmark heatmaps.

A ResNet encoder (:class:`~fetalbio.models.resnet.ResNetEncoder`) gives features at strides 4,
8, 16 and 32; a feature pyramid (Lin et al. 2017: 1x1 laterals, top-down nearest upsampling and
sums, 3x3 smoothing) makes them ``fpn_width`` channels each. The levels are then fused at stride
4 with attention, in the spirit of attentive feature-pyramid fusion for cephalometric landmarks
(Chen et al., MICCAI 2019):

* **level attention** -- a small conv net on the concatenated levels gives, per pixel, softmax
  weights over the levels, and the fused map is the weighted sum (each pixel picks its scales);
* **channel attention** -- squeeze-and-excitation on the fused map;
* **spatial attention** -- a 7x7 conv on the channel mean and max, sigmoid (CBAM).

A 3x3 :class:`ConvBNReLU` and a 1x1 conv give the heatmaps: ``output_stride`` 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fetalbio.models.blocks import ConvBNReLU, check_input, check_option, init_head, init_weights, resize_to
from fetalbio.models.resnet import ResNetEncoder
from fetalbio.registry import MODELS

__all__ = ["AttentionFPN", "LevelAttentionFusion"]


class LevelAttentionFusion(nn.Module):
    """Fuse ``L`` same-shape maps ``(B, C, H, W)`` into one ``(B, C, H, W)`` with per-pixel level
    weights, then channel (SE, reduction ``reduction``) and spatial (CBAM 7x7) attention."""

    def __init__(self, channels: int, levels: int, reduction: int = 4) -> None:
        super().__init__()
        self.levels = levels
        self.level_logits = nn.Sequential(ConvBNReLU(channels * levels, channels, kernel_size=3), nn.Conv2d(channels, levels, kernel_size=1))
        squeezed = max(1, channels // reduction)
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, squeezed, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(squeezed, channels, kernel_size=1),
            nn.Sigmoid(),
        )
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, kernel_size=7, padding=3), nn.Sigmoid())

    def level_weights(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Softmax weights over the levels, ``(B, L, H, W)``."""
        return torch.softmax(self.level_logits(torch.cat(feats, dim=1)), dim=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        w = self.level_weights(feats)
        fused = sum(w[:, i : i + 1] * f for i, f in enumerate(feats))
        fused = fused * self.channel(fused)
        stats = torch.cat([fused.mean(dim=1, keepdim=True), fused.amax(dim=1, keepdim=True)], dim=1)
        return fused * self.spatial(stats)


@MODELS.register("attention_fpn")
class AttentionFPN(nn.Module):
    """ResNet encoder + feature pyramid + attentive level fusion -> heatmaps.

    ``(B, in_channels, H, W) -> (B, out_channels, H/4, W/4)`` raw heatmaps; H, W multiples of 32.

    Args:
        in_channels, out_channels: image channels and heatmap channels.
        layers, base_width, block: encoder layout (see :class:`ResNetEncoder`).
        fpn_width: channels of every pyramid level and of the fused map.
        levels: how many pyramid levels are fused, from the finest (stride 4) up (1 to 4).
        reduction: squeeze-and-excitation reduction of the channel attention.
    """

    output_kind = "dense"
    output_stride = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layers: Sequence[int] = (2, 2, 2, 2),
        base_width: int = 16,
        block: str = "basic",
        fpn_width: int = 32,
        levels: int = 4,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        name = "attention_fpn"
        check_option(fpn_width >= 1, name, "fpn_width", f"must be >= 1, got {fpn_width}")
        check_option(1 <= levels <= 4, name, "levels", f"must be 1 to 4, got {levels}")
        check_option(reduction >= 1, name, "reduction", f"must be >= 1, got {reduction}")
        self.in_channels = in_channels
        self.encoder = ResNetEncoder(in_channels, layers, base_width, block)
        self.input_multiple: int = self.encoder.strides[-1]
        self.levels = levels
        self.laterals = nn.ModuleList(nn.Conv2d(c, fpn_width, kernel_size=1) for c in self.encoder.channels)
        self.smooth = nn.ModuleList(ConvBNReLU(fpn_width, fpn_width) for _ in range(levels))
        self.fusion = LevelAttentionFusion(fpn_width, levels, reduction)
        self.head = nn.Sequential(ConvBNReLU(fpn_width, fpn_width), nn.Conv2d(fpn_width, out_channels, kernel_size=1))
        init_weights(self)
        init_head(self.head[-1])

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ``levels`` finest pyramid levels ``P_i`` (B, fpn_width, H/s_i, W/s_i), finest first."""
        feats = self.encoder(x)
        top = self.laterals[-1](feats[-1])
        tops = [top]
        for lateral, c in zip(reversed(self.laterals[:-1]), reversed(feats[:-1])):
            top = lateral(c) + F.interpolate(top, size=c.shape[-2:], mode="nearest")
            tops.append(top)
        tops.reverse()  # finest first
        return [smooth(p) for smooth, p in zip(self.smooth, tops[: self.levels])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "attention_fpn")
        levels = self.pyramid(x)
        fused = self.fusion([resize_to(p, levels[0]) for p in levels])
        return self.head(fused)
