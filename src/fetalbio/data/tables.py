"""Readers of the tables the data stages write (light imports: later stages use these)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fetalbio import POINT_COLUMNS


def read_clean(path: Path) -> pd.DataFrame:
    """Read a cleaned label table written by the ``clean_labels`` stage."""
    df = pd.read_csv(path, dtype={"image_name": str, "subject_id": str, "mask_path": str, "near_duplicate_of": str, "flags": str, "conversions": str})
    for c in ("mask_path", "near_duplicate_of", "flags", "conversions"):
        df[c] = df[c].fillna("")
    needed = ["image_name", "image_path", "subject_id", *POINT_COLUMNS, "weight"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a cleaned label table, missing columns {missing}")
    return df
