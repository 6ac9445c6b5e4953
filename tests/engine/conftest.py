"""Shared fixtures of the engine tests: tiny architectures and a small synthetic clean table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import torch

from fetalbio.config import DataConfig, LabelsConfig
from fetalbio.data.ingest import ingest
from fetalbio.data.labels import audit
from fetalbio.data.synthetic import make_challenge_dataset
from fetalbio.models import arch_options

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
PARAMS = REPO / "params.yaml"

# The smallest sensible value of every arch option any registered model has; a model gets the
# subset its builder accepts (``arch_options``).
TINY_ARCH: dict[str, Any] = {
    "base_width": 4,
    "depth": 2,
    "width": 8,
    "stacks": 1,
    "blocks": 1,
    "widths": (4, 8, 16),
    "stem_width": 8,
    "modules": (1, 1, 1),
    "layers": (1, 1, 1, 1),
    "deconv_widths": (8, 8, 8),
    "hidden": 16,
    "dropout": 0.0,
    "aspp_width": 8,
    "low_level_width": 4,
    "fpn_width": 8,
    "embed_dim": 16,
    "heads": 2,
    "conv_widths": (4, 8, 8, 8, 8),
    "width_mult": 0.1,
    "depth_mult": 0.25,
}


def tiny_arch_for(model: str) -> dict[str, Any]:
    opts = arch_options(model)
    return {k: v for k, v in TINY_ARCH.items() if k in opts}


@pytest.fixture(scope="session")
def tiny_arch() -> Callable[[str], dict[str, Any]]:
    """``tiny_arch(model_name) -> arch dict`` (only options that model accepts)."""
    return tiny_arch_for


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def _clean_table(root: Path, n_subjects: int, seed: int) -> tuple[pd.DataFrame, Path]:
    make_challenge_dataset(root / "ds", n_subjects=n_subjects, images_per_subject=(1,), seed=seed)
    res = ingest(DataConfig(root=str(root / "ds")), root / "ing")
    clean = audit(res.table, root / "ing", LabelsConfig(), seed=0).clean
    return clean, root / "ing"


@pytest.fixture(scope="session")
def synth_clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    """(clean table of 16 synthetic subjects, 200x140 images, one image each; its table dir)."""
    clean, d = _clean_table(tmp_path_factory.mktemp("engine_synth"), n_subjects=16, seed=11)
    assert (clean["weight"] == 1.0).all() and (clean["mask_path"] != "").all()
    return clean, d
