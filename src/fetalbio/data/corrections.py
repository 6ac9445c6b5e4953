"""A reviewed ``corrections.csv`` (the review page's export) -> a data source for ingest.

The review page (``fetalbio predict --report``) exports one row per image: predict's columns,
``review`` (``accepted`` | ``corrected`` | ``rejected``, empty when not reviewed), the reviewed
four points (``corrected_ofd_1_x`` ... ``corrected_bpd_2_y``), the reviewed ellipse
(``ellipse_cx``, ``ellipse_cy``, ``ellipse_a_px``, ``ellipse_b_px``, ``ellipse_angle_deg``) and
a free-text ``note``. :func:`corrections_to_source` writes a folder in the *challenge* layout
that ``data.sources`` can name:

``images/``
    the accepted and corrected images (PNG copied as they are; any other format, and a frame
    ``file.dcm:N`` of a multi-frame DICOM file, converted to an 8-bit PNG named ``<name>.png``,
    characters other than letters, digits, ``._-`` replaced by ``_``);
``landmarks.csv``
    ``image_name`` + the eight point columns: the reviewed points (an accepted row's are the
    model's, as the page exports them; a row without them falls back to predict's columns);
``masks/``
    the reviewed ellipse filled, 0/255 PNG, the image's size (the ellipse of the points when the
    ellipse columns are empty);
``hc18_reference.csv``
    ``image_name,pixel_size_mm,hc_mm`` with ``hc_mm`` **empty**: the reviewed ellipse is a
    check of the model's measurement, not an independent sonographer's reference; using it as
    one would score an accepted prediction against itself (zero error) and flatter evaluation.
    Its rows still give the pixel size (the label audit's distances in mm);
``rejected.csv``
    ``image_name,reason``: the rejected images with the reviewer's note as the reason, and
    accepted or corrected ones whose points cannot be landmark labels (a caliper outside the
    image, e.g. a head cut off by the border), with that said. Ingest records every row as a drop.
``README.md``
    where the folder came from and its counts.

Rows not reviewed, and accepted rows without a measurement (an accepted ``failed`` image), are
left out.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from fetalbio import POINT_COLUMNS
from fetalbio.geometry.ellipse import Ellipse, ellipse_from_points, ellipse_to_mask
from fetalbio.io import ImageReadError, UnsafePathError, read_gray8, safe_join, write_csv, write_png, write_text

REVIEWS = ("accepted", "corrected", "rejected")
CORRECTED_POINT_COLUMNS = [f"corrected_{c}" for c in POINT_COLUMNS]
ELLIPSE_COLUMNS = ["ellipse_cx", "ellipse_cy", "ellipse_a_px", "ellipse_b_px", "ellipse_angle_deg"]
# what the review page's corrections.csv adds to predict's columns (docs/review.md)
CORRECTION_COLUMNS = ["review", *CORRECTED_POINT_COLUMNS, *ELLIPSE_COLUMNS,
                      "corrected_bpd_mm", "corrected_ofd_mm", "corrected_hc_mm", "corrected_ga_weeks", "note", "run_id"]
REQUIRED = ["image_name", "review", "note", "pixel_size_mm", *CORRECTED_POINT_COLUMNS, *ELLIPSE_COLUMNS]


class CorrectionsError(ValueError):
    """The corrections file or the images cannot make a data source."""


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_corrections(path: Path) -> pd.DataFrame:
    """The corrections CSV, all cells as text, checked: its columns, ``review`` values and
    unique image names (a :class:`CorrectionsError` names the file, line and column)."""
    from fetalbio.data.ingest import IngestError, read_table_csv

    try:
        df = read_table_csv(Path(path))
    except IngestError as exc:
        raise CorrectionsError(str(exc)) from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CorrectionsError(f"{path}: not a corrections file of the review page: missing columns {', '.join(missing)}")
    problems = []
    for i, (name, review) in enumerate(zip(df["image_name"], df["review"])):
        if review and review not in REVIEWS:
            problems.append(f"{path} line {i + 2}, column review [{name}]: {review!r} is not one of {', '.join(REVIEWS)} (or empty)")
    dup = df["image_name"][df["image_name"].duplicated()].tolist()
    if dup:
        problems.append(f"{path}: image names listed twice: {', '.join(sorted(set(dup)))}")
    if problems:
        raise CorrectionsError("\n".join(problems))
    return df


def reviewed_points(row: pd.Series) -> np.ndarray | None:
    """``(4, 2)`` reviewed points of a row: the corrected ones, else predict's; None when neither
    is complete."""
    for cols in (CORRECTED_POINT_COLUMNS, list(POINT_COLUMNS)):
        if all(c in row.index for c in cols):
            pts = np.array([_float(row[c]) for c in cols]).reshape(4, 2)
            if np.isfinite(pts).all():
                return pts
    return None


def reviewed_ellipse(row: pd.Series, points: np.ndarray) -> Ellipse:
    """The reviewed ellipse: the exported one, else the one the points span."""
    v = [_float(row.get(c)) for c in ELLIPSE_COLUMNS]
    if all(math.isfinite(x) for x in v) and v[2] > 0 and v[3] > 0:
        return Ellipse(v[0], v[1], v[2], v[3], math.radians(v[4]))
    return ellipse_from_points(points)


def _outside(points: np.ndarray, size: tuple[int, int]) -> str:
    """Why ``points`` cannot be landmark labels in a ``(W, H)`` image ('' when they can)."""
    w, h = size
    for name, (x, y) in zip(("ofd_1", "ofd_2", "bpd_1", "bpd_2"), points):
        if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            return f"{name} at ({x:.1f}, {y:.1f}) outside the {w}x{h} image"
    return ""


def _find_image(name: str, images: list[Path]) -> tuple[Path, int | None]:
    """The file predict read as ``name`` and the frame (from 1) of a multi-frame DICOM file
    (``file.dcm:N``; None for a plain image)."""
    base, sep, frame = name.rpartition(":")
    file_name, frame_no = (base, int(frame)) if sep and frame.isdigit() else (name, None)
    for folder in images:
        if folder.is_file() and folder.name == file_name:
            return folder, frame_no
        if folder.is_dir():
            try:
                p = safe_join(folder, file_name)
            except UnsafePathError as exc:
                raise CorrectionsError(str(exc)) from None
            if p.is_file():
                return p, frame_no
    raise CorrectionsError(f"{name}: not found in {', '.join(map(str, images))} (give the folder predict read with --images)")


def _store(name: str, images: list[Path], out: Path) -> tuple[str, np.ndarray]:
    """Copy (PNG) or convert (anything else, a DICOM frame too) an image into ``out/images``;
    its stored name and pixels."""
    src, frame = _find_image(name, images)
    try:
        loaded = read_gray8(src) if frame is None else read_gray8(src, frame)
    except ImageReadError as exc:
        raise CorrectionsError(str(exc)) from None
    if frame is None and src.suffix.lower() == ".png" and not loaded.conversions:
        (out / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / "images" / name)
        return name, loaded.pixels
    stored = name if name.lower().endswith(".png") else re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".png"
    write_png(out / "images" / stored, loaded.pixels)
    return stored, loaded.pixels


def _label_row(row: pd.Series, images: list[Path], out: Path) -> tuple[dict | None, dict | None]:
    """``(landmark row, None)`` for a usable accepted/corrected row, ``(None, rejected row)`` for
    one whose points lie outside its image; ``(None, None)`` without points."""
    pts = reviewed_points(row)
    if pts is None:
        return None, None
    name = row["image_name"]
    stored, pixels = _store(name, images, out)
    size = (pixels.shape[1], pixels.shape[0])
    why = _outside(pts, size)
    if why:
        (out / "images" / stored).unlink()
        return None, {"image_name": name, "reason": f"{row['review']}, but not usable as a landmark label: {why}"}
    mask = ellipse_to_mask(reviewed_ellipse(row, pts), size)
    write_png(out / "masks" / stored, mask * np.uint8(255))
    return {"image_name": stored, **dict(zip(POINT_COLUMNS, pts.reshape(-1).round(3)))}, None


def _review_row(row: pd.Series, images: list[Path], out: Path) -> tuple[str, dict | None]:
    """What one row of the corrections becomes: ``(kind, record)`` with kind a key of the
    counts and record a landmark row (accepted, corrected), a ``rejected.csv`` row (rejected,
    points_outside_image) or None."""
    review = row["review"]
    if review == "rejected":
        return "rejected", {"image_name": row["image_name"], "reason": row["note"]}
    if review not in REVIEWS:
        return "not_reviewed", None
    label, unusable = _label_row(row, images, out)
    if label is not None:
        return review, label
    return ("points_outside_image", unusable) if unusable is not None else ("accepted_without_points", None)


def _readme(corrections: Path, df: pd.DataFrame, counts: dict) -> str:
    run = ", ".join(sorted(set(df["run_id"]) - {""})) if "run_id" in df.columns else ""
    return (f"# Reviewed predictions\n\nWritten by `fetalbio corrections-to-source` from `{corrections.name}`"
            + (f" (review page run {run})" if run else "") + ".\n\n"
            + "\n".join(f"- {k.replace('_', ' ')}: {v}" for k, v in counts.items())
            + "\n\nChallenge layout (`images/`, `landmarks.csv`, `masks/`, `hc18_reference.csv`), plus "
            "`rejected.csv` (ingest records each row as a drop). `hc_mm` is empty on purpose: a reviewed "
            "measurement is not an independent reference. See docs/review.md.\n")


def corrections_to_source(corrections: Path, images: list[Path] | Path, out: Path, overwrite: bool = False) -> dict:
    """Write the data source folder ``out`` from a corrections CSV (see the module docstring);
    ``images``: the folder(s) or file(s) predict read. Returns the counts."""
    corrections, out = Path(corrections), Path(out)
    images = [Path(images)] if isinstance(images, (str, Path)) else [Path(p) for p in images]
    df = read_corrections(corrections)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CorrectionsError(f"{out} exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    labels, rejected, spacing = [], [], []
    counts = dict.fromkeys(["accepted", "corrected", "rejected", "points_outside_image", "accepted_without_points", "not_reviewed"], 0)
    for _, row in df.iterrows():
        kind, record = _review_row(row, images, out)
        counts[kind] += 1
        if kind in ("accepted", "corrected"):
            labels.append(record)
            px = _float(row["pixel_size_mm"])
            if math.isfinite(px) and px > 0:
                spacing.append({"image_name": record["image_name"], "pixel_size_mm": px, "hc_mm": math.nan})
        elif record is not None:
            rejected.append(record)
    if not labels:
        shutil.rmtree(out)
        raise CorrectionsError(f"{corrections}: no accepted or corrected image with points: nothing to write")
    write_csv(out / "landmarks.csv", pd.DataFrame(labels, columns=["image_name", *POINT_COLUMNS]), float_format="%.3f")
    write_csv(out / "hc18_reference.csv", pd.DataFrame(spacing, columns=["image_name", "pixel_size_mm", "hc_mm"]), float_format="%.9g")
    write_csv(out / "rejected.csv", pd.DataFrame(rejected, columns=["image_name", "reason"]))
    counts = {"rows": len(df), "labels": len(labels), **counts}
    write_text(out / "README.md", _readme(corrections, df, counts))
    return counts
