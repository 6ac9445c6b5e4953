"""The io layer's readers of a skull mask and of the held-out table: they return what the code
they replaced returned (``cv2.imread(..., IMREAD_GRAYSCALE) > 127`` per caller; ``pd.read_csv``
with the text columns as str) and name the file when it cannot be read."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fetalbio.engine.run import write_heldout
from fetalbio.io import OOF_DTYPES, OOF_FILE, ImageReadError, oof_folds, read_gray8, read_mask, read_oof, read_oof_folds, write_png
from fetalbio.tasks.base import ImagePrediction

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def _old_mask(path: Path) -> np.ndarray:
    """What every mask reader did before :func:`read_mask`."""
    return (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(p.name for p in (SAMPLE / "masks").glob("*.png"))[:3])
def test_read_mask_on_sample_masks_is_the_old_reading(name: str) -> None:
    got = read_mask(SAMPLE / "masks" / name)
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1} and got.any()
    np.testing.assert_array_equal(got, _old_mask(SAMPLE / "masks" / name))


def test_read_mask_threshold_and_pixel_kinds(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    files = {"gray.png": ramp, "colour.png": np.dstack([ramp, ramp[:, ::-1], ramp]), "deep.png": ramp.astype(np.uint16) * 257}
    for name, px in files.items():
        cv2.imwrite(str(tmp_path / name), px)
        np.testing.assert_array_equal(read_mask(tmp_path / name), _old_mask(tmp_path / name))
    assert read_mask(tmp_path / "gray.png")[0].tolist() == [0] * 128 + [1] * 128  # > 127, as every caller had


def test_read_mask_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    for name in ("missing.png", "corrupt.png"):
        with pytest.raises(ImageReadError, match=name):
            read_mask(tmp_path / name)
        assert read_mask(tmp_path / name, optional=True) is None  # the callers that skip such a row


def test_read_gray8_is_cv2_gray_on_ingested_pngs(tmp_path: Path) -> None:
    """The audit and worst-case figures read table images with read_gray8: on the 8-bit gray PNGs
    that ingest writes it gives cv2.imread(IMREAD_GRAYSCALE)'s pixels."""
    img = read_gray8(sorted((SAMPLE / "images").glob("*.png"))[0]).pixels
    write_png(tmp_path / "x.png", img)
    np.testing.assert_array_equal(read_gray8(tmp_path / "x.png").pixels, cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_GRAYSCALE))


def _heldout(fold_dir: Path, names: list[str], fold: int) -> None:
    pts = np.arange(8, dtype=np.float64).reshape(4, 2)
    preds = [ImagePrediction(pts, np.full(4, np.nan), "ok", ""), ImagePrediction(np.full((4, 2), np.nan), np.full(4, np.nan), "failed", "empty_mask")]
    write_heldout(fold_dir, pd.DataFrame({"image_name": names}), preds[: len(names)], fold, with_masks=False)


def test_read_oof_keeps_text_columns(tmp_path: Path) -> None:
    _heldout(tmp_path / "fold0", ["001", "0002"], 0)
    df = read_oof(tmp_path / "fold0")
    assert (tmp_path / "fold0" / OOF_FILE).is_file() and set(OOF_DTYPES) <= set(df.columns)
    assert df["image_name"].tolist() == ["001", "0002"]  # not the numbers 1 and 2
    assert pd.isna(df.at[0, "reason"]) and df.at[1, "reason"] == "empty_mask"  # '' reads as NaN, as callers expect
    assert df["mask_path"].isna().all() and df["unc_ofd_1"].dtype == np.float64
    pd.testing.assert_frame_equal(df, pd.read_csv(tmp_path / "fold0" / "oof.csv", dtype={"image_name": str, "reason": str, "mask_path": str}))


def test_read_oof_folds_in_fold_order(tmp_path: Path) -> None:
    for k, names in ((10, ["010"]), (2, ["002"]), (1, ["001"])):
        _heldout(tmp_path / f"fold{k}", names, k)
    (tmp_path / "fold3").mkdir()  # a fold without held-out predictions is not one
    assert [p.name for p in oof_folds(tmp_path)] == ["fold1", "fold10", "fold2"]
    got = read_oof_folds(tmp_path)
    assert got["image_name"].tolist() == ["001", "010", "002"] and (got["mask_path"] == "").all()
