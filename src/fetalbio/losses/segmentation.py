"""Segmentation losses on logits ``(B, C, H, W)`` (C = 1 for the head) against ``{0, 1}`` float
targets of the same shape. Each channel's loss is computed per sample (soft Dice is a
per-image Dice, never pooled over the batch), so sample weights act sample by sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fetalbio.losses.base import WeightedLoss
from fetalbio.registry import LOSSES


def _check_masks(pred: Tensor) -> None:
    if pred.ndim != 4:
        raise ValueError(f"expected logits (B, C, H, W), got {tuple(pred.shape)}")


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - (2 |P.T| + smooth) / (|P| + |T| + smooth)`` per sample and channel, ``(B, C)``,
    with ``P = sigmoid(logits)``; ``smooth`` (pixels) keeps empty masks at ~0 loss."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3))
    total = p.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def boundary_band(target: Tensor, width: int) -> Tensor:
    """Morphological gradient of ``target (B, C, H, W)``: ``dilate - erode`` with a square
    ``(2*width+1)`` kernel (max-pooling; the padding never counts as background, so the image
    border is not a boundary). It is 1 on pixels within ``width`` pixels (Chebyshev) of the
    mask boundary, on both sides, and 0 elsewhere (fractional for soft targets)."""
    if width < 1:
        raise ValueError(f"width must be >= 1 pixel, got {width}")
    k = 2 * width + 1
    dilated = F.max_pool2d(target, k, stride=1, padding=width)
    eroded = -F.max_pool2d(-target, k, stride=1, padding=width)
    return dilated - eroded


@LOSSES.register("dice_bce")
class DiceBCELoss(WeightedLoss):
    """``dice_weight * soft Dice + bce_weight * BCE-with-logits`` (pixel mean).

    Args:
        dice_weight, bce_weight: term weights (default 1:1).
        smooth: Dice smoothing in pixels.
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.dice_weight = float(dice_weight)
        self.bce_weight = float(bce_weight)
        self.smooth = float(smooth)

    def per_channel(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_masks(pred)
        bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none").mean(dim=(2, 3))
        return self.dice_weight * soft_dice_loss(pred, target, self.smooth) + self.bce_weight * bce


@LOSSES.register("focal_dice")
class FocalDiceLoss(WeightedLoss):
    """``focal_weight * focal + dice_weight * soft Dice``.

    Focal loss (Lin et al., 2017), pixel mean: ``-alpha_t (1 - p_t)^gamma log p_t`` with
    ``p_t`` the predicted probability of the true class; ``alpha_t = alpha`` for foreground and
    ``1 - alpha`` for background, or 1 when ``alpha`` is None. ``gamma = 0`` and no alpha give
    plain BCE.

    Args:
        gamma: focusing parameter (2).
        alpha: foreground balance in [0, 1], or None (no balancing).
        focal_weight, dice_weight: term weights (1:1).
        smooth: Dice smoothing in pixels.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        focal_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        self.gamma = float(gamma)
        self.alpha = alpha
        self.focal_weight = float(focal_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)

    def per_channel(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_masks(pred)
        bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")  # -log p_t
        p_t = torch.exp(-bce)
        # clamp keeps the pow backward finite for gamma < 1 when p_t saturates to 1
        focal = (1.0 - p_t).clamp_min(1e-12) ** self.gamma * bce
        if self.alpha is not None:
            focal = focal * (self.alpha * target + (1.0 - self.alpha) * (1.0 - target))
        return self.focal_weight * focal.mean(dim=(2, 3)) + self.dice_weight * soft_dice_loss(pred, target, self.smooth)


@LOSSES.register("boundary_dice_bce")
class BoundaryDiceBCELoss(DiceBCELoss):
    """:class:`DiceBCELoss` plus a boundary term that concentrates BCE on the skull contour.

    ``loss = dice_weight * Dice + bce_weight * BCE + boundary_weight * BCE_band`` where
    ``BCE_band`` is the BCE averaged over the boundary band only,
    ``sum(band * bce) / max(sum(band), 1)``, with ``band = boundary_band(target, width)``
    (the morphological gradient dilate - erode of the target computed by max-pooling: pixels
    within ``width`` px of the contour, inside and outside). Normalising by the band area
    rather than the image area is what weights the contour up (by about image/band area),
    independently of the head's size; a target without boundary adds 0.

    Args:
        dice_weight, bce_weight: weights of the plain terms (1:1).
        boundary_weight: weight of the band BCE (1).
        width: half-width of the band in pixels (2).
        smooth: Dice smoothing in pixels.
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0, boundary_weight: float = 1.0, width: int = 2, smooth: float = 1.0) -> None:
        super().__init__(dice_weight=dice_weight, bce_weight=bce_weight, smooth=smooth)
        if int(width) < 1:
            raise ValueError(f"width must be >= 1 pixel, got {width}")
        self.boundary_weight = float(boundary_weight)
        self.width = int(width)

    def per_channel(self, pred: Tensor, target: Tensor) -> Tensor:
        base = super().per_channel(pred, target)
        band = boundary_band(target, self.width)
        bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
        band_bce = (band * bce).sum(dim=(2, 3)) / band.sum(dim=(2, 3)).clamp_min(1.0)
        return base + self.boundary_weight * band_bce
