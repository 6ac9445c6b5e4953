"""The bottom layer: file input and output that every other part of the package shares (it
imports nothing from fetalbio but the image types it shares with its DICOM half
(:mod:`fetalbio.io_types`) and that half, :mod:`fetalbio.io_dicom`, only when a file is DICOM:
PNG users never import pydicom).

Atomic writers for every file a stage declares (temp file + rename: a kill never leaves a
half-written output that DVC could cache); safe paths; one reader per file kind: an image with its
recorded conversions (:func:`read_gray8`), a skull mask (:func:`read_mask`), a held-out table
(:func:`read_oof`, :func:`read_oof_folds`); why ``torch.load(weights_only=True)`` refused a file."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import cv2
import numpy as np
import pandas as pd

from fetalbio.io_types import FrameRef, ImageReadError, LoadedImage, PixelSize  # noqa: F401  (re-exported: io is where callers read images)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Sorted-key, indented JSON; NaN/inf become null (valid JSON for DVC)."""
    _atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, df: pd.DataFrame, float_format: str = "%.6g") -> None:
    """CSV with a fixed float format so reruns are byte-identical."""
    _atomic_write_text(path, df.to_csv(index=False, float_format=float_format, lineterminator="\n"))


def write_text(path: Path, text: str) -> None:
    _atomic_write_text(path, text)


def write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` of ``obj`` (plain data and tensors), atomically."""
    import torch  # lazily: the metrics and reports side of the package does not need torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class UnsafePathError(ValueError):
    """An image name that is absolute or escapes the data root."""


def safe_join(root: Path, name: str) -> Path:
    """Join ``name`` under ``root``, refusing names that could escape it.

    Refused: empty names, absolute paths (POSIX or Windows/drive), any ``..`` component, and
    paths whose resolved target (following symlinks) lies outside the resolved ``root``.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafePathError("empty image name")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise UnsafePathError(f"absolute image name {name!r} is not allowed")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafePathError(f"image name {name!r} escapes the data root ('..')")
    root_resolved = root.resolve()
    target = (root / Path(*parts)).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError(f"image name {name!r} resolves outside the data root (symlink?): {target}")
    return root / Path(*parts)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex), read in blocks by ``hashlib.file_digest``."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


DICOM_MAGIC_OFFSET = 128  # a DICOM file (PS3.10): a 128-byte preamble, then b"DICM"


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file, by its content (``DICM`` after the preamble), whatever
    its suffix; False for anything unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return False
    return head[DICOM_MAGIC_OFFSET:] == b"DICM"


def read_gray8(path: Path | str | FrameRef, frame: int | None = None) -> LoadedImage:
    """Read an image as 8-bit grayscale, recording each conversion: a DICOM file (recognised by
    content, see :func:`is_dicom`) through :func:`fetalbio.io_dicom.read_dicom_gray8` (``frame``
    from 1 picks one of a multi-frame file; a :class:`FrameRef` carries both), anything else
    OpenCV decodes through OpenCV.

    16-bit images are mapped to 8 bits by ``value / 257`` (full range to full range); colour
    images are converted with OpenCV's BGR→gray weights; an alpha channel is dropped.
    """
    if isinstance(path, FrameRef):
        path, frame = path.path, path.frame
    path = Path(path)
    if path.is_file() and is_dicom(path):
        from fetalbio.io_dicom import read_dicom_gray8  # pydicom only for DICOM files

        return read_dicom_gray8(path, frame)
    if frame not in (None, 1):
        raise ImageReadError(f"{path}:{frame}: frame {frame} asked for, but the file is not a multi-frame DICOM")
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f"{path}: not a decodable image (corrupt or unsupported format)")
    conversions: list[str] = []
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float64) / 257.0).astype(np.uint8)
        conversions.append("16bit_to_8bit")
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {img.dtype}")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
            conversions.append("rgba_to_gray")
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            conversions.append("rgb_to_gray")
        elif img.shape[2] == 1:
            img = img[:, :, 0]
        else:
            raise ImageReadError(f"{path}: unsupported channel count {img.shape[2]}")
    if img.ndim != 2 or min(img.shape) < 1:
        raise ImageReadError(f"{path}: unexpected image shape {img.shape}")
    return LoadedImage(np.ascontiguousarray(img), tuple(conversions))


MASK_THRESHOLD = 127  # a mask pixel is head above this gray value (masks are written 0 / 255)


def read_mask(path: Path | str, optional: bool = False) -> np.ndarray | None:
    """A skull mask as (H, W) uint8 {0, 1}: the pixels over :data:`MASK_THRESHOLD` of the file as
    OpenCV reads it in 8-bit gray (``IMREAD_GRAYSCALE``, as the masks were always read). A file
    that cannot be read raises :class:`ImageReadError` naming it; ``optional=True`` gives None."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        if optional:
            return None
        raise ImageReadError(f"{path}: unreadable mask")
    return (m > MASK_THRESHOLD).astype(np.uint8)


OOF_FILE = "oof.csv"  # a fold's held-out predictions (fetalbio.engine.run.write_heldout writes it)
# its text columns (an image name "001" stays "001"); an empty reason or mask_path reads as NaN
OOF_DTYPES = {"image_name": str, "reason": str, "mask_path": str}


def oof_folds(model_dir: Path) -> list[Path]:
    """The ``fold*`` folders of a variant that hold an :data:`OOF_FILE`, in name order."""
    return sorted(p for p in Path(model_dir).glob("fold*") if (p / OOF_FILE).is_file())


def read_oof(fold_dir: Path) -> pd.DataFrame:
    """One fold's held-out predictions (``fold_dir/oof.csv``), text columns as :data:`OOF_DTYPES`."""
    return pd.read_csv(Path(fold_dir) / OOF_FILE, dtype=OOF_DTYPES)


def read_oof_folds(model_dir: Path) -> pd.DataFrame:
    """Every fold's held-out predictions of a variant (:func:`oof_folds`), mask paths made
    relative to ``model_dir`` ('' for none); an image predicted in two folds is refused."""
    parts = []
    for fold_dir in oof_folds(model_dir):
        df = read_oof(fold_dir)
        df["mask_path"] = [f"{fold_dir.name}/{m}" if isinstance(m, str) and m else "" for m in df["mask_path"]]
        parts.append(df)
    if not parts:
        raise FileNotFoundError(f"no fold*/{OOF_FILE} under {model_dir}")
    oof = pd.concat(parts, ignore_index=True)
    dup = oof["image_name"].duplicated()
    if dup.any():
        raise ValueError(f"{model_dir}: image(s) predicted in two folds: {oof.loc[dup, 'image_name'].tolist()[:5]}")
    return oof


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write a PNG atomically (temp file + rename) so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def load_failure_reason(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line (torch's own message is
    long, has terminal colour codes and may suggest ``weights_only=False``, which we never do)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"it pickles a Python object ({m.group(1)}), not only plain data and tensors; refused by weights_only=True"
    if isinstance(exc, (EOFError, KeyError)) or any(k in text for k in ("WeightsUnpickler error", "invalid load key", "PytorchStreamReader")):
        return f"not a torch.save file, or a truncated one ({type(exc).__name__})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:200]}"
