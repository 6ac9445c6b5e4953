"""Attention UNet (Oktay et al. 2018): a UNet whose skip features are re-weighted by additive
attention gates driven by the coarser decoder feature."""

from __future__ import annotations

import torch
from torch import nn

from fetalbio.models.blocks import UpConcat, resize_to
from fetalbio.models.unet import UNet
from fetalbio.registry import MODELS

__all__ = ["AttentionGate", "AttentionUNet"]


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Fig. 2).

    Shapes: skip ``x`` (B, x_ch, H, W), gating ``g`` (B, g_ch, H/2, W/2) -> (B, x_ch, H, W).

    ``q = relu(theta(x) + phi(g))`` at the gating resolution (``theta`` is a 2x2 stride-2 conv),
    ``alpha = sigmoid(psi(q))`` (B, 1, H/2, W/2) is upsampled bilinearly to (H, W), and the output
    is ``W(x * alpha)`` with ``W`` a 1x1 conv + BatchNorm.
    """

    def __init__(self, x_ch: int, g_ch: int, inter_ch: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(x_ch, inter_ch, kernel_size=2, stride=2, bias=False)
        self.phi = nn.Conv2d(g_ch, inter_ch, kernel_size=1)
        self.psi = nn.Conv2d(inter_ch, 1, kernel_size=1)
        self.relu = nn.ReLU()
        self.out = nn.Sequential(nn.Conv2d(x_ch, x_ch, kernel_size=1, bias=False), nn.BatchNorm2d(x_ch))

    def attention(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``alpha`` in [0, 1], shape (B, 1, H, W)."""
        theta = self.theta(x)
        q = self.relu(theta + resize_to(self.phi(g), theta))
        return resize_to(torch.sigmoid(self.psi(q)), x)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.out(x * self.attention(x, g))


class _GatedUp(nn.Module):
    """Attention-gated decoder step: ``(x (B, in_ch, h, w), skip (B, skip_ch, 2h, 2w)) -> (B, out_ch, 2h, 2w)``."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, bilinear: bool) -> None:
        super().__init__()
        self.gate = AttentionGate(skip_ch, in_ch, max(1, skip_ch // 2))
        self.up = UpConcat(in_ch, skip_ch, out_ch, bilinear)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.up(x, self.gate(skip, x))


@MODELS.register("attention_unet")
class AttentionUNet(UNet):
    """UNet with an :class:`AttentionGate` on every skip connection.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` raw logits / heatmaps;
    H, W multiples of ``2**depth``. Same arch options as :class:`~fetalbio.models.unet.UNet`
    (``base_width``, ``depth``, ``bilinear``); each gate's intermediate width is half the skip's.
    """

    name = "attention_unet"

    def _make_up(self, in_ch: int, skip_ch: int, out_ch: int, bilinear: bool) -> nn.Module:
        return _GatedUp(in_ch, skip_ch, out_ch, bilinear)
