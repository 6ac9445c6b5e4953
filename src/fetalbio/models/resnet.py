"""ResNet-style encoder and the two models built directly on it.

* :class:`ResNetEncoder` -- the one ResNet backbone of the package (also used by
  :mod:`fetalbio.models.deeplab`), with optional atrous (dilated) last stages;
* ``resnet_deconv`` -- :class:`ResNetDeconv`, SimpleBaseline (Xiao et al. 2018): encoder to stride
  32, three 4x4 stride-2 transposed convolutions, a final 1x1 conv; output stride 4;
* ``coord_regression`` -- :class:`CoordRegression`, encoder + global average pooling + MLP,
  sigmoid-normalised ``(x, y)`` per point.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fetalbio.models.blocks import BasicBlock, Bottleneck, ConvBNReLU, check_input, init_head, init_weights
from fetalbio.registry import MODELS

__all__ = ["CoordRegression", "ResNetDeconv", "ResNetEncoder"]

_BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetEncoder(nn.Module):
    """ResNet backbone returning the four stage features.

    Stem: ``conv7x7 s2 -> BN -> ReLU -> maxpool3x3 s2`` (stride 4, ``base_width`` channels),
    then four stages of ``layers[i]`` residual blocks with ``base_width * 2**i * expansion``
    output channels and strides 4, 8, 16, 32.

    ``replace_stride_with_dilation`` (three booleans, for stages 2-4, as in torchvision) keeps the
    resolution of a stage and dilates its convolutions instead, e.g. ``(False, False, True)`` gives
    an output stride of 16 and ``(False, True, True)`` of 8 (DeepLab).

    Forward: ``(B, in_channels, H, W) -> [c1, c2, c3, c4]`` with ``c_i`` of shape
    ``(B, channels[i], H / strides[i], W / strides[i])``.

    Attributes:
        channels: output channels of the four stages.
        strides: output strides of the four stages.
    """

    def __init__(
        self,
        in_channels: int,
        layers: Sequence[int] = (2, 2, 2, 2),
        base_width: int = 16,
        block: str = "basic",
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    ) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"ResNetEncoder: layers must be 4 positive block counts, got {layers}")
        if block not in _BLOCKS:
            raise ValueError(f"ResNetEncoder: block must be one of {sorted(_BLOCKS)}, got {block!r}")
        dil_flags = tuple(bool(f) for f in replace_stride_with_dilation)
        if len(dil_flags) != 3:
            raise ValueError(f"ResNetEncoder: replace_stride_with_dilation needs 3 booleans, got {dil_flags}")
        block_cls = _BLOCKS[block]
        expansion: int = block_cls.expansion  # type: ignore[attr-defined]

        self.stem = nn.Sequential(ConvBNReLU(in_channels, base_width, kernel_size=7, stride=2), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        in_ch, stride, dilation = base_width, 4, 1
        channels, strides = [], []
        stages = []
        for i, n_blocks in enumerate(layers):
            out_ch = base_width * 2**i * expansion
            block_stride = 1 if i == 0 else 2
            prev_dilation = dilation
            if i > 0 and dil_flags[i - 1]:
                dilation *= block_stride
                block_stride = 1
            stride *= block_stride
            blocks = [block_cls(in_ch, out_ch, stride=block_stride, dilation=prev_dilation)]
            blocks += [block_cls(out_ch, out_ch, dilation=dilation) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
            channels.append(out_ch)
            strides.append(stride)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels: tuple[int, ...] = tuple(channels)
        self.strides: tuple[int, ...] = tuple(strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]


@MODELS.register("resnet_deconv")
class ResNetDeconv(nn.Module):
    """SimpleBaseline heatmap network (Xiao et al. 2018).

    ``(B, in_channels, H, W) -> (B, out_channels, H/4, W/4)`` raw heatmaps; H, W multiples of 32.

    Encoder (:class:`ResNetEncoder`) to stride 32, then ``len(deconv_widths)`` (default 3)
    ``ConvTranspose2d(4x4, stride 2) -> BN -> ReLU`` layers, then a 1x1 conv head (initialised
    near 0).

    Args:
        in_channels, out_channels: image channels and heatmap channels.
        layers: residual blocks per encoder stage (``(2, 2, 2, 2)`` = ResNet-18 layout).
        base_width: encoder stem width (stages have 1x, 2x, 4x, 8x this, times block expansion).
        block: ``"basic"`` or ``"bottleneck"``.
        deconv_widths: channels of each deconvolution layer (3 layers -> output stride 4).
    """

    output_kind = "dense"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layers: Sequence[int] = (2, 2, 2, 2),
        base_width: int = 16,
        block: str = "basic",
        deconv_widths: Sequence[int] = (64, 64, 64),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = ResNetEncoder(in_channels, layers, base_width, block)
        deconv_widths = tuple(int(c) for c in deconv_widths)
        if not 1 <= len(deconv_widths) <= 5:
            raise ValueError(f"resnet_deconv: deconv_widths needs 1 to 5 layers, got {deconv_widths}")
        ups: list[nn.Module] = []
        ch = self.encoder.channels[-1]
        for width in deconv_widths:
            ups += [nn.ConvTranspose2d(ch, width, kernel_size=4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            ch = width
        self.deconv = nn.Sequential(*ups)
        self.head = nn.Conv2d(ch, out_channels, kernel_size=1)
        self.output_stride: int = self.encoder.strides[-1] // 2 ** len(deconv_widths)
        self.input_multiple: int = self.encoder.strides[-1]
        init_weights(self)
        init_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "resnet_deconv")
        return self.head(self.deconv(self.encoder(x)[-1]))


@MODELS.register("coord_regression")
class CoordRegression(nn.Module):
    """Direct coordinate regression: ResNet encoder -> global average pool -> MLP -> sigmoid.

    ``(B, in_channels, H, W) -> (B, out_channels, 2)``: one normalised ``(x, y)`` per point, x
    first, each in [0, 1] (fractions of the input width and height). H, W multiples of 32 (so the
    stride-32 feature grid tiles the image exactly). ``output_stride`` is 1 (not meaningful for
    vector outputs). The last layer is initialised near 0, so initial predictions are ~(0.5, 0.5).

    Args:
        in_channels, out_channels: image channels and number of points.
        layers, base_width, block: encoder layout (see :class:`ResNetEncoder`).
        hidden: width of the MLP hidden layer (0 = a single linear layer).
        dropout: dropout before the last linear layer.
    """

    output_kind = "vector"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layers: Sequence[int] = (2, 2, 2, 2),
        base_width: int = 16,
        block: str = "basic",
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.encoder = ResNetEncoder(in_channels, layers, base_width, block)
        self.pool = nn.AdaptiveAvgPool2d(1)
        feat = self.encoder.channels[-1]
        mlp: list[nn.Module] = [nn.Flatten()]
        if hidden > 0:
            mlp += [nn.Linear(feat, hidden), nn.ReLU()]
            feat = hidden
        mlp += [nn.Dropout(dropout), nn.Linear(feat, out_channels * 2)]
        self.mlp = nn.Sequential(*mlp)
        self.output_stride: int = 1
        self.input_multiple: int = self.encoder.strides[-1]
        init_weights(self)
        init_head(self.mlp[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "coord_regression")
        z = self.mlp(self.pool(self.encoder(x)[-1]))
        return torch.sigmoid(z.view(x.shape[0], self.out_channels, 2))
