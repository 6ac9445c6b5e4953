"""Multi-head UNet (write-up 003, hypothesis 3): one shared encoder, one decoder per landmark pair.

Predicting the BPD and the OFD pair with one decoder may make the two tasks interfere; here a
shared UNet encoder (anatomical context) feeds separate UNet decoders, each with its own skip
connections and 1x1 head, and each predicting ``head_points`` consecutive output channels. With
the canonical point order ``[ofd_1, ofd_2, bpd_1, bpd_2]`` and ``head_points = 2`` that is one
decoder for the OFD pair and one for the BPD pair. Output at full resolution (``output_stride`` 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fetalbio.models.blocks import DoubleConv, UpConcat, check_input, check_option, init_head, init_weights
from fetalbio.registry import MODELS

__all__ = ["MultiHeadUNet"]


@MODELS.register("multihead_unet")
class MultiHeadUNet(nn.Module):
    """UNet encoder shared by ``ceil(out_channels / head_points)`` UNet decoders.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` raw heatmaps (the heads' channels
    concatenated in order); H, W multiples of ``2**depth``.

    Args:
        in_channels, out_channels: image channels and heatmap channels.
        base_width: channels of the first stage; stage ``i`` has ``base_width * 2**i`` (encoder
            and every decoder).
        depth: number of downsamplings.
        bilinear: bilinear upsampling + 1x1 conv instead of transposed convolutions.
        head_points: output channels per decoder (2: one decoder per landmark pair; the last
            decoder takes the remainder when ``out_channels`` is not a multiple).
    """

    output_kind = "dense"
    output_stride = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_width: int = 16,
        depth: int = 4,
        bilinear: bool = False,
        head_points: int = 2,
    ) -> None:
        super().__init__()
        name = "multihead_unet"
        check_option(depth >= 1, name, "depth", f"must be >= 1, got {depth}")
        check_option(base_width >= 1, name, "base_width", f"must be >= 1, got {base_width}")
        check_option(head_points >= 1, name, "head_points", f"must be >= 1, got {head_points}")
        self.in_channels = in_channels
        self.input_multiple: int = 2**depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(depth))
        n_heads = math.ceil(out_channels / head_points)
        sizes = [min(head_points, out_channels - j * head_points) for j in range(n_heads)]
        self.head_channels: tuple[int, ...] = tuple(sizes)
        self.decoders = nn.ModuleList(
            nn.ModuleList(UpConcat(widths[i + 1], widths[i], widths[i], bilinear) for i in reversed(range(depth)))
            for _ in sizes
        )
        self.heads = nn.ModuleList(nn.Conv2d(widths[0], n, kernel_size=1) for n in sizes)
        init_weights(self)
        for head in self.heads:
            init_head(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "multihead_unet")
        x = self.inc(x)
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        bottom = skips.pop()
        outs = []
        for ups, head in zip(self.decoders, self.heads):
            y = bottom
            for up, skip in zip(ups, reversed(skips)):
                y = up(y, skip)
            outs.append(head(y))
        return torch.cat(outs, dim=1)
