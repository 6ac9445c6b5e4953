"""Fixtures of the DICOM tests: the sample image they are built from (``dicomkit`` builds the
files)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ``import dicomkit`` (tests run with --import-mode=importlib)

import dicomkit


@pytest.fixture(scope="session")
def png() -> Path:
    return dicomkit.sample_png()


@pytest.fixture(scope="session")
def px(png: Path) -> float:
    return dicomkit.sample_pixel_size(png)


@pytest.fixture(scope="session")
def img(png: Path) -> np.ndarray:
    return dicomkit.gray(png)
