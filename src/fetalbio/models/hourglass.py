"""Stacked hourglass network (Newell et al. 2016) for landmark heatmaps.

Stem to stride 4, ``stacks`` recursive hourglass modules with an intermediate heatmap head after
each, and re-injection of features and predictions into the next stack. ``output_stride`` 4.
In training mode with ``stacks > 1`` the forward returns every stack's heatmaps (deep
supervision); otherwise only the last. ``hybrid_hourglass`` adds a coordinate-regression head
on the same features (:class:`HybridHourglass`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fetalbio.models.blocks import Bottleneck, ConvBNReLU, RegressionHead, check_input, check_option, init_head, init_weights, pool_grid, resize_to
from fetalbio.registry import MODELS

__all__ = ["Hourglass", "HourglassNet", "HybridHourglass"]


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

    def __init__(self, in_channels: int, out_channels: int, stacks: int = 1, depth: int = 4, width: int = 64, blocks: int = 1) -> None:
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
        self.features = nn.ModuleList(nn.Sequential(_residuals(width, blocks), ConvBNReLU(width, width, kernel_size=1)) for _ in range(stacks))
        self.heads = nn.ModuleList(nn.Conv2d(width, out_channels, kernel_size=1) for _ in range(stacks))
        # re-injection of the features and of the predictions into the next stack
        self.merge_features = nn.ModuleList(nn.Conv2d(width, width, kernel_size=1) for _ in range(stacks - 1))
        self.merge_preds = nn.ModuleList(nn.Conv2d(out_channels, width, kernel_size=1) for _ in range(stacks - 1))
        init_weights(self)
        for head in self.heads:
            init_head(head)

    def _run_stacks(self, x: torch.Tensor, name: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every stack's heatmaps and the last stack's features ``(B, width, H/4, W/4)``."""
        check_input(x, self.in_channels, self.input_multiple, name)
        x = self.stem(x)  # (B, width, H/4, W/4)
        preds: list[torch.Tensor] = []
        y = x
        for i in range(self.stacks):
            y = self.features[i](self.hourglasses[i](x))
            pred = self.heads[i](y)
            preds.append(pred)
            if i < self.stacks - 1:
                x = x + self.merge_features[i](y) + self.merge_preds[i](pred)
        return preds, y

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        preds, _ = self._run_stacks(x, "hourglass")
        if self.training and self.stacks > 1:
            return preds
        return preds[-1]


@MODELS.register("hybrid_hourglass")
class HybridHourglass(HourglassNet):
    """Hourglass with a heatmap head *and* a coordinate-regression head (write-up 001, B).

    The last stack's features feed both the heatmap head of :class:`HourglassNet` and a
    regression branch: ``reduce_convs`` stride-2 3x3 :class:`ConvBNReLU` -> adaptive average
    pooling to a ``pool`` grid -> MLP -> sigmoid, giving normalised ``(x, y)`` per point as
    ``coord_regression`` does.

    ``output_kind`` is ``"hybrid"``: the forward returns a ``list`` ``[*heatmaps, coords]`` --
    in training mode with ``stacks > 1`` every stack's heatmaps ``(B, K, H/4, W/4)`` (deep
    supervision, last = final), otherwise only the final heatmaps -- followed by the coordinates
    ``(B, K, 2)``. The ``hybrid`` codec decodes the pair (heatmap, regression or their average).

    Args:
        in_channels, out_channels, stacks, depth, width, blocks: as :class:`HourglassNet`.
        reduce_convs: stride-2 convolutions before pooling (the branch reads stride ``4 * 2**n``).
        pool: ``(H, W)`` grid of the pooled features (keeps the coarse position of the head).
        hidden: width of the MLP hidden layer (0 = one linear layer).
        dropout: dropout before the last linear layer.
    """

    output_kind = "hybrid"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stacks: int = 1,
        depth: int = 4,
        width: int = 64,
        blocks: int = 1,
        reduce_convs: int = 2,
        pool: Sequence[int] = (3, 4),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, out_channels, stacks, depth, width, blocks)
        name = "hybrid_hourglass"
        check_option(0 <= reduce_convs <= 3, name, "reduce_convs", f"must be 0 to 3, got {reduce_convs}")
        check_option(hidden >= 0, name, "hidden", f"must be >= 0, got {hidden}")
        check_option(0.0 <= dropout < 1.0, name, "dropout", f"must be in [0, 1), got {dropout}")
        grid = pool_grid(pool, name)
        self.reduce = nn.Sequential(*(ConvBNReLU(width, width, stride=2) for _ in range(reduce_convs)))
        self.coord_head = RegressionHead(width, out_channels, grid, hidden, dropout)
        init_weights(self.reduce)
        init_weights(self.coord_head)
        init_head(self.coord_head.mlp[-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        preds, y = self._run_stacks(x, "hybrid_hourglass")
        coords = self.coord_head(self.reduce(y))
        heatmaps = preds if self.training and self.stacks > 1 else preds[-1:]
        return [*heatmaps, coords]
