"""The image types the io layer and its DICOM half (:mod:`fetalbio.io_dicom`) share: what a read
returns and the error it raises. A module of its own so that neither half imports the other for
them (``io`` imports ``io_dicom`` only when a file is DICOM)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class ImageReadError(ValueError):
    """A file that is missing, empty or not a decodable image."""


@dataclass(frozen=True)
class PixelSize:
    """The size of a pixel in mm (NaN when unknown), where it came from (``option``, ``csv``,
    ``dicom-us-region``, ``dicom-pixel-spacing`` or ``none``) and, when there is none or the
    file's was refused, why (``note``)."""

    mm: float
    source: str = "none"
    note: str = ""


@dataclass(frozen=True)
class FrameRef:
    """One frame (``frame`` from 1) of a multi-frame file: what ``predict`` names ``file.dcm:N``."""

    path: Path
    frame: int


@dataclass(frozen=True)
class LoadedImage:
    """An 8-bit single-channel image and the conversions applied to get it.

    ``dicom``: for a DICOM file, what it says about the image (UIDs for a report that refers to
    it, the pixel-size calibration: ``dicom.pixel_size(centre, box)``), an
    :class:`fetalbio.io_dicom.DicomSource`; None for other formats."""

    pixels: np.ndarray  # (H, W) uint8
    conversions: tuple[str, ...]
    dicom: Any = None

    @property
    def size(self) -> tuple[int, int]:
        """(W, H)"""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])
