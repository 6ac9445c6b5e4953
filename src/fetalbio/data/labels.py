"""Label audit: semantics by geometry, canonical endpoint order, outlier evidence, policy.

Nothing is deleted silently: every row of the input appears in the audit report with its
evidence columns, its flags and the action taken (``kept``, ``weighted`` or ``dropped``).

Evidence per row (all in the report, the cleaned table keeps them too):

``angle_deg``
    angle between the two diameters (90 for a proper cross).
``centre_offset_frac``
    distance between the two diameters' midpoints divided by the OFD length.
``ratio``
    BPD / OFD (the cephalic index).
``mahalanobis_d2``
    squared robust Mahalanobis distance of (90 - angle, centre offset, ratio) under a Minimum
    Covariance Determinant fit (sklearn ``MinCovDet``) over all rows, its covariance widened by
    an annotation-noise floor (:data:`FEATURE_NOISE_FLOOR`); flagged above the chi-square
    quantile ``mahalanobis_quantile`` (3 degrees of freedom).
``mask_dist_<point>_mm``
    signed distance of each point to the sonographer mask boundary (positive inside), where a
    mask exists; ``off_skull`` flags a row with any ``|distance| > off_skull_mm``. Without a
    pixel spacing the dataset's median spacing is used and ``spacing_assumed`` is set.
``has_landmarks``
    rows of a masks-only source have no landmark labels: their points are the axes of the
    mask's ellipse. They take no part in the geometry fit, carry no label flags and are
    ``mask_only`` rows (weight 0 unless ``derived_points: train``): segmentation and refinement
    train on them, landmark variants do not, and no landmark error is measured against them.
``near_duplicate_of``
    an earlier image of the same subject whose 64x64 thumbnail differs by a mean absolute grey
    level below ``near_duplicate_mad`` (or has the same content hash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.stats import chi2
from sklearn.covariance import MinCovDet

from fetalbio import POINT_COLUMNS, POINT_NAMES
from fetalbio.config import LabelsConfig
from fetalbio.geometry.points import canonicalize
from fetalbio.io import read_gray8, read_mask

LABEL_FLAGS = ("angle_off", "centre_off", "ratio_off", "mahalanobis", "off_skull")
ALL_FLAGS = (*LABEL_FLAGS, "near_duplicate")
_MIN_ROWS_FOR_MCD = 10


@dataclass
class AuditResult:
    clean: pd.DataFrame  # rows kept for training/evaluation, canonical points, weight column
    report: pd.DataFrame  # every input row: evidence, flags, action
    counts: dict = field(default_factory=dict)


def _geometry_features(points: np.ndarray) -> dict[str, float]:
    ofd = points[1] - points[0]
    bpd = points[3] - points[2]
    lo, lb = float(np.linalg.norm(ofd)), float(np.linalg.norm(bpd))
    if lo == 0 or lb == 0:
        return {"ofd_px": lo, "bpd_px": lb, "angle_deg": np.nan, "centre_offset_frac": np.nan, "ratio": np.nan}
    cosang = abs(float(ofd @ bpd)) / (lo * lb)
    mid_gap = float(np.linalg.norm((points[0] + points[1]) / 2 - (points[2] + points[3]) / 2))
    return {
        "ofd_px": lo,
        "bpd_px": lb,
        "angle_deg": float(np.degrees(np.arccos(np.clip(cosang, 0.0, 1.0)))),
        "centre_offset_frac": mid_gap / lo,
        "ratio": lb / lo,
    }


def _mask_distances(mask01: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed distance (px, positive inside) of each point to the largest mask contour."""
    contours, _ = cv2.findContours(mask01.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.full(len(points), np.nan)
    c = max(contours, key=cv2.contourArea)
    return np.array([cv2.pointPolygonTest(c, (float(x), float(y)), True) for x, y in points])


def _thumbnail(path: Path) -> np.ndarray:
    img = read_gray8(path).pixels  # the ingested 8-bit gray PNGs: the same pixels as cv2.imread's
    return cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)


def find_near_duplicates(table: pd.DataFrame, table_dir: Path, mad_threshold: float) -> pd.Series:
    """image_name of an earlier near-identical image of the same subject, or '' per row."""
    out = pd.Series("", index=table.index, dtype=object)
    for _, grp in table.groupby("subject_id", sort=False):
        if len(grp) < 2:
            continue
        thumbs = {i: _thumbnail(table_dir / table.at[i, "image_path"]) for i in grp.index}
        idx = list(grp.index)
        for j, b in enumerate(idx):
            for a in idx[:j]:
                same_hash = table.at[a, "image_sha256"] == table.at[b, "image_sha256"]
                if same_hash or float(np.abs(thumbs[a] - thumbs[b]).mean()) < mad_threshold:
                    out[b] = table.at[a, "image_name"]
                    break
    return out


# Annotation noise below which a deviation is not evidence (degrees, fraction of OFD, ratio):
# added to the robust covariance so that near-perfect data (tiny spread) is not over-flagged.
FEATURE_NOISE_FLOOR = np.array([2.0, 0.02, 0.02])


def robust_mahalanobis(features: np.ndarray, seed: int, noise_floor: np.ndarray = FEATURE_NOISE_FLOOR) -> np.ndarray:
    """Squared robust Mahalanobis distances under sklearn's MinCovDet.

    The distance uses the MCD location and ``covariance + diag(noise_floor**2)``. Rows with a
    non-finite feature get NaN, and so does everything when there are too few rows for MCD.
    """
    d2 = np.full(len(features), np.nan)
    ok = np.all(np.isfinite(features), axis=1)
    if ok.sum() < _MIN_ROWS_FOR_MCD:
        return d2
    x = features[ok]
    # a feature with no spread at all would make the MCD covariance singular
    jitter = np.random.default_rng(seed).normal(0.0, 1e-9, size=x.shape)
    mcd = MinCovDet(random_state=seed).fit(x + jitter)
    cov = mcd.covariance_ + np.diag(np.asarray(noise_floor, dtype=np.float64) ** 2)
    diff = x - mcd.location_
    d2[ok] = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)
    return d2


def audit(table: pd.DataFrame, table_dir: Path, cfg: LabelsConfig, seed: int = 0) -> AuditResult:  # long: the audit's checks in order (geometry, Mahalanobis, off-skull, near-duplicates) on one table
    """Audit every row of an ingest table (see module docstring); apply ``cfg.policy``."""
    rep = table.copy().reset_index(drop=True)
    if "has_landmarks" not in rep.columns:
        rep["has_landmarks"] = True
    rep["has_landmarks"] = rep["has_landmarks"].astype(str).str.lower().isin(["true", "1"])
    real = rep["has_landmarks"].to_numpy()
    raw = rep[list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, 4, 2)
    canon = np.empty_like(raw)
    feats = []
    for i, pts in enumerate(raw):
        res = canonicalize(pts)
        canon[i] = res.points
        feats.append({"renamed": res.swapped_diameters, "reordered_ofd": res.reordered_ofd, "reordered_bpd": res.reordered_bpd, **_geometry_features(res.points)})
    rep[list(POINT_COLUMNS)] = canon.reshape(-1, 8)
    rep = pd.concat([rep, pd.DataFrame(feats)], axis=1)

    spacing = rep["pixel_size_mm"].to_numpy(dtype=np.float64)
    median_spacing = float(np.nanmedian(spacing)) if np.isfinite(spacing).any() else np.nan
    rep["spacing_assumed"] = ~np.isfinite(spacing)
    eff_spacing = np.where(np.isfinite(spacing), spacing, median_spacing)

    dist_cols = [f"mask_dist_{p}_mm" for p in POINT_NAMES]
    dists = np.full((len(rep), 4), np.nan)
    for i, mp in enumerate(rep["mask_path"].fillna("")):
        mask = read_mask(table_dir / mp) if mp else None
        if mask is not None:
            dists[i] = _mask_distances(mask, canon[i]) * eff_spacing[i]
    rep[dist_cols] = dists
    rep["max_abs_mask_dist_mm"] = np.where(np.isfinite(dists).any(axis=1), np.nanmax(np.abs(np.where(np.isfinite(dists), dists, -np.inf)), axis=1), np.nan)

    x = np.stack([90.0 - rep["angle_deg"], rep["centre_offset_frac"], rep["ratio"]], axis=1).astype(np.float64)
    rep["mahalanobis_d2"] = np.nan
    rep.loc[real, "mahalanobis_d2"] = robust_mahalanobis(x[real], seed)
    d2_thr = float(chi2.ppf(cfg.mahalanobis_quantile, df=3))
    rep["near_duplicate_of"] = find_near_duplicates(rep, table_dir, cfg.near_duplicate_mad)

    flags = {
        "angle_off": (90.0 - rep["angle_deg"]).abs() > cfg.angle_tol_deg,
        "centre_off": rep["centre_offset_frac"] > cfg.centre_tol_frac,
        "ratio_off": (rep["ratio"] < cfg.ratio_min) | (rep["ratio"] > cfg.ratio_max),
        "mahalanobis": rep["mahalanobis_d2"] > d2_thr,
        "off_skull": rep["max_abs_mask_dist_mm"] > cfg.off_skull_mm,
        "near_duplicate": rep["near_duplicate_of"] != "",
    }
    # a degenerate row (zero-length diameter) has NaN geometry: flag it rather than pass it
    degenerate = rep["angle_deg"].isna()
    flags["angle_off"] |= degenerate
    for k in LABEL_FLAGS:  # derived points are not labels: nothing to flag
        flags[k] = flags[k] & real
    flag_df = pd.DataFrame(flags)
    rep["flags"] = flag_df.apply(lambda r: ";".join(k for k in ALL_FLAGS if r[k]), axis=1)
    label_flagged = flag_df[list(LABEL_FLAGS)].any(axis=1)
    dup_drop = flag_df["near_duplicate"] & (cfg.near_duplicates == "drop")

    if cfg.policy == "drop":
        action = np.where(label_flagged | dup_drop, "dropped", "kept")
        weight = np.ones(len(rep))
    elif cfg.policy == "weight":
        action = np.where(dup_drop, "dropped", np.where(label_flagged, "weighted", "kept"))
        weight = np.where(label_flagged, cfg.flagged_weight, 1.0)
    else:
        action = np.where(dup_drop, "dropped", "kept")
        weight = np.ones(len(rep))
    mask_only = ~real & (action != "dropped")
    action = np.where(mask_only, "mask_only", action)
    if cfg.derived_points == "ignore":
        weight = np.where(real, weight, 0.0)
    rep["action"] = action
    rep["weight"] = weight
    rep["severity"] = flag_df[list(LABEL_FLAGS)].sum(axis=1) + np.nan_to_num(rep["mahalanobis_d2"] / max(d2_thr, 1e-9)).clip(0, 10) / 10

    clean = rep[rep["action"] != "dropped"].drop(columns=["action", "severity"]).reset_index(drop=True)
    counts = {
        "rows_in": int(len(rep)),
        "rows_kept": int(len(clean)),
        "rows_dropped": int((rep["action"] == "dropped").sum()),
        "rows_weighted": int((rep["action"] == "weighted").sum()),
        "rows_mask_only": int((rep["action"] == "mask_only").sum()),
        "renamed_ofd_bpd": int(rep["renamed"].sum()),
        "reordered_ofd_endpoints": int(rep["reordered_ofd"].sum()),
        "reordered_bpd_endpoints": int(rep["reordered_bpd"].sum()),
        "flagged_any_label_reason": int(label_flagged.sum()),
        "flagged": {k: int(v.sum()) for k, v in flags.items()},
        "rows_with_mask": int(np.isfinite(dists).any(axis=1).sum()),
        "rows_spacing_assumed": int(rep["spacing_assumed"].sum()),
        "mahalanobis_d2_threshold": round(d2_thr, 4),
        "policy": cfg.policy,
    }
    return AuditResult(clean=clean, report=rep, counts=counts)


def draw_audit_picture(report: pd.DataFrame, table_dir: Path, out_path: Path, n_rows: int = 12) -> int:
    """Save a grid of the most severe flagged rows, points and mask outline drawn. Returns count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = report[report["flags"].str.len() > 0].sort_values("severity", ascending=False).head(n_rows)
    n = max(1, len(worst))
    ncols = min(4, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), worst.iterrows()):
        img = read_gray8(table_dir / row["image_path"]).pixels
        ax.imshow(img, cmap="gray")
        mask = read_mask(table_dir / row["mask_path"]) if row["mask_path"] else None
        if mask is not None:
            ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.8)
        pts = row[list(POINT_COLUMNS)].to_numpy(dtype=float).reshape(4, 2)
        ax.plot(pts[:2, 0], pts[:2, 1], "-o", color="red", ms=3, lw=1, label="OFD")
        ax.plot(pts[2:, 0], pts[2:, 1], "-o", color="cyan", ms=3, lw=1, label="BPD")
        for k, (x, y) in enumerate(pts):
            ax.annotate(POINT_NAMES[k].split("_")[1], (x, y), color="white", fontsize=6)
        ax.set_title(f"{row['image_name']}\n{row['flags']}", fontsize=7)
    if worst.empty:
        axes[0, 0].text(0.5, 0.5, "no flagged rows", ha="center", va="center")
    else:
        axes[0, 0].legend(loc="lower left", fontsize=6)
    fig.suptitle("Label audit: most severe flagged rows (OFD red, BPD cyan, sonographer mask yellow)", fontsize=9)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    return int(len(worst))
