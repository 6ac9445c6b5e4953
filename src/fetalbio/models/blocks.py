"""Shared building blocks for the fetalbio networks.

Everything here is plain ``torch``. Shapes use ``B`` for batch, ``C`` for channels and
``H, W`` for the spatial size of the tensor *entering* the block.

* :class:`ConvBNReLU` -- conv (no bias) + BatchNorm + optional ReLU;
* :class:`DoubleConv` -- two :class:`ConvBNReLU` 3x3 (the UNet unit);
* :class:`BasicBlock` / :class:`Bottleneck` -- residual blocks (He et al. 2016) with an
  automatic 1x1 projection shortcut when the shape changes;
* :class:`UpConcat` -- x2 upsampling (bilinear + 1x1 or transposed conv) then concatenation with
  a skip feature and a :class:`DoubleConv`;
* :class:`RegressionHead` -- pooled features -> MLP -> sigmoid-normalised ``(x, y)`` per point;
* :func:`init_weights`, :func:`init_head` -- weight initialisation;
* :func:`check_input` -- the clear input-shape error every model raises;
* :func:`check_option` -- the clear arch-option error (names the model and the option).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvBNReLU",
    "DoubleConv",
    "RegressionHead",
    "UpConcat",
    "check_input",
    "check_option",
    "init_head",
    "init_weights",
    "resize_to",
]


class ConvBNReLU(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` ('same' padding for odd kernels).

    Shape: ``(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)``.

    Args:
        in_ch, out_ch: channels.
        kernel_size: square kernel size (odd).
        stride: convolution stride.
        dilation: convolution dilation (padding is scaled so the size only depends on stride).
        relu: append a ReLU (``False`` gives conv + BN only, e.g. before a residual sum).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1, relu: bool = True) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 :class:`ConvBNReLU` (the UNet stage). ``(B, in_ch, H, W) -> (B, out_ch, H, W)``."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None) -> None:
        mid_ch = out_ch if mid_ch is None else mid_ch
        super().__init__(ConvBNReLU(in_ch, mid_ch), ConvBNReLU(mid_ch, out_ch))


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Identity when shapes match, else ``1x1 conv (stride) -> BN`` projection."""
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    return ConvBNReLU(in_ch, out_ch, kernel_size=1, stride=stride, relu=False)


class BasicBlock(nn.Module):
    """ResNet basic residual block: ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``.

    Shape: ``(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)``.
    The projection shortcut is added automatically when ``in_ch != out_ch`` or ``stride != 1``.
    ``dilation`` applies to both 3x3 convs (atrous ResNet stages).
    """

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_ch, out_ch, 3, stride=stride, dilation=dilation)
        self.conv2 = ConvBNReLU(out_ch, out_ch, 3, dilation=dilation, relu=False)
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """Bottleneck residual block: ``1x1 (mid) -> 3x3 (mid, stride, dilation) -> 1x1 (out)`` + shortcut.

    Shape: ``(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)``.

    ``mid_ch`` defaults to ``out_ch // expansion`` (ResNet-50 convention, ``expansion = 4``);
    the hourglass passes ``mid_ch = out_ch // 2`` as in Newell et al. The projection shortcut is
    added automatically when the shape changes.
    """

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, mid_ch: int | None = None) -> None:
        super().__init__()
        mid_ch = max(1, out_ch // self.expansion) if mid_ch is None else mid_ch
        self.conv1 = ConvBNReLU(in_ch, mid_ch, 1)
        self.conv2 = ConvBNReLU(mid_ch, mid_ch, 3, stride=stride, dilation=dilation)
        self.conv3 = ConvBNReLU(mid_ch, out_ch, 1, relu=False)
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


def resize_to(x: torch.Tensor, ref: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resize ``x`` (B, C, h, w) to the spatial size of ``ref`` (B, *, H, W); no-op if equal."""
    size = ref.shape[-2:]
    if x.shape[-2:] == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class UpConcat(nn.Module):
    """Decoder step: upsample x2, concatenate the skip feature, :class:`DoubleConv`.

    Shapes: ``x`` (B, in_ch, H, W) and ``skip`` (B, skip_ch, 2H, 2W) -> (B, out_ch, 2H, 2W).

    Upsampling is either ``ConvTranspose2d(in_ch, skip_ch, 2, stride 2)`` (classic UNet) or, with
    ``bilinear=True``, bilinear interpolation followed by a 1x1 :class:`ConvBNReLU` to ``skip_ch``
    (no checkerboard artefacts). The upsampled tensor is resized to the skip's size if they differ.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, bilinear: bool = False) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                ConvBNReLU(in_ch, skip_ch, kernel_size=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_ch, skip_ch, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = resize_to(self.up(x), skip)
        return self.conv(torch.cat([skip, x], dim=1))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) for (transposed) convs, unit/zero BatchNorm, small Linear.

    Call on a whole model (it recurses); re-initialise output heads afterwards with
    :func:`init_head`.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_head(layer: nn.Module, std: float = 1e-3, bias: float = 0.0) -> None:
    """Initialise an output layer so that the initial outputs are ~``bias`` (near 0 by default).

    Weights ~ N(0, std), bias constant. Used for heatmap/logit 1x1 convs and regression heads.
    """
    nn.init.normal_(layer.weight, mean=0.0, std=std)
    if getattr(layer, "bias", None) is not None:
        nn.init.constant_(layer.bias, bias)


def check_input(x: torch.Tensor, in_channels: int, multiple: int, model: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with H, W multiples of ``multiple``."""
    if x.dim() != 4:
        raise ValueError(f"{model}: expected a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if c != in_channels:
        raise ValueError(f"{model}: expected {in_channels} input channel(s), got {c} (shape {tuple(x.shape)})")
    if h % multiple or w % multiple:
        raise ValueError(
            f"{model}: input height and width must be multiples of {multiple}, got H={h}, W={w}; "
            "resize or pad the images (e.g. to a multiple of 32)"
        )


def check_option(ok: bool, model: str, option: str, message: str) -> None:
    """Raise ``ValueError("<model>: arch option <option> ...")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{model}: arch option {option!r} {message}")


def pool_grid(pool, model: str, option: str = "pool") -> tuple[int, int]:
    """``pool`` as an ``(H, W)`` pair of positive ints (a single int means a square grid)."""
    grid = (pool, pool) if isinstance(pool, int) else tuple(pool)
    check_option(
        len(grid) == 2 and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid),
        model, option, f"must be a positive int or an (H, W) pair of positive ints, got {pool!r}",
    )
    return int(grid[0]), int(grid[1])


class RegressionHead(nn.Module):
    """Coordinate head: ``AdaptiveAvgPool2d(pool) -> flatten -> [Linear(hidden) -> ReLU] ->
    Dropout -> Linear(2 K) -> sigmoid``.

    ``(B, in_ch, h, w) -> (B, points, 2)`` normalised ``(x, y)`` in [0, 1], x first. ``pool``
    ``(1, 1)`` is global average pooling; a larger grid keeps the coarse layout of the features
    (where the head is), as AlexNet's pooled 6x6 grid does. The last layer is initialised near
    0, so the initial points are ~(0.5, 0.5).
    """

    def __init__(self, in_ch: int, points: int, pool: tuple[int, int] = (1, 1), hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.points = points
        feat = in_ch * pool[0] * pool[1]
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(pool), nn.Flatten()]
        if hidden > 0:
            layers += [nn.Linear(feat, hidden), nn.ReLU()]
            feat = hidden
        layers += [nn.Dropout(dropout), nn.Linear(feat, points * 2)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x).view(x.shape[0], self.points, 2))
