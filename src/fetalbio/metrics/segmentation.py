"""Overlap and boundary metrics of binary ``(H, W)`` masks (bool or 0/1 uint8)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a).astype(bool)
    y = np.asarray(b).astype(bool)
    if x.shape != y.shape:
        raise ValueError(f"masks differ in shape: {x.shape} vs {y.shape}")
    return x, y


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2 |A ∩ B| / (|A| + |B|)``; 1.0 if both masks are empty."""
    x, y = _pair(a, b)
    total = int(x.sum()) + int(y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union ``|A ∩ B| / |A ∪ B|``; 1.0 if both masks are empty."""
    x, y = _pair(a, b)
    union = int((x | y).sum())
    return 1.0 if union == 0 else int((x & y).sum()) / union


def boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a mask: the mask minus its binary erosion (cross structuring element).

    Pixels on the image border belong to the boundary (erosion treats outside as background).
    """
    from scipy import ndimage  # here: prediction does not need it

    m = np.asarray(mask).astype(bool)
    return m & ~ndimage.binary_erosion(m, border_value=0)


def hausdorff95(a: np.ndarray, b: np.ndarray, spacing_mm: float | Sequence[float] = 1.0) -> float:
    """95th percentile of the symmetric boundary-to-boundary distances, in mm.

    The distances from every boundary pixel of ``a`` to the nearest boundary pixel of ``b`` and
    from every boundary pixel of ``b`` to ``a`` are pooled, and their 95th percentile is
    returned (distances from :func:`scipy.ndimage.distance_transform_edt` of the other
    boundary's complement, scaled by ``spacing_mm``: a scalar or a ``(row, col)`` pair).

    Edge cases: both masks empty → ``0.0``; exactly one mask empty → ``inf`` (the distance to
    an empty set is infinite; non-finite, so it counts as a failure in any finite-aware
    aggregation and, unlike NaN, cannot be dropped silently by ``nanmean``).
    """
    from scipy import ndimage  # here: prediction does not need it

    x, y = _pair(a, b)
    if not x.any() and not y.any():
        return 0.0
    if not x.any() or not y.any():
        return float("inf")
    sampling = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (x.ndim,))
    bx, by = boundary(x), boundary(y)
    dt_to_y = ndimage.distance_transform_edt(~by, sampling=sampling)
    dt_to_x = ndimage.distance_transform_edt(~bx, sampling=sampling)
    dists = np.concatenate([dt_to_y[bx], dt_to_x[by]])
    return float(np.percentile(dists, 95))
