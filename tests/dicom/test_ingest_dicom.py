"""Ingest takes a DICOM training image's pixel size from the file when the spacing CSV gives none:
the ultrasound region around the head, else PixelSpacing (the same rules as predict)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import dicomkit
import numpy as np
import pandas as pd
import pytest

from fetalbio.config import DataConfig
from fetalbio.data.ingest import IngestError, ingest

LATE = dicomkit.REPO / "data" / "sample" / "hc18-late"


def _masks_source(root: Path, spacing_rows: list[tuple[str, str, str]]) -> DataConfig:
    """A masks-layout source: the first two later-gestation sample images, the first as DICOM
    with a 2D ultrasound region of the sample's pixel size (its mask as <stem>.png)."""
    names = sorted(p.name for p in (LATE / "images").glob("*.png"))[:2]
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    img = dicomkit.gray(LATE / "images" / names[0])
    px = float(pd.read_csv(LATE / "hc18_reference.csv").set_index("image_name").loc[names[0], "pixel_size_mm"])
    dicomkit.save(dicomkit.us_dataset(img, regions=dicomkit.whole_image_region(img, px)), root / "images" / "a.dcm")
    shutil.copy(LATE / "masks" / names[0], root / "masks" / "a.png")
    shutil.copy(LATE / "images" / names[1], root / "images" / "b.png")
    shutil.copy(LATE / "masks" / names[1], root / "masks" / "b.png")
    pd.DataFrame(spacing_rows, columns=["image_name", "pixel_size_mm", "hc_mm"]).to_csv(root / "ref.csv", index=False)
    return DataConfig(root=str(root), sources={}, layout="masks", spacing_csv="ref.csv"), px


def test_a_dicom_image_without_a_csv_pixel_size_takes_the_file_s(tmp_path: Path) -> None:
    cfg, px = _masks_source(tmp_path / "src", [("a.dcm", "", "250.0"), ("b.png", "0.15", "260.0")])
    res = ingest(cfg, tmp_path / "out")
    t = res.table.set_index("image_name")
    assert t.loc["a.dcm", "pixel_size_mm"] == pytest.approx(px, rel=1e-6) and t.loc["b.png", "pixel_size_mm"] == 0.15
    assert res.counts["pixel_size_from_dicom"] == 1 and res.counts["without_spacing"] == 0
    assert t.loc["a.dcm", "image_path"].endswith("a.png") and cv2.imread(str(tmp_path / "out" / t.loc["a.dcm", "image_path"])) is not None
    assert t.loc["a.dcm", "mask_path"] != ""


def test_the_csv_wins_over_the_file_and_a_png_needs_the_csv(tmp_path: Path) -> None:
    cfg, _ = _masks_source(tmp_path / "src", [("a.dcm", "0.2", "250.0"), ("b.png", "", "260.0")])
    with pytest.raises(IngestError, match=r"ref.csv line 3, column pixel_size_mm.*empty only for a DICOM file"):
        ingest(cfg, tmp_path / "out")
    cfg, _ = _masks_source(tmp_path / "src2", [("a.dcm", "0.2", "250.0"), ("b.png", "0.15", "260.0")])
    assert ingest(cfg, tmp_path / "out2").table.set_index("image_name").loc["a.dcm", "pixel_size_mm"] == 0.2


def test_a_dicom_file_without_a_pixel_size_is_counted_without_spacing(tmp_path: Path) -> None:
    cfg, _ = _masks_source(tmp_path / "src", [("a.dcm", "", "250.0"), ("b.png", "0.15", "260.0")])
    img = dicomkit.gray(tmp_path / "src" / "images" / "b.png")
    dicomkit.save(dicomkit.us_dataset(img), tmp_path / "src" / "images" / "a.dcm")  # no region, no PixelSpacing
    shutil.copy(tmp_path / "src" / "masks" / "b.png", tmp_path / "src" / "masks" / "a.png")
    res = ingest(cfg, tmp_path / "out")
    assert np.isnan(res.table.set_index("image_name").loc["a.dcm", "pixel_size_mm"])
    assert res.counts["without_spacing"] == 1 and res.counts["pixel_size_from_dicom"] == 0


def test_a_dicom_file_is_known_by_its_content_not_its_name(tmp_path: Path) -> None:
    """An extensionless DICOM file (as PACS exports name them) may leave the CSV's pixel size empty."""
    cfg, px = _masks_source(tmp_path / "src", [("IM0001", "", "250.0"), ("b.png", "0.15", "260.0")])
    (tmp_path / "src" / "images" / "a.dcm").rename(tmp_path / "src" / "images" / "IM0001")
    (tmp_path / "src" / "masks" / "a.png").rename(tmp_path / "src" / "masks" / "IM0001.png")
    t = ingest(cfg, tmp_path / "out").table.set_index("image_name")
    assert t.loc["IM0001", "pixel_size_mm"] == pytest.approx(px, rel=1e-6)
