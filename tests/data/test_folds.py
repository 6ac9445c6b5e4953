"""Folds: grouped by subject, every row once, deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fetalbio.data.folds import assign_folds


def _table(n_subjects: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for k in range(1 + s % 3):
            rows.append({"image_name": f"{s:03d}_{k}HC.png", "subject_id": f"{s:03d}", "hc_mm": rng.uniform(50, 300), "pixel_size_mm": 0.1,
                         "ofd_1_x": 0.0, "ofd_1_y": 0.0, "ofd_2_x": 100.0, "ofd_2_y": 0.0})
    return pd.DataFrame(rows)


def test_no_subject_in_two_folds_and_every_row_once() -> None:
    t = _table()
    f = assign_folds(t, k=5, size_bins=3, seed=1)
    assert len(f) == len(t) and list(f["image_name"]) == list(t["image_name"])
    assert set(f["fold"]) == set(range(5))
    assert (f.groupby("subject_id")["fold"].nunique() == 1).all()


def test_same_seed_same_folds_other_seed_differs() -> None:
    t = _table()
    a, b, c = (assign_folds(t, 5, 3, s) for s in (1, 1, 2))
    pd.testing.assert_frame_equal(a, b)
    assert not a["fold"].equals(c["fold"])


def test_stratified_by_head_size() -> None:
    t = _table(n_subjects=60)
    f = assign_folds(t, 3, 3, seed=0)
    counts = pd.crosstab(f["fold"], f["size_bin"])
    assert (counts > 0).all().all()


def test_too_few_subjects() -> None:
    with pytest.raises(ValueError, match="cannot build 5 subject-grouped folds from 3 subjects"):
        assign_folds(_table(3), 5, 3, 0)
