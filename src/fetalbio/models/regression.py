"""Direct coordinate regression on the write-ups' other backbones (``output_kind`` ``"vector"``).

* ``alexnet_regression`` -- :class:`AlexNetRegression`, an AlexNet-style network (write-up 004):
  five convolutions (11x11 stride 4, 5x5, three 3x3) with three max-pools, then fully connected
  layers on a pooled feature grid;
* ``efficientnet_regression`` -- :class:`EfficientNetRegression`, an EfficientNet-style MBConv
  backbone (write-up 000, approach 2: EfficientNet + fully connected layers), the B0 stage table
  scaled by ``width_mult`` / ``depth_mult``.

ResNet-18 / ResNet-34 regression (write-up 004) is ``coord_regression`` with ``layers`` ``(2, 2,
2, 2)`` / ``(3, 4, 6, 3)`` (:mod:`fetalbio.models.resnet`). Every model here ends in
:class:`~fetalbio.models.blocks.RegressionHead`: ``(B, in_channels, H, W) -> (B, out_channels,
2)`` normalised ``(x, y)`` in [0, 1], starting near (0.5, 0.5); H, W multiples of 32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fetalbio.models.blocks import RegressionHead, check_input, check_option, init_head, init_weights, pool_grid
from fetalbio.registry import MODELS

__all__ = ["AlexNetRegression", "EfficientNetRegression", "MBConv", "SqueezeExcite"]


def _check_head(name: str, hidden: int, dropout: float) -> None:
    check_option(hidden >= 0, name, "hidden", f"must be >= 0, got {hidden}")
    check_option(0.0 <= dropout < 1.0, name, "dropout", f"must be in [0, 1), got {dropout}")


@MODELS.register("alexnet_regression")
class AlexNetRegression(nn.Module):
    """AlexNet-style coordinate regression (Krizhevsky et al. 2012, without LRN).

    Features: ``conv11x11/4 -> maxpool3/2 -> conv5x5 -> maxpool3/2 -> conv3x3 x3 -> maxpool3/2``
    (stride 32; each conv followed by BatchNorm when ``batch_norm`` -- training from scratch on a
    few hundred images -- and ReLU). Classifier: adaptive average pooling to ``pool`` (AlexNet
    pools to 6x6), ``Dropout -> Linear(hidden) -> ReLU -> Dropout -> Linear(hidden) -> ReLU ->
    Linear(2 K) -> sigmoid``.

    Args:
        in_channels, out_channels: image channels and number of points.
        conv_widths: channels of the five convolutions (AlexNet: 64, 192, 384, 256, 256).
        batch_norm: BatchNorm after every convolution.
        pool: ``(H, W)`` grid of the pooled features (3x4 is the stride-32 grid of 96x128).
        hidden: width of the two fully connected hidden layers (AlexNet: 4096).
        dropout: dropout before each of the two hidden layers (AlexNet: 0.5).
    """

    output_kind = "vector"
    output_stride = 1
    input_multiple = 32

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        conv_widths: Sequence[int] = (16, 48, 96, 64, 64),
        batch_norm: bool = True,
        pool: Sequence[int] = (3, 4),
        hidden: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        name = "alexnet_regression"
        widths = tuple(conv_widths)
        check_option(len(widths) == 5 and all(isinstance(w, int) and w >= 1 for w in widths), name, "conv_widths",
                     f"must be 5 positive ints, got {conv_widths}")
        check_option(hidden >= 1, name, "hidden", f"must be >= 1, got {hidden}")
        _check_head(name, hidden, dropout)
        grid = pool_grid(pool, name)
        self.in_channels = in_channels
        self.out_channels = out_channels

        def conv(i: int, o: int, k: int, s: int = 1) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(i, o, k, stride=s, padding=k // 2, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(o))
            return [*layers, nn.ReLU()]

        def pool3() -> nn.Module:
            return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            *conv(in_channels, c1, 11, 4), pool3(),
            *conv(c1, c2, 5), pool3(),
            *conv(c2, c3, 3), *conv(c3, c4, 3), *conv(c4, c5, 3), pool3(),
        )
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(c5 * grid[0] * grid[1], hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, out_channels * 2),
        )
        init_weights(self)
        init_head(self.classifier[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "alexnet_regression")
        z = self.classifier(self.pool(self.features(x)))
        return torch.sigmoid(z.view(x.shape[0], self.out_channels, 2))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 silu(W1 avgpool(x))))``, ``(B, C, H, W)`` kept."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, squeezed, kernel_size=1),
            nn.SiLU(),
            nn.Conv2d(squeezed, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def _conv_bn_act(i: int, o: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(i, o, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(o)]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018; Tan & Le 2019) with squeeze-excitation.

    ``1x1 expand (x expand, if > 1) -> kxk depthwise (stride) -> SE -> 1x1 project (no act)``,
    BatchNorm + SiLU after the first two; identity skip (with stochastic depth ``drop_path``
    in training) when ``stride == 1`` and the channels match.
    ``(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int, se_ratio: float, drop_path: float) -> None:
        super().__init__()
        mid = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_act(in_ch, mid, 1))
        layers.append(_conv_bn_act(mid, mid, kernel, stride=stride, groups=mid))
        if se_ratio > 0:
            layers.append(SqueezeExcite(mid, max(1, int(in_ch * se_ratio))))
        layers.append(_conv_bn_act(mid, out_ch, 1, act=False))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if not self.residual:
            return y
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(x.shape[0], 1, 1, 1, dtype=y.dtype, device=y.device) < keep
            y = y * mask / keep
        return x + y


# EfficientNet-B0 stages: (expand ratio, kernel, stride, output channels, repeats)
_B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def _round_width(channels: float, mult: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: ``channels * mult`` to a multiple of ``divisor`` (not
    below 90 % of it, and at least ``divisor``)."""
    c = channels * mult
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return int(new)


@MODELS.register("efficientnet_regression")
class EfficientNetRegression(nn.Module):
    """EfficientNet-style MBConv backbone + fully connected coordinate head.

    Stem ``3x3 conv stride 2`` (32 x ``width_mult`` channels), the seven MBConv stages of
    EfficientNet-B0 (strides to 32) with their channels scaled by ``width_mult`` (rounded to
    multiples of 8) and their repeats by ``depth_mult`` (rounded up), a 1x1 conv to 1280 x
    ``width_mult`` channels, then :class:`RegressionHead` (global average pooling by default,
    MLP, sigmoid). ``width_mult 1.2, depth_mult 1.4`` is the B3 layout (B3's 300-pixel input is
    not implied); the small defaults keep it CPU-friendly. Stochastic depth grows linearly to
    ``drop_path`` over the blocks.

    Args:
        in_channels, out_channels: image channels and number of points.
        width_mult: channel multiplier of the B0 table.
        depth_mult: block-repeat multiplier of the B0 table.
        se_ratio: squeeze-excitation width / block input width (0 = no SE).
        drop_path: stochastic-depth rate of the last block.
        pool: ``(H, W)`` pooled grid of the head (``(1, 1)``: global average pooling).
        hidden: width of the head's hidden layer (0 = one linear layer).
        dropout: dropout before the last linear layer (B0: 0.2).
    """

    output_kind = "vector"
    output_stride = 1
    input_multiple = 32

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width_mult: float = 0.25,
        depth_mult: float = 0.5,
        se_ratio: float = 0.25,
        drop_path: float = 0.0,
        pool: Sequence[int] = (1, 1),
        hidden: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        name = "efficientnet_regression"
        check_option(width_mult > 0, name, "width_mult", f"must be > 0, got {width_mult}")
        check_option(depth_mult > 0, name, "depth_mult", f"must be > 0, got {depth_mult}")
        check_option(0.0 <= se_ratio <= 1.0, name, "se_ratio", f"must be in [0, 1], got {se_ratio}")
        check_option(0.0 <= drop_path < 1.0, name, "drop_path", f"must be in [0, 1), got {drop_path}")
        _check_head(name, hidden, dropout)
        grid = pool_grid(pool, name)
        self.in_channels = in_channels
        stem = _round_width(32, width_mult)
        self.stem = _conv_bn_act(in_channels, stem, 3, stride=2)
        plan = []
        ch = stem
        for expand, kernel, stride, out, repeats in _B0_STAGES:
            out_ch = _round_width(out, width_mult)
            for r in range(int(math.ceil(repeats * depth_mult))):
                plan.append((ch, out_ch, expand, kernel, stride if r == 0 else 1))
                ch = out_ch
        n = len(plan)
        self.blocks = nn.Sequential(*(MBConv(i, o, e, k, s, se_ratio, drop_path * b / max(1, n - 1)) for b, (i, o, e, k, s) in enumerate(plan)))
        head_ch = _round_width(1280, width_mult)
        self.top = _conv_bn_act(ch, head_ch, 1)
        self.head = RegressionHead(head_ch, out_channels, grid, hidden, dropout)
        init_weights(self)
        init_head(self.head.mlp[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "efficientnet_regression")
        return self.head(self.top(self.blocks(self.stem(x))))
