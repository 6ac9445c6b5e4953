"""Score one variant's out-of-fold predictions (no torch; no model loading).

References:

* **cleaned labels** — the canonical points of ``clean_labels``; landmark metrics use only rows
  the audit trusts (``weight > 0``), so a point the audit flagged does not count as an error;
* **sonographer** — ``hc_mm`` (HC18 reference) on every image that has it, and BPD/OFD as the
  minor/major axes of the ellipse fitted to the sonographer mask's contour, moved inward
  uniformly until its perimeter equals that image's reference HC (the mask is filled to the
  outer edge of the drawn outline, whose centre line the HC measures: see
  :mod:`fetalbio.geometry.masks`); without a reference HC, the contour ellipse's axes as they are.

Per-image errors keep every held-out image: a failed prediction stays in the table (NaN) and is
counted in ``n_failed`` with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from fetalbio import POINT_COLUMNS, POINT_NAMES, UNC_COLUMNS
from fetalbio.geometry.ellipse import Ellipse, ellipse_from_points, ellipse_to_mask, fit_ellipse
from fetalbio.geometry.masks import perimeter_offset_px
from fetalbio.io import read_mask
from fetalbio.metrics import (
    aurc,
    bland_altman,
    bland_altman_points,
    ced_curve,
    dice,
    errors_by_tercile,
    errors_by_tilt,
    hausdorff95,
    iou,
    measurement_errors,
    mre,
    nme,
    radial_errors,
    ramanujan_hc,
    risk_coverage,
    sdr,
    summarize_over_folds,
    uncertainty_error_correlation,
)
from fetalbio.metrics.biometry import diameters_px


@dataclass
class Evaluation:
    summary: dict[str, Any]
    per_image: pd.DataFrame
    ced: pd.DataFrame
    bland_altman: pd.DataFrame
    risk_coverage: pd.DataFrame
    interval_coverage: pd.DataFrame | None = None
    by_gestation: pd.DataFrame | None = None


def triage_signals(clean: pd.DataFrame, oof: pd.DataFrame, images_root: Path, hc_mm: np.ndarray, coarse_oof: pd.DataFrame | None = None) -> pd.DataFrame:
    """The triage signals (:func:`fetalbio.triage.triage_features`) of every held-out image, in
    ``oof``'s order, from the image, the predicted ellipse, its HC (``hc_mm``, same order) and
    (for a refined method) the first stage's ellipse: the same signals ``fetalbio predict`` computes."""
    from fetalbio.io import read_gray8
    from fetalbio.triage import triage_features

    paths = clean.set_index("image_name")["image_path"]
    coarse_pts = coarse_oof.set_index("image_name")[list(POINT_COLUMNS)] if coarse_oof is not None else None
    rows = []
    for (_, r), hc in zip(oof.iterrows(), np.asarray(hc_mm, dtype=np.float64)):
        img = read_gray8(Path(images_root) / paths[r["image_name"]]).pixels
        pts = r[list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 2)
        e = _ellipse_or_none(pts) if r["status"] == "ok" else None
        c = _ellipse_or_none(coarse_pts.loc[r["image_name"]].to_numpy(dtype=np.float64).reshape(4, 2)) if coarse_pts is not None else None
        unc = r[UNC_COLUMNS].to_numpy(dtype=np.float64)
        rows.append(triage_features(img, e, c, float(r.get("fit_residual_px", np.nan)), float(np.nanmean(unc)) if np.isfinite(unc).any() else np.nan, float(hc)))
    return pd.DataFrame(rows)


def _ellipse_or_none(pts: np.ndarray) -> Ellipse | None:
    if not np.all(np.isfinite(pts)):
        return None
    try:
        return ellipse_from_points(pts)
    except ValueError:
        return None


# Reference-HC bins of the results by gestation (mm): < 100, 100-150, ..., > 300.
HC_BIN_EDGES_MM = (100.0, 150.0, 200.0, 250.0, 300.0)
HC_BIN_LABELS = ("<100", "100-150", "150-200", "200-250", "250-300", ">300")
LARGE_HEAD_MM = 200.0


def hc_bin(ref_hc_mm) -> pd.Series:
    """The HC bin label of each reference HC ('' where there is none)."""
    ref = pd.Series(np.asarray(ref_hc_mm, dtype=np.float64))
    idx = np.searchsorted(np.asarray(HC_BIN_EDGES_MM), ref.to_numpy(), side="right")
    return pd.Series(np.where(ref.notna(), np.asarray(HC_BIN_LABELS, dtype=object)[np.clip(idx, 0, len(HC_BIN_LABELS) - 1)], ""))


def _group_row(g: pd.DataFrame) -> dict[str, Any]:
    """HC agreement of one group of per-image rows (failed rows counted, not averaged)."""
    ok = g[np.isfinite(g["hc_err_mm"])]
    err = ok["hc_err_mm"].to_numpy(dtype=np.float64)
    row: dict[str, Any] = {"n": int(len(g)), "n_failed": int(len(g) - len(ok)),
                           "mae_mm": float(np.mean(np.abs(err))) if len(err) else np.nan,
                           "bias_mm": float(np.mean(err)) if len(err) else np.nan}
    sd = float(np.std(err, ddof=1)) if len(err) > 1 else np.nan
    row["loa_low_mm"], row["loa_high_mm"] = row["bias_mm"] - 1.96 * sd, row["bias_mm"] + 1.96 * sd
    row["within_3mm"] = float(np.mean(np.abs(err) <= 3.0)) if len(err) else np.nan
    if "hc_mm_low" in g.columns:
        covered = (ok["ref_hc_mm"] >= ok["hc_mm_low"]) & (ok["ref_hc_mm"] <= ok["hc_mm_high"])
        row["interval_coverage"] = float(covered.mean()) if len(ok) else np.nan
        row["n_refused"] = int(g["flag_reason"].fillna("").str.startswith("not like fetal-head").sum())
        row["n_ok_over_10mm"] = int(((ok["flag"] == "ok") & (ok["hc_abs_err_mm"] > 10.0)).sum())
    return row


def by_gestation(pi: pd.DataFrame) -> pd.DataFrame:
    """HC MAE, bias, 95 % limits (and, with the triage, interval coverage, refusals, large
    errors flagged ``ok``) per source and per reference-HC bin: ``group`` (source|hc_bin),
    ``value``, then the numbers. Rows without a reference HC are left out."""
    has_ref = pi[np.isfinite(pi["ref_hc_mm"].to_numpy(dtype=np.float64))].copy()
    has_ref["hc_bin"] = hc_bin(has_ref["ref_hc_mm"]).to_numpy()
    rows = [{"group": "all", "value": "all", **_group_row(has_ref)}]
    if "source" in has_ref.columns:
        rows += [{"group": "source", "value": str(v), **_group_row(g)} for v, g in has_ref.groupby("source", sort=True)]
    rows += [{"group": "hc_bin", "value": b, **_group_row(has_ref[has_ref["hc_bin"] == b])} for b in HC_BIN_LABELS if (has_ref["hc_bin"] == b).any()]
    large = has_ref["ref_hc_mm"] >= LARGE_HEAD_MM
    if large.any():  # the later heads together (the whole-pregnancy target is set on them)
        rows.append({"group": "hc_range", "value": f">={LARGE_HEAD_MM:.0f}", **_group_row(has_ref[large])})
    return pd.DataFrame(rows)


def triage_metrics(pi: pd.DataFrame, defer_share: float = 0.1, big_error_mm: float = 4.0) -> tuple[dict[str, Any], pd.DataFrame]:
    """How well the out-of-fold triage (columns of :func:`evaluate`) picks out the errors."""
    from sklearn.metrics import roc_auc_score

    m = pi[np.isfinite(pi["hc_abs_err_mm"])]
    u, err = m["triage_uncertainty"].to_numpy(), m["hc_abs_err_mm"].to_numpy()
    big = err > big_error_mm
    order = np.argsort(-u, kind="stable")
    keep = order[int(round(defer_share * len(order))):]
    mae_all, mae_kept = float(np.mean(err)), float(np.mean(err[keep])) if len(keep) else float("nan")
    covered = (m["ref_hc_mm"] >= m["hc_mm_low"]) & (m["ref_hc_mm"] <= m["hc_mm_high"])
    flagged = m["flag"] == "uncertain"
    terc = pd.qcut(m["ref_hc_mm"], 3, labels=["small", "middle", "large"]) if len(m) >= 3 else pd.Series(["all"] * len(m), index=m.index)
    cov = covered.groupby(terc, observed=True).agg(["mean", "size"]).reset_index()
    cov.columns = ["hc_tercile", "coverage", "n"]
    cov["hc_tercile"] = cov["hc_tercile"].astype(str)
    out = {
        "spearman_rho": uncertainty_error_correlation(u, err)["spearman_rho"],
        f"auroc_error_over_{big_error_mm:g}mm": float(roc_auc_score(big, u)) if 0 < big.sum() < len(big) else float("nan"),
        "n_error_over_4mm": int(big.sum()),
        "defer_share": defer_share,
        "mae_all_mm": mae_all,
        "mae_after_deferral_mm": mae_kept,
        "mae_cut_by_deferral": 1.0 - mae_kept / mae_all if mae_all > 0 else float("nan"),
        "interval_coverage": float(covered.mean()),
        "interval_coverage_by_tercile": dict(zip(cov["hc_tercile"], cov["coverage"].astype(float))),
        "interval_mean_width_mm": float(np.mean(m["hc_mm_high"] - m["hc_mm_low"])),
        "uncertain_share": float(flagged.mean()),
        "uncertain_with_error_over_4mm": float(big[flagged.to_numpy()].mean()) if flagged.any() else float("nan"),
        "failed_share": float((pi["flag"] == "failed").mean()),
        "implausible_measured": int(((m["flag"] == "failed")).sum()),
        "refused_as_not_ultrasound": int(pi["flag_reason"].fillna("").str.startswith("not like fetal-head").sum()),
        "ok_with_error_over_10mm": int(((m["flag"] == "ok") & (err > 10.0)).sum()),
    }
    return out, cov


def _mask_axes_px(mask01: np.ndarray, hc_px: float = float("nan")) -> tuple[float, float, float]:
    """(major, minor) full axes (px) of the ellipse fitted to a mask's outer contour, and the
    tilt of its major axis from the image horizontal in degrees (0-90); with a finite reference
    perimeter ``hc_px``, both semi-axes moved by the same amount so that the ellipse's perimeter
    is ``hc_px`` (the reference's own BPD/OFD)."""
    contours, _ = cv2.findContours(mask01.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.nan, np.nan, np.nan
    c = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    e = fit_ellipse(c)
    d = perimeter_offset_px(Ellipse(0.0, 0.0, e.a, e.b, 0.0), hc_px) if np.isfinite(hc_px) else 0.0
    tilt = float(np.degrees(e.theta)) % 180.0
    return 2 * (e.a - d), 2 * (e.b - d), min(tilt, 180.0 - tilt)


def _has_landmarks(df: pd.DataFrame) -> np.ndarray:
    """Whether each row has real landmark labels (tables from before sources existed: all)."""
    if "has_landmarks" not in df.columns:
        return np.ones(len(df), dtype=bool)
    return df["has_landmarks"].astype(str).str.lower().isin(["true", "1"]).to_numpy()


def per_image_table(clean: pd.DataFrame, oof: pd.DataFrame, images_root: Path, model_dir: Path) -> pd.DataFrame:
    """One row per held-out image: predicted and reference measurements, errors, Dice."""
    df = clean.merge(oof, on="image_name", how="inner", suffixes=("_ref", ""), validate="one_to_one")
    if len(df) != len(oof):
        raise ValueError(f"{len(oof) - len(df)} predicted images are not in the cleaned table")
    ref = df[[f"{c}_ref" for c in POINT_COLUMNS]].to_numpy(dtype=np.float64).reshape(-1, 4, 2)
    pred = df[list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, 4, 2)
    spacing = df["pixel_size_mm"].to_numpy(dtype=np.float64)
    err = radial_errors(pred, ref, spacing)
    out = pd.DataFrame({"image_name": df["image_name"], "fold": df["fold"], "status": df["status"], "reason": df["reason"].fillna(""),
                        "label_trusted": (df["weight"].to_numpy() > 0) & _has_landmarks(df), "pixel_size_mm": spacing,
                        "source": df["source"].fillna("") if "source" in df.columns else ""})
    for k, p in enumerate(POINT_NAMES):
        out[f"err_{p}_px"] = err["px"][:, k]
        out[f"err_{p}_mm"] = err["mm"][:, k] if err["mm"] is not None else np.nan
    ofd_p, bpd_p = diameters_px(pred)
    ofd_r, bpd_r = diameters_px(ref)
    out["pred_ofd_mm"], out["pred_bpd_mm"] = ofd_p * spacing, bpd_p * spacing
    out["pred_hc_mm"] = ramanujan_hc(out["pred_ofd_mm"].to_numpy(), out["pred_bpd_mm"].to_numpy())
    out["label_ofd_mm"], out["label_bpd_mm"] = ofd_r * spacing, bpd_r * spacing
    out["label_hc_mm"] = ramanujan_hc(out["label_ofd_mm"].to_numpy(), out["label_bpd_mm"].to_numpy())
    out["ref_hc_mm"] = df["hc_mm"].to_numpy(dtype=np.float64)
    out["uncertainty"] = df[UNC_COLUMNS].to_numpy(dtype=np.float64).mean(axis=1)
    n = len(df)
    ref_ofd, ref_bpd, ref_tilt = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    ell_dice, m_dice, m_iou, m_hd = (np.full(n, np.nan) for _ in range(4))
    for i, r in enumerate(df.itertuples(index=False)):
        sono = read_mask(images_root / r.mask_path_ref, optional=True) if isinstance(r.mask_path_ref, str) and r.mask_path_ref else None
        if sono is None:
            continue
        a, b, ref_tilt[i] = _mask_axes_px(sono, float(out["ref_hc_mm"].iat[i]) / spacing[i])
        ref_ofd[i], ref_bpd[i] = a * spacing[i], b * spacing[i]
        if np.all(np.isfinite(pred[i])):
            e = ellipse_from_points(pred[i])
            ell_dice[i] = dice(ellipse_to_mask(e, (sono.shape[1], sono.shape[0])), sono)
        if isinstance(r.mask_path, str) and r.mask_path:
            pm = read_mask(model_dir / r.mask_path, optional=True)
            if pm is not None:
                m_dice[i], m_iou[i] = dice(pm, sono), iou(pm, sono)
                m_hd[i] = hausdorff95(pm, sono, spacing_mm=spacing[i] if np.isfinite(spacing[i]) else 1.0)
    out["ref_ofd_mm"], out["ref_bpd_mm"], out["ref_tilt_deg"] = ref_ofd, ref_bpd, ref_tilt
    out["ellipse_dice"], out["mask_dice"], out["mask_iou"], out["mask_hd95_mm"] = ell_dice, m_dice, m_iou, m_hd
    out["hc_err_mm"] = out["pred_hc_mm"] - out["ref_hc_mm"]
    out["hc_abs_err_mm"] = out["hc_err_mm"].abs()
    return out


def _rounded(d: Any, nd: int = 5) -> Any:
    if isinstance(d, dict):
        return {k: _rounded(v, nd) for k, v in d.items()}
    if isinstance(d, list):
        return [_rounded(v, nd) for v in d]
    if isinstance(d, float):
        return round(d, nd) if np.isfinite(d) else None
    return d


def evaluate(per_image: pd.DataFrame, family: str, sdr_thresholds_mm: list[float], signals: pd.DataFrame | None = None,
             scores_masks: bool | None = None) -> Evaluation:  # long: the summary built in the order of the JSON it writes, each metric one call
    """Summary metrics (and plot data) from :func:`per_image_table`'s output; with the triage
    ``signals`` (:func:`triage_signals`, same row order) also the nested out-of-fold triage
    (uncertainty, 90 % interval, flag) and how well it picks out the errors. ``family``: the
    registry's (landmark | segmentation); ``scores_masks``: the method outputs masks (a
    segmentation variant, or any refined one): Dice, IoU, HD95 too (default: segmentation)."""
    scores_masks = family == "segmentation" if scores_masks is None else scores_masks
    pi = per_image.copy()
    triage, interval_cov, skipped = None, None, ""
    if signals is not None:
        from fetalbio.triage import nested_triage

        measured = (pi["status"] == "ok").to_numpy() & np.isfinite(pi["pred_hc_mm"].to_numpy())
        try:
            tri = nested_triage(signals.reset_index(drop=True), pi["hc_abs_err_mm"].to_numpy(), pi["pred_hc_mm"].to_numpy(),
                                pi["fold"].to_numpy(), measured).set_index(pi.index)
        except ValueError as exc:  # too few measured images in some fold's complement: no triage, said so
            signals, skipped = None, str(exc)
    if signals is not None:
        pi["triage_uncertainty"] = tri["uncertainty"]
        pi["hc_mm_low"] = pi["pred_hc_mm"] - tri["hc_half_width_mm"]
        pi["hc_mm_high"] = pi["pred_hc_mm"] + tri["hc_half_width_mm"]
        pi["flag"], pi["flag_reason"] = tri["flag"], tri["reason"]
        for c in signals.columns:  # kept with the errors: `final` fits the exported combiner on them
            pi[f"sig_{c}"] = signals[c].to_numpy()
        triage, interval_cov = triage_metrics(pi)
    trusted = pi[pi["label_trusted"]]
    err_cols_mm = [f"err_{p}_mm" for p in POINT_NAMES]
    err_cols_px = [f"err_{p}_px" for p in POINT_NAMES]
    e_mm = trusted[err_cols_mm].to_numpy(dtype=np.float64)
    e_px = trusted[err_cols_px].to_numpy(dtype=np.float64)
    ofd_len = (trusted["label_ofd_mm"] / trusted["pixel_size_mm"]).to_numpy(dtype=np.float64)
    landmarks = {
        "n_images": int(len(trusted)),
        "mre_px": mre(e_px),
        "mre_mm": mre(e_mm),
        **sdr(e_mm, sdr_thresholds_mm),
        "nme_ofd": nme(e_px, ofd_len),
        "per_landmark_mre_mm": {p: mre(trusted[f"err_{p}_mm"].to_numpy()[:, None]) for p in POINT_NAMES},
    }
    vs_labels = {m: measurement_errors(trusted[f"pred_{m}_mm"].to_numpy(), trusted[f"label_{m}_mm"].to_numpy()) for m in ("bpd", "ofd", "hc")}
    vs_sono = {
        "hc": {**measurement_errors(pi["pred_hc_mm"].to_numpy(), pi["ref_hc_mm"].to_numpy()), "bland_altman": bland_altman(pi["pred_hc_mm"].to_numpy(), pi["ref_hc_mm"].to_numpy())},
        "bpd": measurement_errors(pi["pred_bpd_mm"].to_numpy(), pi["ref_bpd_mm"].to_numpy()),
        "ofd": measurement_errors(pi["pred_ofd_mm"].to_numpy(), pi["ref_ofd_mm"].to_numpy()),
    }
    # robustness to head size: HC error in the terciles of the sonographer's HC
    by_size = errors_by_tercile(pi["pred_hc_mm"].to_numpy(), pi["ref_hc_mm"].to_numpy())
    # and to head orientation (most heads lie near horizontal; the rest are rarer in training)
    tilt = pi["ref_tilt_deg"] if "ref_tilt_deg" in pi else pd.Series(np.nan, index=pi.index)
    by_tilt = errors_by_tilt(pi["pred_hc_mm"].to_numpy(), pi["ref_hc_mm"].to_numpy(), tilt.to_numpy())
    seg = {"ellipse_dice": float(np.nanmean(pi["ellipse_dice"])) if pi["ellipse_dice"].notna().any() else np.nan}
    if scores_masks:
        seg.update({
            "mask_dice": float(np.nanmean(pi["mask_dice"])),
            "mask_iou": float(np.nanmean(pi["mask_iou"])),
            "mask_hd95_mm": float(np.nanmean(pi["mask_hd95_mm"].replace(np.inf, np.nan))),
        })
    unc = {"aurc_hc_abs_err_mm": aurc(pi["uncertainty"].to_numpy(), pi["hc_abs_err_mm"].to_numpy()),
           **{f"hc_abs_err_{k}": v for k, v in uncertainty_error_correlation(pi["uncertainty"].to_numpy(), pi["hc_abs_err_mm"].to_numpy()).items()}}
    per_fold = pi.assign(
        mre_mm=pi[err_cols_mm].mean(axis=1).where(pi["label_trusted"]),
        hc_abs_err_mm=pi["hc_abs_err_mm"],
        ellipse_dice=pi["ellipse_dice"],
    )
    folds = summarize_over_folds(per_fold, ["mre_mm", "hc_abs_err_mm", "ellipse_dice"], fold_col="fold")
    failed = pi[pi["status"] != "ok"]
    gest = by_gestation(pi)
    summary = {
        "family": family,
        "n_images": int(len(pi)),
        "n_scored": {"landmarks_vs_clean_labels": int(len(trusted)), "hc_vs_sonographer": int(np.isfinite(pi["ref_hc_mm"]).sum()),
                     "masks_vs_sonographer": int(pi["mask_dice"].notna().sum()) if scores_masks else 0},
        "n_failed": int(len(failed)),
        "failure_reasons": {str(k): int(v) for k, v in failed["reason"].value_counts().items()},
        "landmarks_vs_clean_labels": landmarks,
        "measurements_vs_clean_labels": vs_labels,
        "measurements_vs_sonographer": vs_sono,
        "hc_by_reference_tercile": by_size,
        "hc_by_head_tilt": by_tilt,
        "segmentation": seg,
        "uncertainty": unc,
        "over_folds": folds,
        "hc_by_source": {r["value"]: {k: v for k, v in r.items() if k not in ("group", "value")} for r in gest[gest["group"] == "source"].to_dict("records")},
        "hc_by_bin": {r["value"]: {k: v for k, v in r.items() if k not in ("group", "value")} for r in gest[gest["group"] == "hc_bin"].to_dict("records")},
        "hc_large_heads": {r["value"]: {k: v for k, v in r.items() if k not in ("group", "value")} for r in gest[gest["group"] == "hc_range"].to_dict("records")},
    }
    if triage is not None:
        summary["triage"] = triage
    elif skipped:
        summary["triage"] = {"skipped": skipped}
    ced = ced_curve(e_mm, max_mm=10.0, step=0.1)
    ba = bland_altman_points(pi["pred_hc_mm"].to_numpy(), pi["ref_hc_mm"].to_numpy()).rename(columns={"mean": "mean_mm", "diff": "diff_mm"})
    ba.insert(0, "image_name", pi["image_name"].to_numpy())
    ba = ba[np.isfinite(ba["mean_mm"]) & np.isfinite(ba["diff_mm"])].reset_index(drop=True)  # failed rows: per_image lists them
    rc = risk_coverage(pi["triage_uncertainty" if triage is not None else "uncertainty"].to_numpy(), pi["hc_abs_err_mm"].to_numpy())
    return Evaluation(_rounded(summary), pi, ced, ba, rc, interval_cov, gest)
