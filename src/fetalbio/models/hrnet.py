"""A small HRNet (Sun et al. 2019) for landmark heatmaps / segmentation.

Stem to stride 4, then three stages that keep parallel branches at strides 4, 8 and 16
(stage 1: {4}, stage 2: {4, 8}, stage 3: {4, 8, 16}). Each stage is a sequence of HR modules:
residual blocks on every branch followed by a multi-resolution fusion in which every output
branch sums all input branches (upsampled after a 1x1 conv, or downsampled with strided 3x3
convs). The head reads the stride-4 branch: ``output_stride`` 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fetalbio.models.blocks import BasicBlock, ConvBNReLU, check_input, init_head, init_weights, resize_to
from fetalbio.registry import MODELS

__all__ = ["FuseLayer", "HRModule", "HRNetLite"]


class FuseLayer(nn.Module):
    """Multi-resolution fusion (exchange unit).

    Inputs: a list of ``n`` tensors, branch ``j`` of shape (B, widths[j], H/2**j, W/2**j).
    Output ``i`` = ``relu(sum_j f_ij(x_j))`` with ``f_ii`` identity, ``f_ij`` for ``j > i``
    ``1x1 conv -> BN -> bilinear upsample``, and for ``j < i`` ``i - j`` stride-2 3x3 convs
    (BN, ReLU between them, the last without ReLU). Returns ``n`` tensors of the input shapes,
    or only the highest-resolution one (a 1-list) when ``multi_scale_output`` is False.
    """

    def __init__(self, widths: Sequence[int], multi_scale_output: bool = True) -> None:
        super().__init__()
        n = len(widths)
        self.paths = nn.ModuleList()
        for i in range(n if multi_scale_output else 1):
            row = nn.ModuleList()
            for j in range(n):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(ConvBNReLU(widths[j], widths[i], kernel_size=1, relu=False))
                else:
                    convs: list[nn.Module] = [ConvBNReLU(widths[j], widths[j], stride=2) for _ in range(i - j - 1)]
                    convs.append(ConvBNReLU(widths[j], widths[i], stride=2, relu=False))
                    row.append(nn.Sequential(*convs))
            self.paths.append(row)
        self.relu = nn.ReLU()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i, row in enumerate(self.paths):
            total = xs[i]
            for j, path in enumerate(row):
                if j != i:
                    total = total + resize_to(path(xs[j]), xs[i])
            outs.append(self.relu(total))
        return outs


class HRModule(nn.Module):
    """``blocks`` :class:`BasicBlock` per branch, then a :class:`FuseLayer` (if >1 branch).

    Maps a list of branch tensors to a list of the same shapes (only the first one when
    ``multi_scale_output`` is False: the network's last module, whose other outputs are unused).
    """

    def __init__(self, widths: Sequence[int], blocks: int, multi_scale_output: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*(BasicBlock(w, w) for _ in range(blocks))) for w in widths)
        self.fuse: nn.Module | None = FuseLayer(widths, multi_scale_output) if len(widths) > 1 else None

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        return self.fuse(xs) if self.fuse is not None else xs


@MODELS.register("hrnet_lite")
class HRNetLite(nn.Module):
    """Three-stage, three-branch HRNet.

    ``(B, in_channels, H, W) -> (B, out_channels, H/4, W/4)`` raw heatmaps / logits;
    H, W multiples of 16.

    Args:
        in_channels, out_channels: image channels and output channels.
        widths: channels of the stride-4, -8 and -16 branches.
        stem_width: channels of the two stride-2 stem convs.
        blocks: residual blocks per branch in every HR module.
        modules: number of HR modules (each ending in a fusion) in stages 1, 2 and 3.
    """

    output_kind = "dense"
    output_stride = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int] = (16, 32, 64),
        stem_width: int = 32,
        blocks: int = 2,
        modules: Sequence[int] = (1, 1, 2),
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        modules = tuple(int(m) for m in modules)
        if len(widths) != 3 or len(modules) != 3 or min(modules) < 1 or blocks < 1:
            raise ValueError(
                f"hrnet_lite: widths and modules need 3 entries (modules >= 1), blocks >= 1; "
                f"got widths={widths}, modules={modules}, blocks={blocks}"
            )
        self.in_channels = in_channels
        self.input_multiple: int = 16
        self.stem = nn.Sequential(
            ConvBNReLU(in_channels, stem_width, stride=2),
            ConvBNReLU(stem_width, stem_width, stride=2),
            BasicBlock(stem_width, widths[0]),
        )
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()  # new lower-resolution branch before stages 2 and 3
        for s in range(3):
            if s > 0:
                self.transitions.append(ConvBNReLU(widths[s - 1], widths[s], stride=2))
            self.stages.append(
                nn.Sequential(
                    *(
                        HRModule(widths[: s + 1], blocks, multi_scale_output=(s < 2 or m < modules[s] - 1))
                        for m in range(modules[s])
                    )
                )
            )
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        init_weights(self)
        init_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "hrnet_lite")
        xs = [self.stem(x)]  # [(B, widths[0], H/4, W/4)]
        for s, stage in enumerate(self.stages):
            if s > 0:
                xs = [*xs, self.transitions[s - 1](xs[-1])]
            xs = stage(xs)
        return self.head(xs[0])
