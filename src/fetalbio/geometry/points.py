"""Semantics and canonical endpoint order of the four biometry landmarks.

A landmark set is a ``(4, 2)`` float array of ``(x, y)`` pixels ordered
``[ofd_1, ofd_2, bpd_1, bpd_2]``.

Two rules make every set unambiguous, so that a network never sees the same anatomy labelled
two ways:

1. **Semantics by geometry.** The longer of the two diameters is the OFD (occipito-frontal,
   anatomically the longer axis of the skull), the shorter the BPD, whatever the source columns
   said.
2. **Endpoint order.** OFD point 1 is the one with the smaller projection on the reference
   direction ``REFERENCE_DIRECTION`` = (1, 0), i.e. the leftmost point; an exact tie (a vertical
   OFD) is broken by the smaller ``y`` (the upper point). BPD point 1 is then the one with the
   smaller projection on the OFD's normal ``n = (-d_y, d_x)``, ``d = ofd_2 - ofd_1``: for a
   horizontal OFD that is the upper BPD endpoint, and the rule turns with the head. (Ordering
   the BPD by ``x`` as well would be ambiguous for the common near-vertical BPD: its two
   endpoints would swap labels between near-identical images, the heatmaps of ``bpd_1`` and
   ``bpd_2`` would become bimodal and a soft-argmax decoder would put both points near the
   head's centre.) A BPD parallel to the OFD (no side; only in corrupt rows) falls back to the
   OFD's rule. This is the fixed orientation rule in the spirit of BiometryNet's orientation
   determination; after any augmentation that mirrors the image the rule is simply applied
   again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFERENCE_DIRECTION = np.array([1.0, 0.0])


@dataclass(frozen=True)
class CanonicalResult:
    """Points in canonical order and what had to change to get there."""

    points: np.ndarray  # (4, 2)
    swapped_diameters: bool  # the source OFD pair was the shorter one
    reordered_ofd: bool  # endpoints of the (final) OFD pair were swapped
    reordered_bpd: bool  # endpoints of the (final) BPD pair were swapped


def _as_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (4, 2):
        raise ValueError(f"expected landmarks of shape (4, 2), got {pts.shape}")
    return pts


def diameter_lengths(points: np.ndarray) -> tuple[float, float]:
    """Lengths in pixels of the (first pair, second pair) of a (4, 2) landmark set."""
    pts = _as_points(points)
    return float(np.linalg.norm(pts[1] - pts[0])), float(np.linalg.norm(pts[3] - pts[2]))


def order_pair(p1: np.ndarray, p2: np.ndarray, direction: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return the two endpoints in canonical order and whether they were swapped.

    Point 1 has the smaller projection on ``direction`` (default ``REFERENCE_DIRECTION``); when
    both projections are equal (to 1e-9 of the pair's length) the ``REFERENCE_DIRECTION`` rule
    decides (smaller ``x``, then smaller ``y``).
    """
    if direction is not None:
        d1, d2 = float(p1 @ direction), float(p2 @ direction)
        scale = max(float(np.linalg.norm(p2 - p1)) * float(np.linalg.norm(direction)), 1e-12)
        if abs(d1 - d2) > 1e-9 * scale:
            return (p1, p2, False) if d1 < d2 else (p2, p1, True)
    d1 = float(p1 @ REFERENCE_DIRECTION)
    d2 = float(p2 @ REFERENCE_DIRECTION)
    if d1 < d2 or (d1 == d2 and p1[1] <= p2[1]):
        return p1, p2, False
    return p2, p1, True


def ofd_normal(ofd_1: np.ndarray, ofd_2: np.ndarray) -> np.ndarray:
    """``(-d_y, d_x)`` for ``d = ofd_2 - ofd_1``: the direction the BPD rule projects on."""
    d = np.asarray(ofd_2, dtype=np.float64) - np.asarray(ofd_1, dtype=np.float64)
    return np.array([-d[1], d[0]])


def canonical_permutation(points: np.ndarray) -> np.ndarray:
    """Indices ``perm`` (4,) such that ``points[perm]`` is in canonical order (both rules)."""
    pts = _as_points(points)
    first_len, second_len = diameter_lengths(pts)
    perm = [2, 3, 0, 1] if second_len > first_len else [0, 1, 2, 3]
    _, _, swap = order_pair(pts[perm[0]], pts[perm[1]])
    if swap:
        perm[0], perm[1] = perm[1], perm[0]
    normal = ofd_normal(pts[perm[0]], pts[perm[1]])
    _, _, swap = order_pair(pts[perm[2]], pts[perm[3]], normal)
    if swap:
        perm[2], perm[3] = perm[3], perm[2]
    return np.array(perm)


def canonicalize(points: np.ndarray) -> CanonicalResult:
    """Apply both rules of this module to one (4, 2) landmark set."""
    pts = _as_points(points)
    perm = canonical_permutation(pts)
    swapped = bool(perm[0] >= 2)
    return CanonicalResult(pts[perm].copy(), swapped, bool(perm[0] % 2 == 1), bool(perm[2] % 2 == 1))


def canonicalize_batch(points: np.ndarray) -> np.ndarray:
    """Canonical order for an ``(N, 4, 2)`` array (e.g. after a flip augmentation)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (4, 2):
        raise ValueError(f"expected landmarks of shape (N, 4, 2), got {arr.shape}")
    return np.stack([canonicalize(p).points for p in arr]) if len(arr) else arr.copy()
