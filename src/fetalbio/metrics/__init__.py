"""Evaluation metrics of fetal head biometry (pure numpy / pandas / scipy; no torch, no cv2).

* :mod:`~fetalbio.metrics.landmarks` — radial errors, MRE, SDR, NME, CED curve
* :mod:`~fetalbio.metrics.biometry` — BPD / OFD / HC from landmarks and measurement errors
* :mod:`~fetalbio.metrics.agreement` — Bland–Altman (diff = a - b), paired Wilcoxon
* :mod:`~fetalbio.metrics.segmentation` — Dice, IoU, HD95 of binary masks
* :mod:`~fetalbio.metrics.uncertainty` — risk–coverage, AURC, uncertainty/error correlation
* :mod:`~fetalbio.metrics.folds` — mean ± std over cross-validation folds

Landmarks are ``(N, 4, 2)`` ``(x, y)`` pixels ordered ``[ofd_1, ofd_2, bpd_1, bpd_2]``;
``spacing_mm`` is ``(N,)`` with NaN where unknown. A NaN prediction is a failed image: it is
counted (``n_failed``), never silently dropped.
"""

from fetalbio.metrics.agreement import bland_altman, bland_altman_points, wilcoxon_paired
from fetalbio.metrics.biometry import (
    biometry_mm,
    diameters_px,
    errors_by_tercile,
    errors_by_tilt,
    ga_weeks_hadlock,
    measurement_errors,
    ramanujan_hc,
)
from fetalbio.metrics.folds import summarize_over_folds
from fetalbio.metrics.landmarks import DIAMETER_PAIRS, ced_curve, match_pairs, mre, nme, per_landmark, radial_errors, sdr
from fetalbio.metrics.segmentation import boundary, dice, hausdorff95, iou
from fetalbio.metrics.uncertainty import aurc, risk_coverage, uncertainty_error_correlation

__all__ = [
    "DIAMETER_PAIRS",
    "aurc",
    "biometry_mm",
    "bland_altman",
    "bland_altman_points",
    "boundary",
    "ced_curve",
    "diameters_px",
    "errors_by_tercile",
    "errors_by_tilt",
    "ga_weeks_hadlock",
    "dice",
    "hausdorff95",
    "iou",
    "match_pairs",
    "measurement_errors",
    "mre",
    "nme",
    "per_landmark",
    "radial_errors",
    "ramanujan_hc",
    "risk_coverage",
    "sdr",
    "summarize_over_folds",
    "uncertainty_error_correlation",
    "wilcoxon_paired",
]
