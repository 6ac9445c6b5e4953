"""Landmark-localisation metrics: radial errors, MRE, SDR, NME and the CED curve.

A landmark set is ``K = 4`` points ``(x, y)`` in original-image pixels ordered
``[ofd_1, ofd_2, bpd_1, bpd_2]`` (:data:`fetalbio.POINT_NAMES`); batches are ``(N, 4, 2)``.
Pixel spacing ``spacing_mm`` is ``(N,)`` (or a scalar) with NaN where unknown.

Failure policy (the same everywhere in this module): a prediction that is NaN (the model
failed on that image) yields a NaN error. Averages such as :func:`mre` are taken over the
finite errors, and the number of failed points is reported next to them where the function
aggregates into a dict; detection rates (:func:`sdr`, :func:`ced_curve`) keep failed points in
the denominator and count them as *not detected*.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fetalbio import POINT_NAMES

#: Endpoint pairs of the two diameters, as indices into the K = 4 points.
DIAMETER_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (2, 3))

#: Absolute tolerance (in the unit of the errors) of the inclusive ``error <= threshold`` test,
#: so that an error of "exactly" 2 mm that went through floating-point arithmetic still counts.
THRESHOLD_ATOL = 1e-9


def as_point_batch(points: np.ndarray, name: str = "points") -> np.ndarray:
    """Return ``points`` as a float64 ``(N, 4, 2)`` array; a single ``(4, 2)`` set becomes N=1."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (4, 2):
        raise ValueError(f"{name}: expected landmarks of shape (N, 4, 2), got {arr.shape}")
    return arr


def as_spacing(spacing_mm: float | np.ndarray, n: int) -> np.ndarray:
    """Broadcast a scalar or ``(N,)`` pixel spacing (mm/px, NaN = unknown) to float ``(N,)``."""
    sp = np.asarray(spacing_mm, dtype=np.float64)
    if sp.ndim == 0:
        return np.full(n, float(sp))
    sp = sp.reshape(-1)
    if sp.shape != (n,):
        raise ValueError(f"spacing_mm: expected shape ({n},), got {sp.shape}")
    return sp


def match_pairs(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Reorder predicted endpoints inside each diameter to best match the reference.

    The two endpoints of one diameter are interchangeable (an OFD from occiput to frontal bone
    is the same measurement as the reverse), so for each pair ``(0, 1)`` and ``(2, 3)`` the
    predicted endpoints are swapped when that lowers the summed distance to the reference pair.
    Pairs are never exchanged *across* diameters: a BPD predicted where the OFD should be stays
    an error. A pair containing NaN is left as it is.

    Returns a new ``(N, 4, 2)`` array; inputs are not modified.
    """
    p = as_point_batch(pred, "pred").copy()
    r = as_point_batch(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"pred {p.shape} and ref {r.shape} differ in shape")
    for i, j in DIAMETER_PAIRS:
        keep = np.linalg.norm(p[:, i] - r[:, i], axis=-1) + np.linalg.norm(p[:, j] - r[:, j], axis=-1)
        swap = np.linalg.norm(p[:, i] - r[:, j], axis=-1) + np.linalg.norm(p[:, j] - r[:, i], axis=-1)
        do = swap < keep  # False when either is NaN
        p[do, i], p[do, j] = p[do, j].copy(), p[do, i].copy()
    return p


def radial_errors(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_mm: float | np.ndarray | None = None,
    match: bool = True,
) -> dict[str, np.ndarray | None]:
    """Euclidean (radial) error of every point.

    Args:
        pred, ref: ``(N, 4, 2)`` landmarks in original-image pixels (NaN = failed prediction).
        spacing_mm: ``(N,)`` or scalar mm per pixel (NaN = unknown); ``None`` for pixels only.
        match: apply :func:`match_pairs` first (endpoint order inside a diameter is free).

    Returns:
        ``{"px": (N, 4), "mm": (N, 4) or None}``; NaN where the prediction, the reference or the
        spacing is missing.
    """
    p = as_point_batch(pred, "pred")
    r = as_point_batch(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"pred {p.shape} and ref {r.shape} differ in shape")
    if match:
        p = match_pairs(p, r)
    err_px = np.linalg.norm(p - r, axis=-1)
    err_mm = None if spacing_mm is None else err_px * as_spacing(spacing_mm, len(p))[:, None]
    return {"px": err_px, "mm": err_mm}


def mre(errors: np.ndarray) -> float:
    """Mean radial error over the finite entries of ``errors`` (NaN if there are none).

    Failed points are *excluded* from this mean; report them with :func:`per_landmark` or
    :func:`sdr` (which return ``n_failed``).
    """
    e = np.asarray(errors, dtype=np.float64)
    finite = np.isfinite(e)
    return float(e[finite].mean()) if finite.any() else float("nan")


def _threshold_key(t: float) -> str:
    return f"sdr_{float(t):g}mm"


def sdr(errors_mm: np.ndarray, thresholds_mm: Sequence[float] = (2, 2.5, 3, 4)) -> dict[str, float]:
    """Successful detection rate: fraction of points with ``error_mm <= threshold``.

    The test is *inclusive* (an error of exactly 2.0 mm is detected at 2 mm; tolerance
    :data:`THRESHOLD_ATOL`). **Failed points (NaN error) count as NOT detected and stay in the
    denominator**, so a model cannot raise its SDR by failing on hard images.

    Returns:
        ``{"sdr_2mm": f, "sdr_2.5mm": f, ..., "n": points, "n_failed": NaN points}``.
        All fractions are NaN when ``errors_mm`` is empty.
    """
    e = np.asarray(errors_mm, dtype=np.float64).reshape(-1)
    n = e.size
    out: dict[str, float] = {}
    with np.errstate(invalid="ignore"):
        for t in thresholds_mm:
            hit = e <= float(t) + THRESHOLD_ATOL  # NaN <= t is False: not detected
            out[_threshold_key(t)] = float(hit.sum() / n) if n else float("nan")
    out["n"] = int(n)
    out["n_failed"] = int((~np.isfinite(e)).sum())
    return out


def per_landmark(errors: np.ndarray, unit: str = "mm", names: Sequence[str] = POINT_NAMES) -> dict[str, dict[str, float]]:
    """Per-point summary of an ``(N, 4)`` error array.

    Returns ``{point_name: {"mre_<unit>", "median_<unit>", "max_<unit>", "n", "n_failed"}}``
    where ``n`` counts all cases and ``n_failed`` the NaN ones (excluded from the statistics).
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != len(names):
        raise ValueError(f"errors: expected shape (N, {len(names)}), got {e.shape}")
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        col = e[:, k]
        ok = col[np.isfinite(col)]
        out[name] = {
            f"mre_{unit}": float(ok.mean()) if ok.size else float("nan"),
            f"median_{unit}": float(np.median(ok)) if ok.size else float("nan"),
            f"max_{unit}": float(ok.max()) if ok.size else float("nan"),
            "n": int(col.size),
            "n_failed": int(col.size - ok.size),
        }
    return out


def nme(errors_px: np.ndarray, ofd_length_px: np.ndarray) -> float:
    """Normalised mean error: radial errors divided by the *reference* OFD length of the image.

    ``errors_px`` is ``(N, 4)``, ``ofd_length_px`` is ``(N,)``. The mean is over finite
    normalised errors (failed points and images with a zero/unknown OFD are excluded); the
    result is a unitless fraction (multiply by 100 for percent).
    """
    e = np.asarray(errors_px, dtype=np.float64)
    ofd = np.asarray(ofd_length_px, dtype=np.float64).reshape(-1)
    if e.ndim != 2 or e.shape[0] != ofd.shape[0]:
        raise ValueError(f"errors_px {e.shape} and ofd_length_px {ofd.shape} do not match")
    ofd = np.where(ofd > 0, ofd, np.nan)
    return mre(e / ofd[:, None])


def ced_curve(errors_mm: np.ndarray, max_mm: float = 10.0, step: float = 0.1) -> pd.DataFrame:
    """Cumulative error distribution: fraction of points with ``error <= threshold``.

    Thresholds run from 0 to ``max_mm`` inclusive in steps of ``step`` (rounded to 10 decimals
    to avoid ``0.30000000000000004``). Same inclusive test and failure policy as :func:`sdr`:
    failed points are in the denominator and never reach the curve, whose plateau is then
    ``1 - failure rate``.

    Returns a DataFrame with columns ``threshold_mm`` and ``fraction``.
    """
    if step <= 0:
        raise ValueError("step must be > 0")
    e = np.asarray(errors_mm, dtype=np.float64).reshape(-1)
    n_steps = int(np.floor(max_mm / step + 1e-9))
    thr = np.round(np.arange(n_steps + 1) * step, 10)
    if e.size:
        with np.errstate(invalid="ignore"):
            frac = (e[None, :] <= thr[:, None] + THRESHOLD_ATOL).sum(axis=1) / e.size
    else:
        frac = np.full(thr.shape, np.nan)
    return pd.DataFrame({"threshold_mm": thr, "fraction": frac.astype(np.float64)})
