"""Ingest: both layouts, and every validation rule with its message or recorded drop."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fetalbio import POINT_COLUMNS
from fetalbio.config import DataConfig
from fetalbio.data.ingest import IngestError, ingest, read_ingested
from fetalbio.data.tables import subject_from_name
from fetalbio.io import UnsafePathError, safe_join


def _edit_csv(root: Path, fn) -> None:
    lm = pd.read_csv(root / "landmarks.csv", dtype=str)
    fn(lm)
    lm.to_csv(root / "landmarks.csv", index=False)


def test_challenge_layout_ingests_every_row(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    res = ingest(data_cfg, tmp_path / "out")
    lm = pd.read_csv(synth_root / "landmarks.csv")
    assert len(res.table) == len(lm) == res.counts["rows_kept"]
    assert res.counts["rows_dropped"] == 0 and res.dropped.empty
    t = res.table.set_index("image_name")
    np.testing.assert_allclose(t.loc[lm.image_name, list(POINT_COLUMNS)].to_numpy(), lm[list(POINT_COLUMNS)].to_numpy())
    assert (t["mask_path"] != "").all() and t["pixel_size_mm"].notna().all() and t["hc_mm"].notna().all()
    assert t.loc["001_2HC.png", "subject_id"] == "001"
    assert all(len(h) == 64 for h in t["image_sha256"])
    for p in t["image_path"]:
        assert (tmp_path / "out" / p).is_file()
    assert t["points_source"].str.startswith("landmarks.csv:").all()


def test_subject_id_from_name_and_override(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    assert subject_from_name("010_2HC.png") == "010"
    assert subject_from_name("patientA.png") == "patientA"
    _edit_csv(synth_root, lambda lm: lm.insert(1, "subject_id", ["S" + n[:1] for n in lm["image_name"]]))
    res = ingest(data_cfg, tmp_path / "out")
    assert set(res.table["subject_id"]) == {"S0"}


def test_missing_and_unreadable_images_listed_with_line(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    (synth_root / "images" / "000_HC.png").unlink()
    (synth_root / "images" / "001_HC.png").write_bytes(b"not a png at all")
    (synth_root / "images" / "002_HC.png").write_bytes(b"")
    with pytest.raises(IngestError) as ei:
        ingest(data_cfg, tmp_path / "out")
    msg = str(ei.value)
    assert len(ei.value.issues) == 3  # all offending rows, not just the first
    assert "landmarks.csv line 2, column image_name [000_HC.png]" in msg and "file not found" in msg
    assert "not a decodable image" in msg and "empty file (0 bytes)" in msg
    assert not (tmp_path / "out").exists()


def test_bad_coordinates(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    def corrupt(lm):
        lm.loc[0, "ofd_1_x"] = "abc"
        lm.loc[1, "bpd_2_y"] = ""
        lm.loc[2, "ofd_2_x"] = "-40"
        lm.loc[3, "bpd_1_y"] = "5000"

    _edit_csv(synth_root, corrupt)
    with pytest.raises(IngestError) as ei:
        ingest(data_cfg, tmp_path / "out")
    by_col = {(i.line, i.column): i.reason for i in ei.value.issues}
    assert "non-numeric coordinate 'abc'" in by_col[(2, "ofd_1_x")]
    assert "missing (NaN)" in by_col[(3, "bpd_2_y")]
    assert "outside the image" in by_col[(4, "ofd_2_x")]
    assert "outside the image" in by_col[(5, "bpd_1_y")]


def test_drop_policy_records_every_drop(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    _edit_csv(synth_root, lambda lm: lm.__setitem__("ofd_1_x", ["zz"] + list(lm["ofd_1_x"][1:])))
    (synth_root / "images" / "003_HC.png").unlink()
    res = ingest(dataclasses.replace(data_cfg, on_error="drop"), tmp_path / "out")
    assert res.counts["rows_dropped"] == 2
    assert set(res.dropped["image_name"]) == {"000_HC.png", "003_HC.png"}
    assert set(res.dropped.columns) == {"file", "line", "column", "image_name", "reason"}
    assert "000_HC.png" not in set(res.table["image_name"])


def test_missing_or_misspelled_columns(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    lm = pd.read_csv(synth_root / "landmarks.csv").rename(columns={"bpd_2_y": "bdp_2_y"})
    lm.to_csv(synth_root / "landmarks.csv", index=False)
    with pytest.raises(IngestError, match=r"bpd_2_y.*did you mean 'bdp_2_y'"):
        ingest(data_cfg, tmp_path / "out")


def test_duplicate_names(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    lm = pd.read_csv(synth_root / "landmarks.csv")
    pd.concat([lm, lm.iloc[[0]]]).to_csv(synth_root / "landmarks.csv", index=False)
    with pytest.raises(IngestError) as ei:
        ingest(data_cfg, tmp_path / "out")
    dups = [i for i in ei.value.issues if "duplicate" in i.reason]
    assert [i.line for i in dups] == [2, len(lm) + 2]


@pytest.mark.parametrize("name", ["../escape.png", "/etc/passwd", "images/../../x.png", "C:\\x.png"])
def test_names_escaping_root_refused(synth_root: Path, data_cfg: DataConfig, tmp_path: Path, name: str) -> None:
    _edit_csv(synth_root, lambda lm: lm.__setitem__("image_name", [name] + list(lm["image_name"][1:])))
    with pytest.raises(IngestError, match="escapes the data root|absolute image name"):
        ingest(data_cfg, tmp_path / "out")


def test_symlink_outside_root_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    cv2.imwrite(str(outside), np.zeros((8, 8), np.uint8))
    os.symlink(outside, root / "images" / "link.png")
    with pytest.raises(UnsafePathError, match="outside the data root"):
        safe_join(root / "images", "link.png")
    assert safe_join(root / "images", "ok.png") == root / "images" / "ok.png"


def test_16bit_and_colour_converted_and_recorded(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    img = cv2.imread(str(synth_root / "images" / "000_HC.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(synth_root / "images" / "000_HC.png"), img.astype(np.uint16) * 257)
    cv2.imwrite(str(synth_root / "images" / "001_HC.png"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    res = ingest(data_cfg, tmp_path / "out")
    t = res.table.set_index("image_name")
    assert t.loc["000_HC.png", "conversions"] == "16bit_to_8bit"
    assert t.loc["001_HC.png", "conversions"] == "rgb_to_gray"
    assert res.counts["converted_16bit"] == 1 and res.counts["converted_colour"] == 1
    back = cv2.imread(str(tmp_path / "out" / t.loc["000_HC.png", "image_path"]), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.ndim == 2
    np.testing.assert_array_equal(back, img)


def test_mask_size_mismatch(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    cv2.imwrite(str(synth_root / "masks" / "004_HC.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(IngestError, match=r"masks/004_HC.png.*mask size 10x10 differs from image size 200x140"):
        ingest(data_cfg, tmp_path / "out")


def test_csv_with_bom_semicolons_and_spaces(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    lm = pd.read_csv(synth_root / "landmarks.csv")
    text = lm.to_csv(index=False, sep=";").replace(";", " ; ")
    (synth_root / "landmarks.csv").write_text("\ufeff" + text, encoding="utf-8")
    res = ingest(data_cfg, tmp_path / "out")
    assert len(res.table) == len(lm)


def test_bad_spacing_rows_reported(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    ref = pd.read_csv(synth_root / "hc18_reference.csv", dtype=str)
    ref.loc[0, "pixel_size_mm"] = "-1"
    ref.to_csv(synth_root / "hc18_reference.csv", index=False)
    with pytest.raises(IngestError, match=r"hc18_reference.csv line 2, column pixel_size_mm"):
        ingest(data_cfg, tmp_path / "out")
    res = ingest(dataclasses.replace(data_cfg, on_error="drop"), tmp_path / "out")
    assert res.counts["without_spacing"] == 1 and len(res.dropped) == 1


def test_unknown_layout(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="unknown layout"):
        ingest(DataConfig(root=str(tmp_path / "empty")), tmp_path / "out")


def test_hc18_layout_points_from_annotation_ellipse(tmp_path: Path) -> None:
    from fetalbio.data.synthetic import make_hc18_dataset

    ellipses = make_hc18_dataset(tmp_path / "hc18", n_images=4)
    res = ingest(DataConfig(root=str(tmp_path / "hc18")), tmp_path / "out")
    assert res.counts["layout"] == "hc18" and len(res.table) == 4
    for (_, row), e in zip(res.table.iterrows(), ellipses):
        pts = row[list(POINT_COLUMNS)].to_numpy(dtype=float).reshape(4, 2)
        assert abs(np.linalg.norm(pts[1] - pts[0]) - 2 * e.a) < 2.0  # OFD = major axis
        assert abs(np.linalg.norm(pts[3] - pts[2]) - 2 * e.b) < 2.0
        mask = cv2.imread(str(tmp_path / "out" / row["mask_path"]), cv2.IMREAD_GRAYSCALE) > 0
        assert abs(mask.sum() / (np.pi * e.a * e.b) - 1) < 0.05
        assert row["pixel_size_mm"] == 0.15


def test_ingested_table_round_trip(data_cfg: DataConfig, tmp_path: Path) -> None:
    res = ingest(data_cfg, tmp_path / "out")
    res.table.to_csv(tmp_path / "out" / "table.csv", index=False)
    back = read_ingested(tmp_path / "out" / "table.csv")
    assert list(back["image_name"]) == list(res.table["image_name"])
    assert back["subject_id"].iloc[0] == "000"  # leading zeros kept: read as text


def test_empty_pixel_size_of_a_png_is_reported(synth_root: Path, data_cfg: DataConfig, tmp_path: Path) -> None:
    ref = pd.read_csv(synth_root / "hc18_reference.csv", dtype=str)
    ref.loc[1, "pixel_size_mm"] = ""
    ref.to_csv(synth_root / "hc18_reference.csv", index=False)
    with pytest.raises(IngestError, match=r"hc18_reference.csv line 3, column pixel_size_mm.*empty only for a DICOM file"):
        ingest(data_cfg, tmp_path / "out")
    res = ingest(dataclasses.replace(data_cfg, on_error="drop"), tmp_path / "out")
    assert res.counts["without_spacing"] == 1 and len(res.dropped) == 1
