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


# Hadlock et al. (1984): GA (weeks) = c0 + c1 HC + c3 HC**3 with HC in cm (written into the
# review page, which recomputes GA as a reviewer drags the ellipse)
HADLOCK_1984_HC_CM = (8.96, 0.540, 0.0003)


def ga_weeks_hadlock(hc_mm: np.ndarray | float) -> np.ndarray:
    """Gestational (menstrual) age in weeks from head circumference, Hadlock et al. (1984):

    ``GA = 8.96 + 0.540 HC + 0.0003 HC**3``, HC in centimetres.

    Hadlock FP, Deter RL, Harrist RB, Park SK. Estimating fetal age: computer-assisted analysis
    of multiple fetal growth parameters. Radiology 1984;152(2):497-501. The regression was fitted
    on fetuses of 14 to 42 menstrual weeks (HC about 10 to 36 cm); outside that range the value
    is an extrapolation. Strictly increasing in HC; NaN for a missing or non-positive HC.
    """
    hc_cm = np.asarray(hc_mm, dtype=np.float64) / 10.0
    with np.errstate(invalid="ignore"):
        c0, c1, c3 = HADLOCK_1984_HC_CM
        ga = c0 + c1 * hc_cm + c3 * hc_cm**3
    return np.where(hc_cm > 0, ga, np.nan)


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


def _errors_in_bins(pred: np.ndarray, ref: np.ndarray, bins: np.ndarray, n_bins: int) -> list[dict]:
    """``{"n", "n_failed", "mae", "bias"}`` of ``pred - ref`` for each bin ``0 .. n_bins - 1`` of
    ``bins`` (rows with a negative bin are left out); a NaN error counts in ``n_failed`` only."""
    out = []
    for k in range(n_bins):
        sel = bins == k
        d = pred[sel] - ref[sel]
        ok = np.isfinite(d)
        out.append({
            "n": int(sel.sum()),
            "n_failed": int((~ok).sum()),
            "mae": float(np.mean(np.abs(d[ok]))) if ok.any() else float("nan"),
            "bias": float(np.mean(d[ok])) if ok.any() else float("nan"),
        })
    return out


def errors_by_tercile(pred_mm: np.ndarray, ref_mm: np.ndarray) -> dict:
    """Absolute error of a measurement in the three terciles of the *reference* value.

    Returns ``{"terciles": [{"hc_low_mm", "hc_high_mm", "n", "n_failed", "mae", "bias"} x 3],
    "largest_over_smallest": mae of the top tercile / mae of the bottom one}``. Rows without a
    reference are left out; a NaN prediction counts in ``n_failed`` and not in the MAE.
    """
    pred = np.asarray(pred_mm, dtype=np.float64)
    ref = np.asarray(ref_mm, dtype=np.float64)
    has_ref = np.isfinite(ref)
    if has_ref.sum() < 3:
        return {"terciles": [], "largest_over_smallest": float("nan")}
    edges = np.quantile(ref[has_ref], [0.0, 1 / 3, 2 / 3, 1.0])
    bins = np.where(has_ref, np.clip(np.searchsorted(edges, ref, side="right") - 1, 0, 2), -1)
    out = [{"hc_low_mm": float(edges[k]), "hc_high_mm": float(edges[k + 1]), **row} for k, row in enumerate(_errors_in_bins(pred, ref, bins, 3))]
    lo, hi = out[0]["mae"], out[2]["mae"]
    return {"terciles": out, "largest_over_smallest": hi / lo if lo > 0 else float("nan")}


# Head orientation bins (tilt of the reference ellipse's long axis from the image horizontal).
TILT_EDGES_DEG = (0.0, 30.0, 60.0, 90.0)


def errors_by_tilt(pred_mm: np.ndarray, ref_mm: np.ndarray, tilt_deg: np.ndarray) -> list[dict]:
    """Error of a measurement by head orientation: ``[{"tilt_low_deg", "tilt_high_deg", "n",
    "n_failed", "mae", "bias"}]`` for the bins of :data:`TILT_EDGES_DEG` (the last bin includes
    90). Rows without a reference or a tilt are left out; a NaN prediction counts in
    ``n_failed``, not in the MAE."""
    pred, ref, tilt = (np.asarray(v, dtype=np.float64) for v in (pred_mm, ref_mm, tilt_deg))
    n_bins = len(TILT_EDGES_DEG) - 1
    known = np.isfinite(ref) & np.isfinite(tilt)
    bins = np.where(known, np.clip(np.searchsorted(TILT_EDGES_DEG, np.where(known, tilt, 0.0), side="right") - 1, 0, n_bins - 1), -1)
    return [{"tilt_low_deg": lo, "tilt_high_deg": hi, **row}
            for lo, hi, row in zip(TILT_EDGES_DEG, TILT_EDGES_DEG[1:], _errors_in_bins(pred, ref, bins, n_bins))]
