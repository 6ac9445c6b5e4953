"""``fetalbio predict`` on DICOM files with the shipped model: the HC of a DICOM equals the HC
of the same picture as PNG with the same pixel size, the pixel size comes from the file (and
from the options first), every bad file is a failed row naming it, and ``--sr`` writes
Structured Reports that hold the CSV's values and refer to the measured instance."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import dicomkit as k
import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import RLELossless
from typer.testing import CliRunner

from fetalbio.cli import app

MODEL = k.REPO / "pretrained" / "fetalbio-hc18.pt"
runner = CliRunner()
# measured from the same pixels with the same pixel size as the PNG: the same HC
SAME_AS_PNG = {"us_region.dcm": "dicom-us-region", "disguised.png": "dicom-us-region", "IM0001": "dicom-us-region", "cine.dcm:1": "dicom-us-region",
               "cine.dcm:3": "dicom-us-region", "spacing_only.dcm": "dicom-pixel-spacing", "mono1.dcm": "dicom-us-region", "rgb.dcm": "dicom-us-region",
               "ybr.dcm": "dicom-us-region", "rle.dcm": "dicom-us-region"}
BAD = {"truncated.dcm": "truncated or damaged", "no_pixels.dcm": "DICOM without pixel data", "report.dcm": "(Comprehensive SR Storage): not an image",
       "video.dcm": "unsupported transfer syntax", "sixteen.dcm": "16-bit unsigned pixels", "signed.dcm": "signed pixels"}


def predict(args: list, code: int = 0):
    if not MODEL.exists():
        pytest.skip(f"{MODEL} not present")
    res = runner.invoke(app, ["predict", "--no-progress", "--model", str(MODEL), *map(str, args)])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res


def _build(d: Path, img: np.ndarray, px: float, centre_x: int) -> None:
    h, w = img.shape
    whole = k.whole_image_region(img, px)
    k.save(k.us_dataset(img, regions=whole), d / "us_region.dcm")
    k.save(k.us_dataset(img, regions=whole), d / "disguised.png")  # DICOM content, a PNG's name
    k.save(k.us_dataset(img, regions=whole), d / "IM0001")  # no suffix, as archives export
    k.save(k.us_dataset(np.stack([img, img[:, ::-1], img]), regions=whole, frames=True), d / "cine.dcm")
    k.save(k.us_dataset(img, pixel_spacing=(px, px)), d / "spacing_only.dcm")
    k.save(k.us_dataset(img, imager_pixel_spacing=(px, px)), d / "imager_only.dcm")
    k.save(k.us_dataset(img), d / "no_calibration.dcm")
    k.save(k.us_dataset(255 - img, "MONOCHROME1", regions=whole), d / "mono1.dcm")
    k.save(k.us_dataset(k.rgb_of(img), "RGB", regions=whole), d / "rgb.dcm")
    k.save(k.us_dataset(k.ybr_full_of(k.rgb_of(img)), "YBR_FULL", regions=whole), d / "ybr.dcm")
    rle = k.us_dataset(img, regions=whole)
    rle.compress(RLELossless)  # pydicom's own encoder
    k.save(rle, d / "rle.dcm")
    jpeg = k.us_dataset(k.rgb_of(img), "RGB", regions=whole)
    k.jpeg_baseline(jpeg, k.rgb_of(img))
    k.save(jpeg, d / "jpeg.dcm")
    canvas = np.hstack([img, np.zeros((h, 200), np.uint8)])  # two views: the head's and an empty one
    k.save(k.us_dataset(canvas, regions=[whole[0], k.region((w, 0, w + 199, h - 1), 2 * px / 10)]), d / "two_regions.dcm")
    split = [k.region((0, 0, centre_x - 1, h - 1), px / 10), k.region((centre_x, 0, w - 1, h - 1), px / 10)]
    k.save(k.us_dataset(img, regions=split), d / "across_regions.dcm")
    k.save(k.us_dataset(img, regions=[k.region((0, 0, 40, 40), px / 10)]), d / "outside_region.dcm")
    k.save(k.us_dataset(img, regions=[k.region((0, 0, w - 1, h - 1), (px / 10, 1.05 * px / 10))]), d / "anisotropic.dcm")
    k.save(k.us_dataset(img, regions=[k.region((0, 0, w - 1, h - 1), px / 10, units=(4, 4))]), d / "seconds_units.dcm")
    k.truncated(d / "truncated.dcm", d / "us_region.dcm")
    k.no_pixel_data(d / "no_pixels.dcm")
    k.structured_report(d / "report.dcm")
    k.video(d / "video.dcm", img)
    k.sixteen_bit(d / "sixteen.dcm", img)
    k.sixteen_bit(d / "signed.dcm", img, signed=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, png: Path, px: float, img: np.ndarray) -> dict:
    """The PNG measured with --spacing, then one predict over every DICOM variant (and the bad
    files) with --sr and --overlays."""
    d = tmp_path_factory.mktemp("dicom_predict")
    spacing = d / "spacing.csv"
    spacing.write_text(f"image_name,pixel_size_mm\n{png.name},{px!r}\n")
    ref = predict(["--images", png, "--spacing", spacing, "--out", d / "ref.csv", "--sr", d / "ref_sr"])
    ref_row = pd.read_csv(d / "ref.csv").iloc[0]
    assert ref_row["pixel_size_source"] == "csv" and np.isfinite(ref_row["hc_mm"])
    centre_x = round((ref_row["ofd_1_x"] + ref_row["ofd_2_x"]) / 2)
    images = d / "images"
    images.mkdir()
    _build(images, img, px, centre_x)
    res = predict(["--images", images, "--out", d / "p.csv", "--sr", d / "sr", "--overlays", d / "ov"])
    return {"dir": d, "images": images, "ref": ref_row, "ref_output": ref.output, "df": pd.read_csv(d / "p.csv").set_index("image_name"), "output": res.output}


def test_hc_from_dicom_equals_hc_from_the_png(run: dict, px: float) -> None:
    df, ref = run["df"], run["ref"]
    for name, source in SAME_AS_PNG.items():
        r = df.loc[name]
        assert r["pixel_size_source"] == source, (name, r["pixel_size_note"])
        assert r["pixel_size_mm"] == pytest.approx(px, rel=1e-5)  # the CSV keeps 6 significant digits
        assert abs(r["hc_mm"] - ref["hc_mm"]) <= 0.01, name
        assert r["flag"] == ref["flag"] and abs(r["bpd_mm"] - ref["bpd_mm"]) <= 0.01 and abs(r["ofd_mm"] - ref["ofd_mm"]) <= 0.01


def test_each_frame_is_a_row_and_has_its_own_overlay(run: dict) -> None:
    df = run["df"]
    assert [n for n in df.index if n.startswith("cine.dcm")] == ["cine.dcm:1", "cine.dcm:2", "cine.dcm:3"]
    mirrored = df.loc["cine.dcm:2"]  # frame 2 is the mirror image: the head moves, its size hardly
    assert mirrored["ofd_1_x"] != df.loc["cine.dcm:1", "ofd_1_x"] and abs(mirrored["hc_mm"] - run["ref"]["hc_mm"]) < 0.05 * run["ref"]["hc_mm"]
    assert {f"cine_frame{i}.png" for i in (1, 2, 3)} <= {p.name for p in (run["dir"] / "ov").iterdir()}


def test_jpeg_compressed_colour_is_measured_close_to_the_png(run: dict) -> None:
    r = run["df"].loc["jpeg.dcm"]  # lossy: not the same pixels, nearly the same head
    assert r["pixel_size_source"] == "dicom-us-region" and r["flag"] != "failed" and abs(r["hc_mm"] - run["ref"]["hc_mm"]) < 1.0


def test_pixel_size_from_the_region_holding_the_head_or_none_with_the_reason(run: dict, px: float) -> None:
    df = run["df"]
    assert df.loc["two_regions.dcm", "pixel_size_source"] == "dicom-us-region" and df.loc["two_regions.dcm", "pixel_size_mm"] == pytest.approx(px)
    imager = df.loc["imager_only.dcm"]
    assert imager["pixel_size_source"] == "dicom-pixel-spacing" and "ImagerPixelSpacing" in imager["pixel_size_note"]
    for name, note in {"across_regions.dcm": "spans 2 ultrasound regions", "outside_region.dcm": "lies in none", "anisotropic.dcm": "anisotropic pixels",
                       "seconds_units.dcm": "seconds/seconds, not cm", "no_calibration.dcm": "no 2D ultrasound region, PixelSpacing or ImagerPixelSpacing"}.items():
        r = df.loc[name]
        assert r["pixel_size_source"] == "none" and note in r["pixel_size_note"], (name, r["pixel_size_note"])
        assert math.isnan(r["hc_mm"]) and math.isnan(r["pixel_size_mm"]) and np.isfinite(r["ofd_1_x"])  # pixels still measured, never a guessed scale


def test_images_without_a_pixel_size_are_warned_about(run: dict) -> None:
    assert "warning: 5 images without a pixel size, so no mm values: across_regions.dcm, anisotropic.dcm, no_calibration.dcm, outside_region.dcm, seconds_units.dcm" in run["output"]


def test_bad_files_are_failed_rows_naming_the_file_and_the_rest_is_measured(run: dict) -> None:
    df = run["df"]
    for name, reason in BAD.items():
        r = df.loc[name]
        assert r["flag"] == "failed" and reason in r["reason"] and name in r["reason"], (name, r["reason"])
        assert f"warning: {name}: failed" in run["output"]
    measured = df.drop(index=list(BAD))
    assert (measured["flag"] != "failed").all() and len(measured) == len(df) - len(BAD)


def _sr_groups(path: Path) -> dict:
    sr = hd.sr.srread(path)
    groups = {}
    for g in sr.content.get_planar_roi_measurement_groups():
        m = g.get_measurements()[0]
        ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0]
        props = {c.ConceptNameCodeSequence[0].CodeValue: float(c.MeasuredValueSequence[0].NumericValue) for c in m[0].get("ContentSequence", [])}
        groups[m.name.value] = {"value": m.value, "unit": m.unit.value, "graphic": (g.roi.GraphicType, np.asarray(g.roi.value)), "sop": ref.ReferencedSOPInstanceUID,
                                "frame": ref.get("ReferencedFrameNumber"), "flag": [q.value.meaning for q in g.get_qualitative_evaluations()], "props": props}
    return groups


@pytest.mark.parametrize("name, sr_name, frame", [("us_region.dcm", "us_region.sr.dcm", None), ("cine.dcm:2", "cine_frame2.sr.dcm", 2)])
def test_sr_holds_the_csv_values_and_refers_to_the_measured_instance(run: dict, name: str, sr_name: str, frame: int | None) -> None:
    row = run["df"].loc[name]
    source = pydicom.dcmread(run["images"] / name.split(":")[0], stop_before_pixels=True)
    path = run["dir"] / "sr" / sr_name
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.ComprehensiveSRStorage and ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = _sr_groups(path)
    assert set(groups) == {"11984-2", "11851-3", "11820-8"}  # HC, OFD, BPD (CID 12005)
    pts = row[["ofd_1_x", "ofd_1_y", "ofd_2_x", "ofd_2_y", "bpd_1_x", "bpd_1_y", "bpd_2_x", "bpd_2_y"]].to_numpy(float).reshape(4, 2) + 0.5
    for code, key, kind, coords in (("11984-2", "hc", "ELLIPSE", pts), ("11851-3", "ofd", "POLYLINE", pts[:2]), ("11820-8", "bpd", "POLYLINE", pts[2:])):
        g = groups[code]
        assert g["value"] == pytest.approx(row[f"{key}_mm"], rel=1e-5) and g["unit"] == "mm" and g["flag"] == [row["flag"]]
        assert g["props"]["371886008"] == pytest.approx(row[f"{key}_mm_high"] - row[f"{key}_mm"], rel=1e-4, abs=1e-4)  # upper uncertainty: the 90 % interval
        assert g["props"]["371885007"] == pytest.approx(row[f"{key}_mm"] - row[f"{key}_mm_low"], rel=1e-4, abs=1e-4)
        assert g["graphic"][0] == kind and np.allclose(g["graphic"][1], coords, atol=1e-3)
        assert g["sop"] == source.SOPInstanceUID and g["frame"] == frame


def test_sr_only_for_images_measured_in_mm(run: dict) -> None:
    written = {p.name for p in (run["dir"] / "sr").iterdir()}
    assert "no_calibration.sr.dcm" not in written and "truncated.sr.dcm" not in written
    assert len(written) == int(run["df"]["hc_mm"].notna().sum())


def test_sr_of_a_png_has_new_uids_and_says_so(run: dict, png: Path) -> None:
    path = run["dir"] / "ref_sr" / png.with_suffix(".sr.dcm").name
    ds = pydicom.dcmread(path)
    assert "new UIDs" in ds.SeriesDescription and "not DICOM" in run["ref_output"]
    groups = _sr_groups(path)
    assert groups["11984-2"]["value"] == pytest.approx(run["ref"]["hc_mm"], rel=1e-5)


def test_precedence_option_then_csv_then_file_and_unmatched_csv_rows(run: dict, tmp_path: Path, px: float) -> None:
    d = tmp_path / "few"
    d.mkdir()
    for name in ("us_region.dcm", "cine.dcm", "spacing_only.dcm"):
        shutil.copy(run["images"] / name, d / name)
    csv = tmp_path / "spacing.csv"
    csv.write_text("image_name,pixel_size_mm\nus_region.dcm,0.2\ncine.dcm,0.3\ncine.dcm:2,0.25\nghost.png,0.1\n")
    res = predict(["--images", d, "--spacing", csv, "--out", tmp_path / "p.csv"])
    df = pd.read_csv(tmp_path / "p.csv").set_index("image_name")
    assert df.loc["us_region.dcm", ["pixel_size_mm", "pixel_size_source"]].tolist() == [0.2, "csv"]
    assert df.loc[["cine.dcm:1", "cine.dcm:2", "cine.dcm:3"], "pixel_size_mm"].tolist() == [0.3, 0.25, 0.3]  # a frame's own row first
    assert df.loc["spacing_only.dcm", "pixel_size_source"] == "dicom-pixel-spacing" and df.loc["spacing_only.dcm", "pixel_size_mm"] == pytest.approx(px)
    assert "warning: --spacing rows that match no image (1): ghost.png" in res.output
    predict(["--images", d, "--pixel-size", "0.5", "--out", tmp_path / "q.csv"])
    q = pd.read_csv(tmp_path / "q.csv")
    assert (q["pixel_size_source"] == "option").all() and (q["pixel_size_mm"] == 0.5).all()


def test_frames_option(run: dict, tmp_path: Path) -> None:
    cine, single = run["images"] / "cine.dcm", run["images"] / "us_region.dcm"
    predict(["--images", cine, single, "--frames", "first", "--out", tmp_path / "first.csv"])
    assert pd.read_csv(tmp_path / "first.csv")["image_name"].tolist() == ["cine.dcm:1", "us_region.dcm"]
    res = predict(["--images", cine, single, "--frames", "3,5", "--out", tmp_path / "some.csv"])
    df = pd.read_csv(tmp_path / "some.csv").set_index("image_name")
    assert df.index.tolist() == ["cine.dcm:3", "cine.dcm:5", "us_region.dcm:3", "us_region.dcm:5"]
    assert df.loc["cine.dcm:3", "flag"] != "failed"
    assert "cine.dcm:5: frame 5 out of range (the file has 3 frames)" in df.loc["cine.dcm:5", "reason"]
    assert "us_region.dcm:3: frame 3 out of range (the file has 1 frame)" in df.loc["us_region.dcm:3", "reason"]
    assert "warning: cine.dcm:5: failed" in res.output
    bad = predict(["--images", cine, "--frames", "0,x", "--out", tmp_path / "bad.csv"], code=1)
    assert "--frames must be all, first or frame numbers" in bad.output
