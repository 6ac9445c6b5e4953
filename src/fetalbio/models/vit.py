"""A small vision transformer with learned landmark tokens (write-up 000, approach 4).

Trained from scratch (no pretrained weights). The image is cut into ``patch_size`` square
patches, each linearly embedded (a conv with kernel = stride = ``patch_size``), plus a learned
2-D position embedding; ``out_channels`` learned **landmark tokens** (one per point) are put in
front of the patch tokens, and ``depth`` pre-norm transformer blocks (multi-head self-attention,
GELU MLP) let every landmark token attend to the image and to the other landmark tokens (the
relations between the points). Each landmark token's output goes through a LayerNorm and a
linear layer to its ``(x, y)``, sigmoid-normalised as in ``coord_regression``
(``output_kind`` ``"vector"``).

The position embedding is learned on a ``pos_grid`` of patches and resized bilinearly to the
actual patch grid, so any input whose sides are multiples of ``patch_size`` works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fetalbio.models.blocks import check_input, check_option, init_head, pool_grid
from fetalbio.registry import MODELS

__all__ = ["TransformerBlock", "ViTLandmark"]


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder block: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))``.

    ``(B, N, dim) -> (B, N, dim)``; attention by :func:`torch.nn.functional.scaled_dot_product_attention`.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, d / heads)
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


@MODELS.register("vit_landmark")
class ViTLandmark(nn.Module):
    """Vision transformer regressing one point per learned landmark token.

    ``(B, in_channels, H, W) -> (B, out_channels, 2)`` normalised ``(x, y)`` in [0, 1], x first;
    H, W multiples of ``patch_size``. ``landmark_tokens`` is ``(1, out_channels, embed_dim)``.

    Args:
        in_channels, out_channels: image channels and number of points (= landmark tokens).
        patch_size: side of the square patches (a divisor of 32: 1, 2, 4, 8, 16 or 32).
        embed_dim: token width (a multiple of ``heads``).
        depth: transformer blocks.
        heads: attention heads per block.
        mlp_ratio: MLP hidden width / ``embed_dim``.
        dropout: dropout in the attention, the MLPs and on the embedded tokens.
        pos_grid: ``(H, W)`` patch grid on which the position embedding is learned (the
            pipeline's 96x128 input with 8-pixel patches is 12x16).
    """

    output_kind = "vector"
    output_stride = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        patch_size: int = 8,
        embed_dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pos_grid: Sequence[int] = (12, 16),
    ) -> None:
        super().__init__()
        name = "vit_landmark"
        check_option(patch_size in (1, 2, 4, 8, 16, 32), name, "patch_size", f"must divide 32 (1, 2, 4, 8, 16 or 32), got {patch_size}")
        check_option(embed_dim >= 1, name, "embed_dim", f"must be >= 1, got {embed_dim}")
        check_option(heads >= 1, name, "heads", f"must be >= 1, got {heads}")
        check_option(embed_dim % heads == 0, name, "embed_dim", f"({embed_dim}) must be divisible by heads ({heads})")
        check_option(depth >= 1, name, "depth", f"must be >= 1, got {depth}")
        check_option(mlp_ratio > 0, name, "mlp_ratio", f"must be > 0, got {mlp_ratio}")
        check_option(0.0 <= dropout < 1.0, name, "dropout", f"must be in [0, 1), got {dropout}")
        grid = pool_grid(pos_grid, name, "pos_grid")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.input_multiple: int = patch_size
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *grid))
        self.landmark_tokens = nn.Parameter(torch.zeros(1, out_channels, embed_dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(TransformerBlock(embed_dim, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, 2)
        self._init()

    def _init(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.landmark_tokens, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        fan_in = self.patch_embed.weight[0].numel()
        nn.init.trunc_normal_(self.patch_embed.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(self.patch_embed.bias)
        init_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.input_multiple, "vit_landmark")
        patches = self.patch_embed(x)  # (B, D, H/p, W/p)
        pos = self.pos_embed
        if pos.shape[-2:] != patches.shape[-2:]:
            pos = F.interpolate(pos, size=patches.shape[-2:], mode="bilinear", align_corners=False)
        tokens = (patches + pos).flatten(2).transpose(1, 2)  # (B, N, D)
        marks = self.landmark_tokens.expand(x.shape[0], -1, -1)
        z = self.blocks(self.drop(torch.cat([marks, tokens], dim=1)))
        out = self.head(self.norm(z[:, : self.out_channels]))  # (B, K, 2)
        return torch.sigmoid(out)
