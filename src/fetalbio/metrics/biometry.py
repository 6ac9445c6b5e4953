"""Biometry from landmarks (BPD, OFD, HC) and the error statistics of a measurement.

HC is the perimeter of the ellipse whose full axes are the OFD and the BPD (Ramanujan's second
approximation). :func:`ramanujan_hc` deliberately duplicates the geometry package's helper in
one small numpy function, so that this package stays free of OpenCV.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fetalbio.metrics.landmarks import as_point_batch, as_spacing


def diameters_px(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ofd_px, bpd_px)``, each ``(N,)``: lengths of pairs (0, 1) and (2, 3) in pixels."""
    pts = as_point_batch(points)
    ofd = np.linalg.norm(pts[:, 1] - pts[:, 0], axis=-1)
    bpd = np.linalg.norm(pts[:, 3] - pts[:, 2], axis=-1)
    return ofd, bpd


def ramanujan_hc(ofd: np.ndarray | float, bpd: np.ndarray | float) -> np.ndarray:
    """Perimeter of the ellipse with full axes ``ofd`` and ``bpd`` (any unit, vectorised).

    Ramanujan II with semi-axes ``a = ofd/2``, ``b = bpd/2``:
    ``h = ((a - b) / (a + b))**2``, ``P = pi (a + b) (1 + 3h / (10 + sqrt(4 - 3h)))``.
    Exact for a circle (``pi * d``); a degenerate ``0, 0`` ellipse gives 0; NaN propagates.
    """
    a = np.asarray(ofd, dtype=np.float64) / 2.0
    b = np.asarray(bpd, dtype=np.float64) / 2.0
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(s > 0, ((a - b) / s) ** 2, 0.0)
    return np.pi * s * (1.0 + 3.0 * h / (10.0 + np.sqrt(4.0 - 3.0 * h)))


def biometry_mm(points: np.ndarray, spacing_mm: float | np.ndarray) -> pd.DataFrame:
    """BPD, OFD and HC in millimetres for ``(N, 4, 2)`` landmarks and ``(N,)`` spacing.

    Rows are NaN where the landmarks or the spacing are missing.
    Returns a DataFrame with columns ``bpd_mm``, ``ofd_mm``, ``hc_mm``.
    """
    pts = as_point_batch(points)
    sp = as_spacing(spacing_mm, len(pts))
    ofd_px, bpd_px = diameters_px(pts)
    ofd_mm, bpd_mm = ofd_px * sp, bpd_px * sp
    return pd.DataFrame({"bpd_mm": bpd_mm, "ofd_mm": ofd_mm, "hc_mm": ramanujan_hc(ofd_mm, bpd_mm)})


def measurement_errors(pred_mm: np.ndarray, ref_mm: np.ndarray) -> dict[str, float]:
    """Error statistics of a predicted measurement (e.g. HC) against the reference.

    Cases whose *reference* is missing cannot be scored and are counted in ``n_missing``.
    Of the remaining ``n`` cases, those with a non-finite *prediction* are failures
    (``n_failed``); the statistics are computed over the ``n - n_failed`` scored cases.

    Returns:
        ``mae`` (mean |pred - ref|), ``median_ae``, ``bias`` (mean of pred - ref), ``sd``
        (SD of pred - ref, ddof=1), ``pct_error_mean`` (mean |pred - ref| / ref * 100, over
        ref > 0), ``n``, ``n_failed``, ``n_missing``. Values are in the unit of the inputs.
    """
    p = np.asarray(pred_mm, dtype=np.float64).reshape(-1)
    r = np.asarray(ref_mm, dtype=np.float64).reshape(-1)
    if p.shape != r.shape:
        raise ValueError(f"pred {p.shape} and ref {r.shape} differ in shape")
    has_ref = np.isfinite(r)
    ok = has_ref & np.isfinite(p)
    d = p[ok] - r[ok]
    ad = np.abs(d)
    pos = r[ok] > 0
    nan = float("nan")
    return {
        "mae": float(ad.mean()) if d.size else nan,
        "median_ae": float(np.median(ad)) if d.size else nan,
        "bias": float(d.mean()) if d.size else nan,
        "sd": float(d.std(ddof=1)) if d.size > 1 else nan,
        "pct_error_mean": float((ad[pos] / r[ok][pos]).mean() * 100.0) if pos.any() else nan,
        "n": int(has_ref.sum()),
        "n_failed": int(has_ref.sum() - ok.sum()),
        "n_missing": int((~has_ref).sum()),
    }
