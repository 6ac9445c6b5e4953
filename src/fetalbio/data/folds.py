"""Subject-grouped, head-size-stratified K-fold assignment (a pure function of table + seed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


def head_size(table: pd.DataFrame) -> pd.Series:
    """Head size used for stratification: reference HC (mm) where known, else the OFD length
    in mm where spacing is known, else the OFD length in px (on a comparable scale per dataset)."""
    ofd_px = np.hypot(table["ofd_2_x"] - table["ofd_1_x"], table["ofd_2_y"] - table["ofd_1_y"])
    size = table["hc_mm"].astype(float).copy() if "hc_mm" in table else pd.Series(np.nan, index=table.index)
    ofd_mm = ofd_px * table["pixel_size_mm"].astype(float)
    size = size.fillna(ofd_mm * np.pi * 0.9)  # ~ HC of an ellipse with b/a = 0.8, only for ranking
    return size.fillna(ofd_px)


def assign_folds(table: pd.DataFrame, k: int, size_bins: int, seed: int) -> pd.DataFrame:
    """Return ``image_name, subject_id, size_bin, fold`` for every row.

    Folds come from sklearn's ``StratifiedGroupKFold(shuffle=True, random_state=seed)``, grouped
    by ``subject_id`` (no subject on both sides of a split) and stratified by head-size quantile
    bins. Raises ValueError when there are fewer subjects than folds.
    """
    n_subjects = table["subject_id"].nunique()
    if n_subjects < k:
        raise ValueError(f"cannot build {k} subject-grouped folds from {n_subjects} subjects")
    size = head_size(table)
    bins = min(size_bins, max(1, n_subjects // k))
    y = pd.qcut(size.rank(method="first"), q=bins, labels=False) if bins > 1 else pd.Series(0, index=table.index)
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.full(len(table), -1, dtype=int)
    for f, (_, test_idx) in enumerate(sgkf.split(np.zeros(len(table)), y.to_numpy(), groups=table["subject_id"].to_numpy())):
        fold[test_idx] = f
    assert (fold >= 0).all()
    return pd.DataFrame({"image_name": table["image_name"].to_numpy(), "subject_id": table["subject_id"].to_numpy(), "size_bin": y.to_numpy().astype(int), "fold": fold})


def fold_summary(folds: pd.DataFrame, table: pd.DataFrame) -> dict:
    """Per-fold counts (images, subjects, head-size bins) for the metrics file."""
    size = head_size(table).to_numpy()
    out = {}
    for f, grp in folds.groupby("fold"):
        out[f"fold{f}"] = {
            "images": int(len(grp)),
            "subjects": int(grp["subject_id"].nunique()),
            "mean_head_size": round(float(np.mean(size[grp.index])), 3),
            "size_bins": {str(b): int(c) for b, c in grp["size_bin"].value_counts().sort_index().items()},
        }
    return out
