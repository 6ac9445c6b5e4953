"""Triage: a per-image uncertainty that predicts the HC error, a 90 % interval in mm, and the
``ok`` / ``uncertain`` / ``failed`` flag with the signal that fired.

Signals (:func:`triage_features`), all cheap and all available at prediction time:

* ``log_fit_residual``: the ellipse fit's median boundary residual over the semi-major axis
  (segmentation and refined methods);
* ``log_point_unc``: the mean point uncertainty over the semi-major axis (heatmap spread of a
  landmark method; the fit residual for a segmentation method);
* ``stage_disagreement``: relative perimeter change from the first stage's ellipse to the
  refined one, and ``centre_shift``: their centre distance over the semi-major axis
  (coarse-to-fine methods only);
* ``axis_ratio`` (b/a), ``size_frac`` (long axis over the image diagonal), ``ring_contrast``
  (how much brighter the fitted outline is than the inside of the head, in image standard
  deviations: the skull is a bright ring), ``ring_vs_outside`` (the outline against a band
  just outside it: bone against soft tissue or fluid) and ``log_hc_mm`` (errors grow with the
  head);
* image statistics that tell a B-mode ultrasound frame from other pictures: ``dark_frac``
  (share of near-black pixels: the scan sector's surround), ``bright_frac`` (near-white; a
  signal of the uncertainty only, not of the gate) and ``mean_intensity``.

The combiner (:class:`Triage`) is a ridge regression of ``log(|HC error| + 0.2 mm)`` on the
standardised signals (scikit-learn), fitted on out-of-fold predictions. Its prediction,
``uncertainty = exp(...)``, is the typical |HC error| in mm. The 90 % interval is
``HC ± c · uncertainty`` with ``c`` the split-conformal 90 % quantile of ``|error| /
uncertainty`` over the rows it was fitted on, each row's uncertainty cross-fitted (from a ridge
fitted on the other folds: calibrated on its own fit, the interval under-covered the largest
heads, 86 % instead of 90 %), and ``c`` set separately in each band of the predicted HC
(:data:`CONFORMAL_BAND_EDGES_MM`; a band with too few rows takes the overall ``c``). ``uncertain``: uncertainty above the
``1 - flag_share`` quantile of the fitted rows, or a skull outline weaker than all but
``SOFT_QUANTILE`` of them (:data:`WEAK_RING_SIGNAL`). ``failed`` (no measurement is reported): no
ellipse, or a plausibility signal (``PLAUSIBILITY``) outside the range seen on the fitted rows
(widened by ``margin`` of that range): the picture is not like the fetal-head ultrasound the
model was made for. Evaluation fits it with nesting (:func:`nested_triage`): the combiner
scoring fold ``k`` never saw fold ``k``; the exported model carries one fitted on every
out-of-fold row.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fetalbio.geometry.ellipse import Ellipse

FEATURES = ("log_fit_residual", "log_point_unc", "stage_disagreement", "centre_shift", "axis_ratio", "size_frac", "ring_contrast",
            "ring_vs_outside", "weak_ring", "log_hc_mm", "dark_frac", "bright_frac", "mean_intensity")
# the skull outline against its surroundings: below the SOFT_QUANTILE of the fitted rows an image
# is at least `uncertain` (few real heads are, and those few are mostly badly measured)
WEAK_RING_SIGNAL = "ring_vs_outside"
SOFT_QUANTILE = 0.03
# signals that say whether the picture is a fetal head in ultrasound at all. Not bright_frac: real
# frames carry burned-in white text and calipers, so its range on the fitted rows is no bound (on
# the sample a held-out head with 0.13 % white pixels fell outside a range fitted up to 0.007 %);
# a white page or a photo is out on mean_intensity and dark_frac already
PLAUSIBILITY = ("axis_ratio", "size_frac", "ring_contrast", "ring_vs_outside", "dark_frac", "mean_intensity")
# the gate's range of each plausibility signal: the fitted rows' [min, max] widened on each side
# by this share of its width. 0.1 refused 6 of 186 real later-gestation heads when fitted on the
# early ones only; fitted on both sources, 0.25 refuses no real head out of fold
# (results/full-cpu-whole) and still refuses a picture with no scan-sector surround
GATE_MARGIN = 0.25
# what each plausibility signal says, in words, when it is below / above its range
GATE_WORDS = {
    "axis_ratio": ("the outline found is far flatter than a head", "the outline found is rounder than any head seen"),
    "size_frac": ("the outline found is too small for a head in this picture", "the outline found is larger than the picture allows"),
    "ring_contrast": ("no bright skull ring along the outline found", "an outline brighter than any skull seen"),
    "ring_vs_outside": ("the outline found is not brighter than what surrounds it", "an outline brighter than any skull seen"),
    "dark_frac": ("too little black surround for an ultrasound scan sector", "mostly black: too little image content"),
    "mean_intensity": ("darker overall than any ultrasound seen", "brighter overall than any ultrasound seen"),
}
ERROR_FLOOR_MM = 0.2
COVERAGE = 0.9
# The 90 % interval's factor is set per band of the *predicted* HC (group-conditional split
# conformal): one factor for all sizes covered small heads more and the largest less than 90 %.
# A band with fewer fitted rows than CONFORMAL_MIN_ROWS uses the factor of all rows.
CONFORMAL_BAND_EDGES_MM = (100.0, 150.0, 200.0, 250.0)
CONFORMAL_MIN_ROWS = 25


def _conformal_quantile(ratio: np.ndarray) -> float:
    r = np.sort(ratio)
    return float(r[min(r.size - 1, math.ceil((r.size + 1) * COVERAGE) - 1)])  # split-conformal quantile


def _ellipse_samples(e: Ellipse, n: int, scale: float = 1.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    c, s = math.cos(e.theta), math.sin(e.theta)
    x, y = scale * e.a * np.cos(t), scale * e.b * np.sin(t)
    return np.stack([e.cx + c * x - s * y, e.cy + s * x + c * y], axis=1)


def _sample(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h, w = image.shape
    xi, yi = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    return image[yi[ok], xi[ok]].astype(np.float64)


def image_features(image: np.ndarray) -> dict[str, float]:
    img = np.asarray(image)
    return {"dark_frac": float((img <= 8).mean()), "bright_frac": float((img >= 247).mean()), "mean_intensity": float(img.mean() / 255.0)}


def triage_features(image: np.ndarray, e: Ellipse | None, coarse: Ellipse | None, fit_residual_px: float, point_unc_px: float,
                    hc_mm: float) -> dict[str, float]:
    """The signals of one image's prediction (NaN where a signal does not apply)."""
    f = {k: float("nan") for k in FEATURES}
    f.update(image_features(image))
    if e is None or not e.a > 0:
        return f
    h, w = image.shape
    f["axis_ratio"] = e.b / e.a
    f["size_frac"] = 2.0 * e.a / math.hypot(w, h)
    if math.isfinite(fit_residual_px):
        f["log_fit_residual"] = math.log((fit_residual_px + 1e-3) / e.a)
    if math.isfinite(point_unc_px):
        f["log_point_unc"] = math.log((point_unc_px + 1e-3) / e.a)
    if coarse is not None and coarse.a > 0:
        f["stage_disagreement"] = abs(e.perimeter_px - coarse.perimeter_px) / e.perimeter_px
        f["centre_shift"] = math.hypot(e.cx - coarse.cx, e.cy - coarse.cy) / e.a
    if math.isfinite(hc_mm) and hc_mm > 0:
        f["log_hc_mm"] = math.log(hc_mm)
    # the outline: the brightest of a few rings around the fitted ellipse, against the inside
    img = np.asarray(image, dtype=np.float64)
    sd = max(float(img.std()), 1e-6)
    ring = max((np.mean(v) if (v := _sample(img, _ellipse_samples(e, 180, s))).size else -np.inf) for s in (0.96, 0.98, 1.0, 1.02, 1.04))
    inside = np.concatenate([_sample(img, _ellipse_samples(e, 90, s)) for s in (0.3, 0.5, 0.7)])
    outside = np.concatenate([_sample(img, _ellipse_samples(e, 180, s)) for s in (1.15, 1.22, 1.3)])
    if np.isfinite(ring) and inside.size:
        f["ring_contrast"] = float((ring - inside.mean()) / sd)
    if np.isfinite(ring) and outside.size:
        f["ring_vs_outside"] = float((ring - outside.mean()) / sd)
        f["weak_ring"] = max(0.0, 1.0 - f["ring_vs_outside"])  # the error rises steeply once the outline fades
    return f


@dataclass
class Triage:
    """A fitted combiner (plain data: it travels in the model file and the ONNX sidecar)."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    conformal_factor: float
    uncertain_threshold_mm: float
    ranges: dict[str, list[float]] = field(default_factory=dict)
    n_fit: int = 0
    weak_ring_below: float = float("nan")
    band_edges_mm: list[float] = field(default_factory=list)  # predicted-HC bands of band_factors
    band_factors: list[float] = field(default_factory=list)  # len(band_edges_mm) + 1 factors

    def factor(self, hc_mm: np.ndarray) -> np.ndarray:
        """The interval factor of each predicted HC (its band's, or the overall one)."""
        hc = np.asarray(hc_mm, dtype=np.float64)
        if not self.band_factors:
            return np.full(hc.shape, self.conformal_factor)
        band = np.searchsorted(np.asarray(self.band_edges_mm), np.nan_to_num(hc, nan=0.0), side="right")
        return np.where(np.isfinite(hc), np.asarray(self.band_factors)[band], self.conformal_factor)

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, feats: pd.DataFrame, abs_err_mm: np.ndarray, flag_share: float = 0.06, alpha: float = 1.0, margin: float = GATE_MARGIN,
            groups: np.ndarray | None = None) -> "Triage":
        """Fit on rows with a finite error (measured predictions) and their signals.

        ``groups`` (e.g. the rows' folds): the conformal factor is then set on cross-fitted
        uncertainties -- each group's from a ridge fitted on the other groups -- rather than on
        the ridge's own fit, which is tighter on the rows it was fitted on than on new ones
        (an interval calibrated in-sample under-covers)."""
        from sklearn.linear_model import Ridge

        err = np.asarray(abs_err_mm, dtype=np.float64)
        ok = np.isfinite(err)
        X = feats.loc[ok, list(FEATURES)].astype(np.float64)
        use = [c for c in FEATURES if X[c].notna().mean() >= 0.9 and X[c].std(skipna=True) > 0]
        if ok.sum() < 10 or not use:
            raise ValueError(f"triage needs at least 10 measured rows with signals, got {int(ok.sum())}")
        X = X[use]
        mean = X.mean().to_numpy()
        scale = X.std().replace(0, 1.0).to_numpy()
        Z = np.nan_to_num((X.to_numpy() - mean) / scale)
        y = np.log(err[ok] + ERROR_FLOOR_MM)
        reg = Ridge(alpha=alpha).fit(Z, y)
        u = np.exp(reg.predict(Z))
        u_cal = u
        g = None if groups is None else np.asarray(groups)[ok]
        if g is not None and len(set(g.tolist())) >= 2:
            u_cal = np.empty_like(u)
            for v in sorted(set(g.tolist())):
                held = g == v
                u_cal[held] = np.exp(Ridge(alpha=alpha).fit(Z[~held], y[~held]).predict(Z[held]))
        ratio = err[ok] / u_cal
        n = ratio.size
        overall = _conformal_quantile(ratio)
        hc_fit = np.exp(feats.loc[ok, "log_hc_mm"].astype(np.float64).to_numpy()) if "log_hc_mm" in feats else np.full(n, np.nan)
        band = np.searchsorted(np.asarray(CONFORMAL_BAND_EDGES_MM), np.nan_to_num(hc_fit, nan=-1.0), side="right")
        factors = [_conformal_quantile(ratio[(band == b) & np.isfinite(hc_fit)]) if ((band == b) & np.isfinite(hc_fit)).sum() >= CONFORMAL_MIN_ROWS
                   else overall for b in range(len(CONFORMAL_BAND_EDGES_MM) + 1)]
        ranges = {}
        for c in PLAUSIBILITY:
            v = feats.loc[ok, c].astype(np.float64).dropna().to_numpy()
            if v.size:
                lo, hi = np.quantile(v, [0.0, 1.0])
                pad = margin * max(hi - lo, 1e-6)
                # the signals are non-negative: widening never reaches below half the smallest
                # value seen (a picture with no dark surround at all stays refused)
                ranges[c] = [float(max(lo - pad, lo / 2)) if lo > 0 else float(lo - pad), float(hi + pad)]
        ring = feats.loc[ok, WEAK_RING_SIGNAL].astype(np.float64).dropna().to_numpy()
        weak = float(np.quantile(ring, SOFT_QUANTILE)) if ring.size else float("nan")
        return cls(use, mean.tolist(), scale.tolist(), reg.coef_.tolist(), float(reg.intercept_), overall,
                   float(np.quantile(u, 1.0 - flag_share)), ranges, int(n), weak, list(CONFORMAL_BAND_EDGES_MM), factors)

    # -- applying ------------------------------------------------------------------------------
    def uncertainty(self, feats: pd.DataFrame) -> np.ndarray:
        """The expected |HC error| (mm) of each row. A missing signal counts as average, except
        the head size: a row without it (no pixel size: ``log_hc_mm`` missing) gets NaN -- the
        combiner was fitted with the size, and an imputed one would misjudge small and large
        heads."""
        X = feats[self.features].astype(np.float64).to_numpy()
        Z = np.nan_to_num((X - np.asarray(self.mean)) / np.asarray(self.scale))
        u = np.exp(Z @ np.asarray(self.coef) + self.intercept)
        if "log_hc_mm" in self.features:
            u = np.where(np.isfinite(feats["log_hc_mm"].astype(np.float64).to_numpy()), u, np.nan)
        return u

    def contributions(self, row: pd.Series) -> dict[str, float]:
        x = row[self.features].astype(np.float64).to_numpy()
        z = np.nan_to_num((x - np.asarray(self.mean)) / np.asarray(self.scale))
        return dict(zip(self.features, z * np.asarray(self.coef)))

    def implausible(self, row: pd.Series) -> str:
        """The first plausibility signal outside its range, as a reason ('' when none)."""
        for c, (lo, hi) in self.ranges.items():
            v = float(row.get(c, np.nan))
            if not math.isfinite(v) and c in ("axis_ratio", "size_frac", "ring_contrast"):
                continue  # no ellipse: the measurement has failed already
            if not math.isfinite(v) or v < lo or v > hi:
                low, high = GATE_WORDS.get(c, (f"{c} too low", f"{c} too high"))
                words = "signal missing" if not math.isfinite(v) else (low if v < lo else high)
                return f"not like fetal-head ultrasound: {words} ({c} {v:.3g} outside [{lo:.3g}, {hi:.3g}])"
        return ""

    def assess(self, feats: pd.DataFrame, hc_mm: np.ndarray, measured: np.ndarray) -> pd.DataFrame:
        """``uncertainty``, ``hc_half_width_mm``, ``flag`` and ``reason`` for each row
        (``measured``: a prediction exists; unmeasured rows are ``failed`` with reason ''). A
        row without a head size has no uncertainty (:meth:`uncertainty`), so no interval, and
        is judged by the outline and plausibility rules alone."""
        u = self.uncertainty(feats)
        half = self.factor(hc_mm) * u
        flags, reasons = [], []
        for i, (_, row) in enumerate(feats.iterrows()):
            if not measured[i]:
                flags.append("failed")
                reasons.append("")
                continue
            why = self.implausible(row)
            if why:
                flags.append("failed")
                reasons.append(why)
            elif float(row.get(WEAK_RING_SIGNAL, np.nan)) < self.weak_ring_below:
                flags.append("uncertain")
                reasons.append(f"weak skull outline: {WEAK_RING_SIGNAL} {float(row[WEAK_RING_SIGNAL]):.2g} < {self.weak_ring_below:.2g}")
            elif u[i] > self.uncertain_threshold_mm:
                top = max(self.contributions(row).items(), key=lambda kv: kv[1])
                flags.append("uncertain")
                reasons.append(f"expected |HC error| {u[i]:.2g} mm > {self.uncertain_threshold_mm:.2g} mm, mostly from {top[0]}")
            else:
                flags.append("ok")
                reasons.append("")
        return pd.DataFrame({"uncertainty": u, "hc_half_width_mm": half, "flag": flags, "reason": reasons}, index=feats.index)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Triage":
        """From :meth:`as_dict`; a model file written before the per-band factors has one factor."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d or f.name not in ("band_edges_mm", "band_factors")})


def nested_triage(feats: pd.DataFrame, abs_err_mm: np.ndarray, hc_mm: np.ndarray, folds: np.ndarray, measured: np.ndarray, **kw) -> pd.DataFrame:
    """Out-of-fold triage: each fold assessed by a combiner fitted on the other folds only."""
    out = []
    for k in sorted(set(folds)):
        test = folds == k
        comb = Triage.fit(feats[~test].reset_index(drop=True), np.asarray(abs_err_mm)[~test], groups=np.asarray(folds)[~test], **kw)
        out.append(comb.assess(feats[test], np.asarray(hc_mm)[test], np.asarray(measured)[test]))
    return pd.concat(out).reindex(feats.index)
