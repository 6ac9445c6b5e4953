"""The DICOM half of the io layer: read an ultrasound DICOM file (one frame) as 8-bit gray, with
what it says about the image, above all the size of its pixels.

Imported by :func:`fetalbio.io.read_gray8` only when a file is DICOM (PNG users never pay for
pydicom's import). pydicom decodes; the decoders for compressed transfer syntaxes are the
pylibjpeg plugins (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE) or Pillow.

What is read (docs/dicom.md):

* 8-bit unsigned pixels only; a 16-bit or signed image is refused with the reason (no window
  is guessed: a different window would change the measured outline);
* ``MONOCHROME2`` as stored, ``MONOCHROME1`` inverted, ``RGB`` to luma with ITU-R BT.601
  weights (OpenCV's ``RGB2GRAY``), ``YBR_FULL``/``YBR_FULL_422`` (and JPEG 2000's
  ``YBR_ICT``/``YBR_RCT``): their Y channel, the same BT.601 luma a scanner's grayscale shows;
* the pixel size candidates: the Sequence of Ultrasound Regions, ``PixelSpacing``,
  ``ImagerPixelSpacing``; which one applies depends on where the head is, so it is resolved
  after the prediction by :meth:`DicomSource.pixel_size`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.pixels import get_decoder
from pydicom.uid import UID, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSLossless, JPEGLSNearLossless

from fetalbio.io_types import ImageReadError, LoadedImage, PixelSize

# DICOM PS3.3 C.8.5.5.1: RegionSpatialFormat 1 = 2D (tissue or flow); PhysicalUnits 3 = cm
SPATIAL_2D = 1
UNITS_CM = 3
UNIT_NAMES = {0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "seconds", 5: "hertz", 6: "dB/seconds", 7: "cm/sec", 8: "cm2", 9: "cm2/sec", 0xC: "degrees"}
ANISOTROPY_TOL = 0.01  # ΔX and ΔY further apart than 1 %: anisotropic pixels, no mm
LUMA_FIRST = ("YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")  # channel 0 is the luma Y
# The fastest installed decoder first (scripts/bench_dicom.py): pydicom's own choice for JPEG
# baseline is pylibjpeg-libjpeg, ~4x slower here than Pillow's libjpeg-turbo; for JPEG-LS CharLS
# (pyjpegls) beats it too. Any other decoder still takes over when the preferred one fails.
PREFERRED_PLUGIN = {JPEGBaseline8Bit: "pillow", JPEGExtended12Bit: "pillow", JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}


@dataclass(frozen=True)
class UsRegion:
    """One item of the Sequence of Ultrasound Regions."""

    bounds: tuple[int, int, int, int]  # RegionLocationMinX0, MinY0, MaxX1, MaxY1 (px, inclusive)
    spatial_format: int
    units: tuple[int, int]  # PhysicalUnitsXDirection, PhysicalUnitsYDirection
    delta: tuple[float, float]  # PhysicalDeltaX, PhysicalDeltaY, in those units

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (continuous pixel coordinates, pixel centres at integers) lies in
        the region's pixels: bounds are inclusive pixel indices, so the area reaches half a pixel
        beyond them (two adjacent regions leave no gap between them)."""
        x0, y0, x1, y1 = self.bounds
        return x0 - 0.5 <= x <= x1 + 0.5 and y0 - 0.5 <= y <= y1 + 0.5

    def overlaps(self, box: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = self.bounds
        return box[0] <= x1 + 0.5 and x0 - 0.5 <= box[2] and box[1] <= y1 + 0.5 and y0 - 0.5 <= box[3]

    def inside(self, other: UsRegion) -> bool:
        return all(other.contains(x, y) for x, y in ((self.bounds[0], self.bounds[1]), (self.bounds[2], self.bounds[3])))


@dataclass(frozen=True)
class DicomSource:
    """What a DICOM file says about the image read from it: the instance (for a report that
    refers to it) and the pixel-size candidates."""

    path: Path
    frame: int | None  # from 1; None for a single-frame file
    n_frames: int
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    regions: tuple[UsRegion, ...] = ()
    pixel_spacing: tuple[float, float] | None = None  # PixelSpacing: (row, column) spacing in mm
    imager_pixel_spacing: tuple[float, float] | None = None

    def pixel_size(self, centre: tuple[float, float] | None, box: tuple[float, float, float, float] | None) -> PixelSize:
        """The pixel size for a head centred at ``centre`` inside ``box`` = ``(x0, y0, x1, y1)``
        (px): the 2D ultrasound region the head is in when the file has such regions, else
        ``PixelSpacing``, else ``ImagerPixelSpacing``; no mm (and why) when the head is in no
        region or spans two, the units are not cm, or the pixels are anisotropic."""
        tissue = [r for r in self.regions if r.spatial_format == SPATIAL_2D]
        if tissue:
            return _region_pixel_size(tissue, centre, box)
        for spacing, label in ((self.pixel_spacing, "PixelSpacing"), (self.imager_pixel_spacing, "ImagerPixelSpacing")):
            if spacing is not None:
                size = _isotropic(spacing[1], spacing[0], "dicom-pixel-spacing", label)
                return size if label == "PixelSpacing" or size.source == "none" else PixelSize(size.mm, size.source, "from ImagerPixelSpacing (no PixelSpacing)")
        return PixelSize(math.nan, "none", "no pixel size: the DICOM file has no 2D ultrasound region, PixelSpacing or ImagerPixelSpacing")


def _isotropic(dx_mm: float, dy_mm: float, source: str, label: str) -> PixelSize:
    if not (math.isfinite(dx_mm) and math.isfinite(dy_mm) and dx_mm > 0 and dy_mm > 0):
        return PixelSize(math.nan, "none", f"{label}: pixel size {dx_mm:g} x {dy_mm:g} mm is not positive")
    if abs(dx_mm - dy_mm) > ANISOTROPY_TOL * max(dx_mm, dy_mm):
        return PixelSize(math.nan, "none", f"{label}: anisotropic pixels, {dx_mm:.5g} mm wide, {dy_mm:.5g} mm high (> 1 % apart)")
    return PixelSize((dx_mm + dy_mm) / 2, source)


def _region_pixel_size(tissue: list[UsRegion], centre, box) -> PixelSize:
    if centre is None or box is None:
        return PixelSize(math.nan, "none", "no head measured, so no ultrasound region to take the pixel size from")
    hits = [r for r in tissue if r.contains(*centre)]
    if not hits:
        return PixelSize(math.nan, "none", f"the head (centre {centre[0]:.0f}, {centre[1]:.0f} px) lies in none of the file's {len(tissue)} 2D ultrasound region(s)")
    others = [r for r in tissue if r not in hits and r.overlaps(box) and not any(r.inside(h) for h in hits)]
    if others:
        return PixelSize(math.nan, "none", f"the head spans {len(others) + 1} ultrasound regions (its box {', '.join(f'{v:.0f}' for v in box)} px reaches into {others[0].bounds})")
    r = hits[0]
    if any(h.units != r.units or not np.allclose(h.delta, r.delta, rtol=ANISOTROPY_TOL) for h in hits[1:]):
        return PixelSize(math.nan, "none", f"the head lies in {len(hits)} overlapping ultrasound regions with different pixel sizes")
    if r.units != (UNITS_CM, UNITS_CM):
        names = "/".join(UNIT_NAMES.get(u, str(u)) for u in r.units)
        return PixelSize(math.nan, "none", f"ultrasound region {r.bounds}: physical units {names}, not cm")
    return _isotropic(abs(r.delta[0]) * 10.0, abs(r.delta[1]) * 10.0, "dicom-us-region", f"ultrasound region {r.bounds}")


def _float_pair(value) -> tuple[float, float] | None:
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return pair if len(pair) == 2 else None


def _number(item, key: str, default: float) -> float:
    value = item.get(key)
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def _regions(ds) -> tuple[UsRegion, ...]:
    out = []
    for r in ds.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            bounds = tuple(int(r[k].value) for k in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1"))
        except (KeyError, TypeError, ValueError):
            continue  # a region without a location cannot hold the head
        delta = (_number(r, "PhysicalDeltaX", math.nan), _number(r, "PhysicalDeltaY", math.nan))
        units = (int(_number(r, "PhysicalUnitsXDirection", 0)), int(_number(r, "PhysicalUnitsYDirection", 0)))
        out.append(UsRegion(bounds, int(_number(r, "RegionSpatialFormat", 0)), units, delta))
    return tuple(out)


def _source(ds, path: Path, frame: int | None, n_frames: int) -> DicomSource:
    uids = (str(ds.get(k, "") or "") for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))
    return DicomSource(path, frame if n_frames > 1 else None, n_frames, *uids, _regions(ds),
                       _float_pair(ds.get("PixelSpacing")), _float_pair(ds.get("ImagerPixelSpacing")))


@lru_cache(maxsize=2)
def _cached_dataset(path: str, mtime_ns: int, size: int):
    return pydicom.dcmread(path)


def _dataset(path: Path):
    """The parsed file, kept for the next call: the frames of a multi-frame file are read one
    by one, and each would otherwise parse the whole file again."""
    st = path.stat()
    return _cached_dataset(str(path), st.st_mtime_ns, st.st_size)


def frame_count(path: Path) -> int:
    """``NumberOfFrames`` of a DICOM file from its header (1 when absent or unreadable: reading
    the image then says what is wrong)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except Exception:  # noqa: BLE001 - any damage: the read of the pixels reports it
        return 1


def _check(ds, where: str, frame: int | None) -> tuple[object, int]:
    """The decoder and the number of frames, or an :class:`ImageReadError` saying why not."""
    if "PixelData" not in ds:
        kind = UID(str(ds.get("SOPClassUID", ""))).name or "unknown SOP class"
        raise ImageReadError(f"{where}: DICOM without pixel data ({kind}): not an image")
    ts = UID(str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ""))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise ImageReadError(f"{where}: unsupported transfer syntax {ts.name or ts or '(none)'}: no pixel data decoder for it") from None
    if not decoder.is_available:
        raise ImageReadError(f"{where}: transfer syntax {ts.name}: no decoder installed ({'; '.join(decoder.missing_dependencies)})")
    bits, signed = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("PixelRepresentation", 0) or 0)
    if bits != 8 or signed:
        raise ImageReadError(f"{where}: {bits}-bit {'signed' if signed else 'unsigned'} pixels: only 8-bit unsigned images are read (no window is guessed); export 8-bit images")
    n = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    if frame is None and n > 1:
        raise ImageReadError(f"{where}: multi-frame DICOM ({n} frames): read one frame (predict names them {Path(where).name}:N)")
    if frame is not None and not 1 <= frame <= n:
        raise ImageReadError(f"{where}: frame {frame} out of range (the file has {n} frame{'s' if n > 1 else ''})")
    return decoder, n


def _decode(decoder, ds, index: int | None):
    """The frame's pixels, as stored (no colour conversion), and pydicom's decoding metadata."""
    plugin = PREFERRED_PLUGIN.get(ds.file_meta.TransferSyntaxUID, "")
    if plugin in decoder.available_plugins:
        try:
            return decoder.as_array(ds, index=index, as_rgb=False, decoding_plugin=plugin)
        except Exception:  # noqa: BLE001 - e.g. a JPEG variant Pillow does not decode: pydicom's own choice next
            plugin = ""
    return decoder.as_array(ds, index=index, as_rgb=False)


def _to_gray8(arr: np.ndarray, pi: str, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if arr.ndim == 2 and pi == "MONOCHROME2":
        return arr, ()
    if arr.ndim == 2 and pi == "MONOCHROME1":
        return np.invert(arr), ("monochrome1_inverted",)
    if arr.ndim == 3 and arr.shape[2] == 3 and pi == "RGB":
        return cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY), ("rgb_to_gray",)
    if arr.ndim == 3 and arr.shape[2] == 3 and pi in LUMA_FIRST:
        return np.ascontiguousarray(arr[:, :, 0]), ("ybr_to_gray",)
    samples = arr.shape[2] if arr.ndim == 3 else 1
    raise ImageReadError(f"{where}: photometric interpretation {pi or '(none)'} with {samples} sample(s) per pixel is not read "
                         "(MONOCHROME1/2, RGB, YBR_FULL and YBR_FULL_422 are)")


def read_dicom_gray8(path: Path, frame: int | None = None) -> LoadedImage:
    """Frame ``frame`` (from 1; None: the only frame) of a DICOM file as 8-bit gray, with its
    :class:`DicomSource` in ``LoadedImage.dicom``. Anything wrong with the file (truncated, no
    pixel data, a transfer syntax without a decoder, 16-bit or signed pixels, a frame out of
    range, a colour model not listed above) is an :class:`ImageReadError` naming the file and
    frame."""
    where = str(path) if frame is None else f"{path}:{frame}"
    try:
        ds = _dataset(path)
        decoder, n = _check(ds, where, frame)
        arr, meta = _decode(decoder, ds, frame - 1 if n > 1 else None)
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom and its plugins raise many types; each becomes a reason
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise ImageReadError(f"{where}: unreadable DICOM (truncated or damaged?): {type(exc).__name__}: {first[:200]}") from exc
    pi = str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", "")))
    gray, conversions = _to_gray8(np.asarray(arr), pi, where)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ImageReadError(f"{where}: decoded to {gray.dtype} {gray.shape}, not an 8-bit image")
    return LoadedImage(np.ascontiguousarray(gray), ("from_dicom", *conversions), _source(ds, path, frame, n))
