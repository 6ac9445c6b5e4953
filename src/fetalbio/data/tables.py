"""Readers of the tables the data stages write (light imports: later stages use these)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fetalbio import POINT_COLUMNS

_SUBJECT_RE = re.compile(r"^(\d+)_")


def subject_from_name(image_name: str) -> str:
    """``010_2HC.png`` -> ``010``; names without a numeric prefix are their own subject (stem)."""
    base = Path(image_name).name
    m = _SUBJECT_RE.match(base)
    return m.group(1) if m else Path(base).stem


def read_clean(path: Path) -> pd.DataFrame:
    """Read a cleaned label table written by the ``clean_labels`` stage."""
    text_cols = ("mask_path", "near_duplicate_of", "flags", "conversions")
    df = pd.read_csv(path, dtype={"image_name": str, "subject_id": str, **dict.fromkeys(text_cols, str)})
    needed = ["image_name", "image_path", "subject_id", *POINT_COLUMNS, "weight", *text_cols]
    missing = [c for c in needed if c not in df.columns]
    if missing:  # checked before use: a missing column must not surface as a bare KeyError
        raise ValueError(f"{path}: not a cleaned label table, missing columns {missing}")
    for c in text_cols:
        df[c] = df[c].fillna("")
    return df
