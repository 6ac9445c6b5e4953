"""Stacked hourglass network (Newell et al. 2016) for landmark heatmaps.

Stem to stride 4, ``stacks`` recursive hourglass modules with an intermediate heatmap head after
each, and re-injection of features and predictions into the next stack. ``output_stride`` 4.
In training mode with ``stacks > 1`` the forward returns every stack's heatmaps (deep
supervision); otherwise only the last.
"""

from __future__ import annotations

import torch
from torch import nn

from fetalbio.models import MODELS
from fetalbio.models.blocks import Bottleneck, ConvBNReLU, check_input, init_head, init_weights, resize_to

__all__ = ["Hourglass", "HourglassNet"]


def _residuals(ch: int, n: int) -> nn.Sequential:
    """``n`` hourglass residual units (bottleneck with ``ch // 2`` middle channels), shape-preserving."""
    return nn.Sequential(*(Bottleneck(ch, ch, mid_ch=max(1, ch // 2)) for _ in range(n)))


class Hourglass(nn.Module):
    """One recursive hourglass module of ``depth`` levels.

    ``(B, ch, H, W) -> (B, ch, H, W)``. Each level keeps a residual skip branch at its resolution
    and sends a max-pooled copy down (``ceil_mode``, so odd sizes are fine); the lower branch is
    upsampled (nearest) back to the skip's exact size and added.
    """

    def __init__(self, ch: int, depth: int, blocks: int = 1) -> None:
        super().__init__()
        self.skip = _residuals(ch, blocks)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.down = _residuals(ch, blocks)
        self.inner: nn.Module = Hourglass(ch, depth - 1, blocks) if depth > 1 else _residuals(ch, blocks)
        self.up = _residuals(ch, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(x)
        low = self.up(self.inner(self.down(self.pool(x))))
        return skip + resize_to(low, skip, mode="nearest")


@MODELS.register("hourglass")
class HourglassNet(nn.Module):
    """Stacked hourglass heatmap network.

    ``(B, in_channels, H, W) -> (B, out_channels, H/4, W/4)`` raw heatmaps; H, W multiples of 4.
    In training mode with ``stacks > 1`` returns ``list`` of ``stacks`` such tensors (last =
    final); in eval mode, or with one stack, returns the final tensor.

    Args:
        in_channels, out_channels: image channels and heatmap channels.
        stacks: number of stacked hourglasses.
        depth: levels per hourglass (its bottom is at stride ``4 * 2**depth``).
        width: channels throughout the hourglasses.
        blocks: residual units per hourglass branch.
    """

    output_kind = "dense"
    output_stride = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stacks: int = 1,
        depth: int = 4,
        width: int = 64,
        blocks: int = 1,
    ) -> None:
        super().__init__()
        if stacks < 1 or depth < 1 or blocks < 1:
            raise ValueError(f"hourglass: stacks, depth and blocks must be >= 1, got {stacks}, {depth}, {blocks}")
        self.in_channels = in_channels
        self.stacks = stacks
        self.input_multiple: int = 4
        half = max(1, width // 2)
        # stride 2 conv -> residual -> maxpool (stride 4) -> residuals
        self.stem = nn.Sequential(
            ConvBNReLU(in_channels, half, kernel_size=7, stride=2),
            Bottleneck(half, half, mid_ch=max(1, half // 2)),
            nn.MaxPool2d(2),
            Bottleneck(half, width, mid_ch=half),
            _residuals(width, 1),
        )
        self.hourglasses = nn.ModuleList(Hourglass(width, depth, blocks) for _ in range(stacks))
        self.features = nn.ModuleList(
            nn.Sequential(_residuals(width, blocks), ConvBNReLU(width, width, kernel_size=1)) for _ in range(stacks)
        )
        self.heads = nn.ModuleList(nn.Conv2d(width, out_channels, kernel_size=1) for _ in range(stacks))
        # re-injection of the features and of the predictions into the next stack
        self.merge_features = nn.ModuleList(nn.Conv2d(width, width, kernel_size=1) for _ in range(stacks - 1))
        self.merge_preds = nn.ModuleList(nn.Conv2d(out_channels, width, kernel_size=1) for _ in range(stacks - 1))
        init_weights(self)
        for head in self.heads:
            init_head(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(x, self.in_channels, self.input_multiple, "hourglass")
        x = self.stem(x)  # (B, width, H/4, W/4)
        preds: list[torch.Tensor] = []
        for i in range(self.stacks):
            y = self.features[i](self.hourglasses[i](x))
            pred = self.heads[i](y)
            preds.append(pred)
            if i < self.stacks - 1:
                x = x + self.merge_features[i](y) + self.merge_preds[i](pred)
        if self.training and self.stacks > 1:
            return preds
        return preds[-1]
