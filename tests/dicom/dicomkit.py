"""Synthetic ultrasound DICOM files, built with pydicom from the sample PNGs (no file from
outside the repository)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG4HP41,
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

REPO = Path(__file__).resolve().parents[2]


def sample_png(preferred: str = "006_HC.png") -> Path:
    """A sample image wherever the sample folder keeps it (``preferred`` when present)."""
    found = sorted(Path(REPO / "data" / "sample").rglob("*_HC.png"))
    assert found, "no sample images under data/sample"
    return next((p for p in found if p.name == preferred), found[0])


def sample_pixel_size(png: Path) -> float:
    """The sample's reference pixel size (mm) of ``png``."""
    import pandas as pd

    for csv in sorted(Path(REPO / "data" / "sample").rglob("*.csv")):
        df = pd.read_csv(csv)
        if {"image_name", "pixel_size_mm"} <= set(df.columns) and png.name in set(df["image_name"]):
            return float(df.set_index("image_name").loc[png.name, "pixel_size_mm"])
    raise AssertionError(f"no pixel size for {png.name} in the sample")


def gray(png: Path) -> np.ndarray:
    img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.dtype == np.uint8 and img.ndim == 2
    return img


def region(bounds: tuple[int, int, int, int], delta_cm: float | tuple[float, float], units: tuple[int, int] = (3, 3), spatial: int = 1) -> Dataset:
    """One Sequence of Ultrasound Regions item (bounds: MinX0, MinY0, MaxX1, MaxY1)."""
    dx, dy = (delta_cm, delta_cm) if np.isscalar(delta_cm) else delta_cm
    r = Dataset()
    r.RegionSpatialFormat = spatial
    r.RegionDataType = 1  # tissue
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = (int(v) for v in bounds)
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX, r.PhysicalDeltaY = float(dx), float(dy)
    return r


def us_dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", regions: list[Dataset] | None = None, pixel_spacing: tuple[float, float] | None = None,
               imager_pixel_spacing: tuple[float, float] | None = None, frames: bool = False) -> Dataset:
    """An (uncompressed) Ultrasound Image Storage dataset: ``pixels`` (H, W), (H, W, 3) or, with
    ``frames``, (N, H, W[, 3]) as Ultrasound Multi-frame Image Storage."""
    sop_class = UltrasoundMultiFrameImageStorage if frames else UltrasoundImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "US", "Test^Fetal", "FB-TEST-1"
    shape = pixels.shape[1:] if frames else pixels.shape
    ds.Rows, ds.Columns = shape[:2]
    ds.SamplesPerPixel = 3 if len(shape) == 3 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames:
        ds.NumberOfFrames = pixels.shape[0]
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
        ds.FrameTime = 40.0
    if regions:
        ds.SequenceOfUltrasoundRegions = Sequence(regions)
    if pixel_spacing is not None:
        ds.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = [f"{v:.10g}" for v in imager_pixel_spacing]
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def whole_image_region(img: np.ndarray, px_mm: float) -> list[Dataset]:
    return [region((0, 0, img.shape[1] - 1, img.shape[0] - 1), px_mm / 10.0)]


def rgb_of(img: np.ndarray) -> np.ndarray:
    """The gray image as RGB with equal channels (its luma is the gray value itself)."""
    return np.repeat(img[:, :, None], 3, axis=2)


def ybr_full_of(rgb: np.ndarray) -> np.ndarray:
    return convert_color_space(rgb, "RGB", "YBR_FULL")


def jpeg_baseline(ds: Dataset, img: np.ndarray) -> bytes:
    """Replace ``ds``'s pixels by ``img`` JPEG-encoded (baseline, 8-bit): gray stays
    MONOCHROME2, colour (RGB ``img``) becomes YBR_FULL_422 as scanners write it; the JPEG bytes."""
    bgr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.tobytes()])
    ds["PixelData"].VR = "OB"
    if img.ndim == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    return buf.tobytes()


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def no_pixel_data(path: Path) -> Path:
    ds = us_dataset(np.zeros((8, 8), np.uint8))
    del ds.PixelData
    return save(ds, path)


def structured_report(path: Path) -> Path:
    """A minimal Comprehensive SR (no pixels): a report handed over as if it were an image."""
    ds = us_dataset(np.zeros((8, 8), np.uint8))
    for key in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        del ds[key]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
    ds.Modality, ds.ValueType = "SR", "CONTAINER"
    return save(ds, path)


def video(path: Path, img: np.ndarray) -> Path:
    """An MPEG-4 (H.264) transfer syntax, which pydicom cannot decode."""
    ds = us_dataset(img)
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" + bytes(64)])
    ds["PixelData"].VR = "OB"
    return save(ds, path)


def sixteen_bit(path: Path, img: np.ndarray, signed: bool = False) -> Path:
    ds = us_dataset(img)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
    ds.PixelData = (img.astype(np.int16 if signed else np.uint16) * 200).tobytes()
    return save(ds, path)


def truncated(path: Path, whole: Path) -> Path:
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
