"""Shared fixtures: small synthetic datasets with known geometry (no ../shared here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fetalbio.config import DataConfig, LabelsConfig
from fetalbio.data.synthetic import make_challenge_dataset

# helpers shared by the end-to-end tests (``import dvc_project``); tests run with --import-mode=importlib
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


@pytest.fixture
def synth_root(tmp_path: Path) -> Path:
    root = tmp_path / "synth"
    make_challenge_dataset(root, n_subjects=12, images_per_subject=(1, 2), seed=3)
    return root


@pytest.fixture
def data_cfg(synth_root: Path) -> DataConfig:
    return DataConfig(root=str(synth_root))


@pytest.fixture
def labels_cfg() -> LabelsConfig:
    return LabelsConfig()
