"""Atomic writers for every file a stage declares (temp file + rename: a kill never leaves a
half-written output that DVC could cache)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Sorted-key, indented JSON; NaN/inf become null (valid JSON for DVC)."""
    _atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, df: pd.DataFrame, float_format: str = "%.6g") -> None:
    """CSV with a fixed float format so reruns are byte-identical."""
    _atomic_write_text(path, df.to_csv(index=False, float_format=float_format, lineterminator="\n"))


def write_text(path: Path, text: str) -> None:
    _atomic_write_text(path, text)


def write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` of ``obj`` (plain data and tensors), atomically."""
    import torch  # lazily: the metrics and reports side of the package does not need torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
