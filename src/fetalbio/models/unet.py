"""UNet (Ronneberger et al. 2015), used for landmark heatmaps and for segmentation.

``depth`` x (maxpool + :class:`DoubleConv`) encoder, widths ``base_width * 2**i``, mirrored
decoder of :class:`UpConcat` steps with skip connections, 1x1 conv head at full resolution
(``output_stride`` 1).
"""

from __future__ import annotations

import torch
from torch import nn

from fetalbio.models.blocks import DoubleConv, UpConcat, check_input, init_head, init_weights
from fetalbio.registry import MODELS

__all__ = ["UNet"]


@MODELS.register("unet")
class UNet(nn.Module):
    """Classic UNet.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` raw logits / heatmaps;
    H, W multiples of ``2**depth``.

    Args:
        in_channels, out_channels: image channels and output channels.
        base_width: channels of the first stage; stage ``i`` has ``base_width * 2**i``.
        depth: number of downsamplings (the bottleneck is at stride ``2**depth``).
        bilinear: upsample with bilinear interpolation + 1x1 conv instead of the classic 2x2
            transposed convolution.
    """

    output_kind = "dense"
    output_stride = 1
    name = "unet"

    def __init__(self, in_channels: int, out_channels: int, base_width: int = 16, depth: int = 4, bilinear: bool = False) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"{self.name}: depth must be >= 1, got {depth}")
        self.in_channels = in_channels
        self.input_multiple: int = 2**depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(depth))
        self.ups = nn.ModuleList(self._make_up(widths[i + 1], widths[i], widths[i], bilinear) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        init_weights(self)
        init_head(self.head)

    def _make_up(self, in_ch: int, skip_ch: int, out_ch: int, bilinear: bool) -> nn.Module:
        """One decoder step ``(x (B, in_ch, h, w), skip (B, skip_ch, 2h, 2w)) -> (B, out_ch, 2h, 2w)``."""
        return UpConcat(in_ch, skip_ch, out_ch, bilinear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, self.name)
        x = self.inc(x)
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
