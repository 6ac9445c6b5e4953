"""Cross-validation summary: mean ± std of per-fold values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def summarize_over_folds(df: pd.DataFrame, value_cols: Sequence[str], fold_col: str = "fold") -> dict[str, dict[str, float]]:
    """Mean and standard deviation across folds of each column in ``value_cols``.

    ``df`` may hold one row per fold (e.g. a metric per fold) or several rows per fold (e.g.
    per-case errors): rows are first averaged within each fold (NaN skipped), then the per-fold
    values are summarised. ``std`` is the sample SD across folds (ddof=1; NaN with one fold).

    Returns ``{col: {"mean": ..., "std": ..., "n_folds": ...}}`` where ``n_folds`` counts the
    folds with a finite value for that column.
    """
    missing = [c for c in [fold_col, *value_cols] if c not in df.columns]
    if missing:
        raise KeyError(f"columns not in frame: {missing}")
    per_fold = df.groupby(fold_col, sort=True)[list(value_cols)].mean()
    out: dict[str, dict[str, float]] = {}
    for col in value_cols:
        v = per_fold[col].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        out[col] = {
            "mean": float(v.mean()) if v.size else float("nan"),
            "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
            "n_folds": int(v.size),
        }
    return out
