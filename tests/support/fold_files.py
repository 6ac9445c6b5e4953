"""Reading a fold's networks back (``models/<variant>/fold<k>/model.pt``, a one-stage model file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fetalbio.model_file import read_model_file


def fold_stage(path: Path) -> dict[str, Any]:
    """The one stage of a fold file (role, variant, configs, state_dicts, calibration)."""
    raw = read_model_file(path)
    assert len(raw["stages"]) == 1, f"{path}: a fold file holds one stage"
    return raw["stages"][0]


def fold_weights(path: Path, member: int = 0) -> dict[str, torch.Tensor]:
    """State dict of network ``member`` (a seed ensemble's members in seed order)."""
    return fold_stage(path)["state_dicts"][member]
