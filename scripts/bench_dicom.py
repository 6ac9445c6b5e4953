"""Reading an image as DICOM vs as PNG, side by side in one run (issue 30's target: a DICOM
read costs at most 1.5x the PNG read of the same picture).

The sample PNGs are written once more as ultrasound DICOM files (Ultrasound Image Storage with a
Sequence of Ultrasound Regions), uncompressed as well as compressed the ways scanners and
archives store them (RLE lossless, JPEG baseline, JPEG-LS lossless where an encoder is
installed). Each round reads every image in every format through the package's one reader,
``fetalbio.io.read_gray8`` (file to 8-bit gray array, with the DICOM metadata), the order of the
formats rotated from image to image so that none always goes first; pydicom's import and the
decoders' first calls are paid before the clock starts (and reported apart). The median over
rounds of each format's total, its ratio to PNG, go to ``--out`` (JSON) and stdout.

    python scripts/bench_dicom.py --out results/dicom-read/timing.json

Absolute milliseconds depend on the machine and its load; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.5


def sample_pngs(n: int) -> list[Path]:
    found = sorted(Path(REPO / "data" / "sample").rglob("*_HC.png"))
    if not found:
        raise SystemExit("no sample images (*_HC.png) under data/sample")
    return found[:n]


def _dataset(img: np.ndarray):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = UltrasoundImageStorage, generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "US"
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = img.shape[1] - 1, img.shape[0] - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.007
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.PixelData = img.tobytes()
    return ds


def _jpeg_baseline(ds, img: np.ndarray) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.tobytes()])
    ds["PixelData"].VR = "OB"


def write_formats(pngs: list[Path], folder: Path) -> dict[str, list[Path]]:
    """Every PNG as each DICOM format, in ``folder``: format -> files (in ``pngs``' order)."""
    from pydicom.uid import JPEGLSLossless, RLELossless

    out: dict[str, list[Path]] = {"png": list(pngs)}
    for png in pngs:
        img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        for fmt in ("dicom", "dicom_rle", "dicom_jpeg_baseline", "dicom_jpegls"):
            ds = _dataset(img)
            try:
                if fmt == "dicom_rle":
                    ds.compress(RLELossless)
                elif fmt == "dicom_jpegls":
                    ds.compress(JPEGLSLossless)
                elif fmt == "dicom_jpeg_baseline":
                    _jpeg_baseline(ds, img)
            except (RuntimeError, NotImplementedError, ValueError):
                continue  # no encoder for it here
            path = folder / fmt / f"{png.stem}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            out.setdefault(fmt, []).append(path)
    return {f: files for f, files in out.items() if len(files) == len(pngs)}


def time_rounds(formats: dict[str, list[Path]], rounds: int) -> dict[str, list[float]]:
    """Seconds per round for each format (every image read once per round), interleaved."""
    from fetalbio.io import read_gray8

    names = list(formats)
    totals = {f: [] for f in names}
    for r in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for i in range(len(formats["png"])):
            shift = (r + i) % len(names)
            for f in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                read_gray8(formats[f][i])
                spent[f] += time.perf_counter() - t0
        for f in names:
            totals[f].append(spent[f])
    return totals


def import_cost_ms() -> float:
    """Wall time of ``import pydicom`` in a fresh interpreter (paid once, at the first DICOM)."""
    code = "import time; t = time.perf_counter(); import pydicom, pydicom.pixels; print((time.perf_counter() - t) * 1e3)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "results" / "dicom-read" / "timing.json")
    ap.add_argument("--images", type=int, default=48, help="How many sample images (sorted by name).")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import pydicom

    from fetalbio.io import read_gray8, write_json

    pngs = sample_pngs(args.images)
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        formats = write_formats(pngs, Path(tmp))
        for files in formats.values():  # warm: imports, decoder plugins, the page cache
            for p in files:
                read_gray8(p)
        totals = time_rounds(formats, args.rounds)
    per_image = {f: statistics.median(v) / len(pngs) * 1e3 for f, v in totals.items()}
    ratios = {f: per_image[f] / per_image["png"] for f in per_image if f != "png"}
    result = {
        "what": "read_gray8 (file to 8-bit gray array) of the same sample images as PNG and as ultrasound DICOM, interleaved",
        "n_images": len(pngs), "image_size": list(cv2.imread(str(pngs[0]), cv2.IMREAD_GRAYSCALE).shape[::-1]), "rounds": args.rounds,
        "ms_per_image_median": per_image, "ratio_to_png": ratios, "target_ratio": TARGET,
        "meets_target": {f: r <= TARGET for f, r in ratios.items()}, "pydicom_import_ms": import_cost_ms(),
        "versions": {"pydicom": pydicom.__version__, "opencv": cv2.__version__, "python": platform.python_version()},
        "machine": platform.machine(), "command": "python scripts/bench_dicom.py " + " ".join(sys.argv[1:]),
    }
    write_json(args.out, result)
    for f, ms in per_image.items():
        print(f"{f:22s} {ms:7.3f} ms/image" + (f"  {ratios[f]:.2f}x PNG" if f in ratios else ""))
    print(f"pydicom import (once): {result['pydicom_import_ms']:.0f} ms -> {args.out}")


if __name__ == "__main__":
    main()
