"""Reading DICOM through the io layer's one reader (``read_gray8``): pixels, colour models,
compression, frames, the pixel-size candidates, and every way a file can be unreadable."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import dicomkit as k
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from fetalbio.io import FrameRef, ImageReadError, is_dicom, read_gray8
from fetalbio.io_dicom import DicomSource, UsRegion


def test_monochrome2_single_frame_is_the_png_with_its_metadata(tmp_path: Path, img: np.ndarray, px: float) -> None:
    ds = k.us_dataset(img, regions=k.whole_image_region(img, px))
    got = read_gray8(k.save(ds, tmp_path / "a.dcm"))
    assert np.array_equal(got.pixels, img) and got.conversions == ("from_dicom",)
    src = got.dicom
    assert (src.sop_instance_uid, src.study_instance_uid, src.series_instance_uid) == (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert src.frame is None and src.n_frames == 1 and len(src.regions) == 1
    size = src.pixel_size((img.shape[1] / 2, img.shape[0] / 2), (10, 10, 20, 20))
    assert size.source == "dicom-us-region" and size.mm == pytest.approx(px, rel=1e-12) and size.note == ""


def test_recognised_by_content_whatever_the_suffix(tmp_path: Path, img: np.ndarray) -> None:
    for name in ("disguised.png", "IM0001", "x.dicom"):
        path = k.save(k.us_dataset(img), tmp_path / name)
        assert is_dicom(path) and np.array_equal(read_gray8(path).pixels, img)
    assert not is_dicom(k.sample_png()) and read_gray8(k.sample_png()).dicom is None


def test_monochrome1_is_inverted(tmp_path: Path, img: np.ndarray) -> None:
    got = read_gray8(k.save(k.us_dataset(255 - img, "MONOCHROME1"), tmp_path / "m1.dcm"))
    assert np.array_equal(got.pixels, img) and "monochrome1_inverted" in got.conversions


def test_rgb_is_bt601_luma_like_opencv(tmp_path: Path, img: np.ndarray) -> None:
    rgb = np.dstack([img, np.roll(img, 7, axis=1), 255 - img])  # three different channels
    got = read_gray8(k.save(k.us_dataset(rgb, "RGB"), tmp_path / "rgb.dcm"))
    assert np.array_equal(got.pixels, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)) and "rgb_to_gray" in got.conversions


def test_ybr_full_is_its_y_channel(tmp_path: Path, img: np.ndarray) -> None:
    rgb = np.dstack([img, np.roll(img, 7, axis=1), 255 - img])
    ybr = k.ybr_full_of(rgb)
    got = read_gray8(k.save(k.us_dataset(ybr, "YBR_FULL"), tmp_path / "ybr.dcm"))
    assert np.array_equal(got.pixels, ybr[:, :, 0]) and "ybr_to_gray" in got.conversions
    assert np.abs(got.pixels.astype(int) - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)).max() <= 1  # Y = BT.601 luma
    equal = read_gray8(k.save(k.us_dataset(k.ybr_full_of(k.rgb_of(img)), "YBR_FULL"), tmp_path / "ybr_gray.dcm"))
    assert np.array_equal(equal.pixels, img)  # a gray picture in YBR is the gray picture


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "ybr_full_422"])
def test_jpeg_baseline_decodes_like_opencv(tmp_path: Path, img: np.ndarray, colour: bool) -> None:
    src = k.rgb_of(img) if colour else img
    ds = k.us_dataset(src, "RGB" if colour else "MONOCHROME2")
    jpeg = k.jpeg_baseline(ds, src)
    got = read_gray8(k.save(ds, tmp_path / "j.dcm"))
    ref = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)  # libjpeg-turbo, OpenCV's weights
    assert got.pixels.shape == img.shape and np.abs(got.pixels.astype(int) - ref).mean() < 0.6
    assert ("ybr_to_gray" in got.conversions) == colour


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_lossless_compression_is_exact(tmp_path: Path, img: np.ndarray, syntax) -> None:
    ds = k.us_dataset(img)
    try:
        ds.compress(syntax)
    except (RuntimeError, NotImplementedError, ValueError) as exc:  # no encoder plugin installed
        pytest.skip(f"pydicom cannot encode {syntax.name} here: {exc}")
    got = read_gray8(k.save(ds, tmp_path / "c.dcm"))
    assert np.array_equal(got.pixels, img)


def test_multi_frame_one_frame_at_a_time(tmp_path: Path, img: np.ndarray) -> None:
    path = k.save(k.us_dataset(np.stack([img, img[:, ::-1], 255 - img]), frames=True), tmp_path / "cine.dcm")
    assert np.array_equal(read_gray8(path, 2).pixels, img[:, ::-1])
    third = read_gray8(FrameRef(path, 3))
    assert np.array_equal(third.pixels, 255 - img) and third.dicom.frame == 3 and third.dicom.n_frames == 3
    with pytest.raises(ImageReadError, match=r"cine\.dcm:4: frame 4 out of range \(the file has 3 frames\)"):
        read_gray8(path, 4)
    with pytest.raises(ImageReadError, match=r"multi-frame DICOM \(3 frames\)"):
        read_gray8(path)


@pytest.mark.parametrize("make, reason", [
    (lambda d, im: k.truncated(d / "t.dcm", k.save(k.us_dataset(im), d / "whole.dcm")), "truncated or damaged"),
    (lambda d, im: k.no_pixel_data(d / "t.dcm"), "DICOM without pixel data (Ultrasound Image Storage): not an image"),
    (lambda d, im: k.structured_report(d / "t.dcm"), "DICOM without pixel data (Comprehensive SR Storage): not an image"),
    (lambda d, im: k.video(d / "t.dcm", im), "unsupported transfer syntax MPEG-4 AVC/H.264"),
    (lambda d, im: k.sixteen_bit(d / "t.dcm", im), "16-bit unsigned pixels: only 8-bit unsigned"),
    (lambda d, im: k.sixteen_bit(d / "t.dcm", im, signed=True), "16-bit signed pixels"),
], ids=["truncated", "no_pixel_data", "structured_report", "video_syntax", "16bit", "signed"])
def test_bad_files_give_a_reason_naming_the_file(tmp_path: Path, img: np.ndarray, make, reason: str) -> None:
    path = make(tmp_path, img)
    with pytest.raises(ImageReadError) as err:
        read_gray8(path)
    assert reason in str(err.value) and str(path) in str(err.value)


def _src(regions=(), spacing=None, imager=None) -> DicomSource:
    return DicomSource(Path("x.dcm"), None, 1, "", "", "", "", tuple(regions), spacing, imager)


def test_pixel_size_rules() -> None:
    left, right = UsRegion((0, 0, 399, 499), 1, (3, 3), (0.01, 0.01)), UsRegion((400, 0, 799, 499), 1, (3, 3), (0.02, 0.02))
    head_left = ((200.0, 250.0), (120.0, 150.0, 280.0, 350.0))
    assert _src([left, right]).pixel_size(*head_left).mm == pytest.approx(0.1)
    assert _src([left, right]).pixel_size((600.0, 250.0), (520.0, 150.0, 680.0, 350.0)).mm == pytest.approx(0.2)
    across = _src([left, right]).pixel_size((390.0, 250.0), (300.0, 150.0, 480.0, 350.0))
    assert math.isnan(across.mm) and across.source == "none" and "spans 2 ultrasound regions" in across.note
    nowhere = _src([UsRegion((0, 0, 50, 50), 1, (3, 3), (0.01, 0.01))]).pixel_size(*head_left)
    assert nowhere.source == "none" and "lies in none" in nowhere.note
    aniso = _src([UsRegion((0, 0, 799, 499), 1, (3, 3), (0.01, 0.0102))]).pixel_size(*head_left)
    assert aniso.source == "none" and "anisotropic" in aniso.note
    assert _src([UsRegion((0, 0, 799, 499), 1, (3, 3), (0.01, 0.01005))]).pixel_size(*head_left).source == "dicom-us-region"  # within 1 %
    units = _src([UsRegion((0, 0, 799, 499), 1, (0, 0), (0.01, 0.01))]).pixel_size(*head_left)
    assert units.source == "none" and "none/none, not cm" in units.note
    nested = UsRegion((150, 200, 250, 300), 1, (3, 3), (0.01, 0.01))  # a colour box inside the 2D region
    assert _src([left, nested]).pixel_size(*head_left).mm == pytest.approx(0.1)
    m_mode = UsRegion((0, 0, 799, 499), 2, (3, 4), (0.01, 0.01))  # not 2D: ignored
    assert _src([m_mode], spacing=(0.12, 0.12)).pixel_size(*head_left).source == "dicom-pixel-spacing"
    assert _src([left]).pixel_size(None, None).source == "none"  # no head, no region choice


def test_pixel_spacing_fallbacks() -> None:
    head = ((10.0, 10.0), (0.0, 0.0, 20.0, 20.0))
    assert _src(spacing=(0.2, 0.2)).pixel_size(*head).mm == pytest.approx(0.2)
    imager = _src(imager=(0.3, 0.3)).pixel_size(*head)
    assert imager.source == "dicom-pixel-spacing" and imager.mm == pytest.approx(0.3) and "ImagerPixelSpacing" in imager.note
    assert "anisotropic" in _src(spacing=(0.2, 0.3)).pixel_size(*head).note
    none = _src().pixel_size(*head)
    assert none.source == "none" and "no 2D ultrasound region, PixelSpacing or ImagerPixelSpacing" in none.note


def test_reading_a_png_does_not_import_pydicom() -> None:
    code = ("import sys; from pathlib import Path; from fetalbio.io import read_gray8; "
            f"read_gray8(Path({str(k.sample_png())!r})); print('pydicom' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# pydicom's own test files (shipped in its wheel): transfer syntaxes and colour models made by
# other toolkits (dcmtk, GDCM); files it would download are not used
BUNDLED_OK = ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_rgb_color.dcm",
              "JPEGLSNearLossless_08.dcm", "image_dfl.dcm", "SC_jpeg_no_color_transform.dcm"]
BUNDLED_BAD = {"test-SR.dcm": "without pixel data", "MR_small.dcm": "16-bit signed", "examples_palette.dcm": "PALETTE COLOR",
               "JPGExtended.dcm": "16-bit", "SC_rgb_rle_2frame.dcm": "multi-frame"}


def _bundled(name: str) -> Path:
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not path.exists():
        pytest.skip(f"pydicom's test file {name} is not installed here")
    return path


@pytest.mark.parametrize("name", BUNDLED_OK)
def test_pydicom_bundled_files_read_as_pydicom_sees_them(name: str) -> None:
    path = _bundled(name)
    ds = pydicom.dcmread(path)
    ref = ds.pixel_array  # pydicom's own decode, colour converted to RGB
    ref = cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY) if ref.ndim == 3 else ref
    got = read_gray8(path)
    assert got.pixels.shape == ref.shape and np.abs(got.pixels.astype(int) - ref.astype(int)).max() <= 2


@pytest.mark.parametrize("name", sorted(BUNDLED_BAD))
def test_pydicom_bundled_files_that_are_not_read_say_why(name: str) -> None:
    with pytest.raises(ImageReadError, match=BUNDLED_BAD[name]):
        read_gray8(_bundled(name))


def test_adjacent_regions_leave_no_gap_between_their_pixels() -> None:
    """Region bounds are inclusive pixel indices: a head centre between pixel 434 and 435 lies in
    one of two regions split there (a sub-pixel gap once made it 'in none')."""
    from fetalbio.io_dicom import UsRegion

    left = UsRegion((0, 0, 434, 539), 1, (3, 3), (0.01, 0.01))
    right = UsRegion((435, 0, 799, 539), 1, (3, 3), (0.01, 0.01))
    for x in (434.2, 434.7, 435.0, -0.5, 799.5):
        assert left.contains(x, 100.0) or right.contains(x, 100.0), x
    assert not left.contains(435.6, 100.0) and not right.contains(434.4, 100.0) and not right.contains(800.0, 100.0)
    assert right.overlaps((430.0, 10.0, 434.6, 20.0)) and not right.overlaps((430.0, 10.0, 434.4, 20.0))
