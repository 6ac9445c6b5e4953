"""Ingest: a dataset root in either supported layout -> one canonical table.

Layouts
-------
``challenge``
    ``images/``, ``landmarks.csv`` (``image_name`` + the eight point columns), optional
    ``masks/`` (0/255 filled skull, same file name) and an optional spacing CSV
    (``image_name,pixel_size_mm[,hc_mm]``).
``masks``
    ``images/``, ``masks/`` and the spacing CSV with the reference HC, no landmark CSV (e.g. the
    later-gestation source): the four points stored are the axis endpoints of the ellipse fitted
    to the mask outline (``has_landmarks`` false: landmark variants do not train on them and
    landmark errors are never measured against them).
``hc18``
    HC18 as published: ``training_set/NNN_HC.png`` + ``NNN_HC_Annotation.png`` (1-px ellipse
    outline) + ``training_set_pixel_size_and_HC.csv``. The four points are the axis endpoints of
    the ellipse fitted to the outline, and the outline is filled into a mask.

Several sources (``data.sources``: name -> folder under ``data.root``) are ingested into one
table; each row records its ``source`` and whether it has real landmark labels
(``has_landmarks``). A source folder may hold ``rejected.csv`` (``image_name,reason``: images a
reviewer rejected, e.g. from ``fetalbio corrections-to-source``): those rows are not ingested and
are listed in the drop report with the reviewer's reason.

Output (in ``out_dir``): ``table.csv`` (columns :data:`TABLE_COLUMNS`; paths relative to
``out_dir``), ``images/`` (8-bit grayscale copies; converted ones re-encoded as PNG) and
``masks/`` (0/255 PNG). Every problem found is an :class:`Issue` naming the file, the line and
the column; with ``on_error="error"`` all of them are raised together, with ``"drop"`` the rows
are dropped and listed with their reason in the drop report.

Coordinates are valid inside the image's pixel area: ``-0.5 <= x <= W - 0.5`` and the same for
``y`` (pixel centres at integers).
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fetalbio import POINT_COLUMNS
from fetalbio.config import DataConfig
from fetalbio.data.tables import subject_from_name
from fetalbio.io import ImageReadError, UnsafePathError, file_sha256, read_gray8, safe_join, write_png

TABLE_COLUMNS = [
    "image_name",
    "image_path",
    "width",
    "height",
    "subject_id",
    *POINT_COLUMNS,
    "points_source",
    "pixel_size_mm",
    "hc_mm",
    "mask_path",
    "image_sha256",
    "conversions",
    "source",
    "has_landmarks",
]
DROP_COLUMNS = ["file", "line", "column", "image_name", "reason"]
HC18_CSV = "training_set_pixel_size_and_HC.csv"
HC18_DIR = "training_set"


@dataclass(frozen=True)
class Issue:
    """One problem with one row (``line`` is the 1-based line in ``file``; header = line 1)."""

    file: str
    line: int | None
    column: str
    image_name: str
    reason: str

    def __str__(self) -> str:
        where = self.file + (f" line {self.line}" if self.line is not None else "")
        col = f", column {self.column}" if self.column else ""
        name = f" [{self.image_name}]" if self.image_name else ""
        return f"{where}{col}{name}: {self.reason}"


class IngestError(ValueError):
    """Raised with every issue found when ``on_error`` is ``error`` (or the input is unusable)."""

    def __init__(self, issues: list[Issue], header: str = "ingest found problems") -> None:
        self.issues = issues
        lines = "\n".join(f"  - {i}" for i in issues)
        super().__init__(f"{header} ({len(issues)}):\n{lines}")


@dataclass
class IngestResult:
    table: pd.DataFrame
    dropped: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def detect_layout(root: Path, cfg: DataConfig) -> str:
    if cfg.layout != "auto":
        return cfg.layout
    if (root / cfg.landmarks_csv).is_file():
        return "challenge"
    if (root / HC18_DIR).is_dir():
        return "hc18"
    if (root / cfg.masks_dir).is_dir() and (root / cfg.spacing_csv).is_file():
        return "masks"
    raise IngestError(
        [Issue(str(root), None, "", "", f"neither {cfg.landmarks_csv}, {HC18_DIR}/ nor {cfg.masks_dir}/ + {cfg.spacing_csv} found: unknown layout")],
        "cannot ingest",
    )


def read_table_csv(path: Path) -> pd.DataFrame:
    """Read a CSV robustly: BOM, ``,``/``;``/tab separators, stray spaces; all cells as text."""
    if not path.is_file():
        raise IngestError([Issue(str(path), None, "", "", "file not found")], "cannot ingest")
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise IngestError([Issue(str(path), None, "", "", "empty CSV")], "cannot ingest")
    header = text.splitlines()[0]
    sep = max([",", ";", "\t"], key=header.count)
    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True)
    df.columns = [str(c).strip() for c in df.columns]
    return df.apply(lambda s: s.str.strip())


def _require_columns(df: pd.DataFrame, required: list[str], file: str) -> pd.DataFrame:
    """Return ``df`` with required columns matched case-insensitively; raise listing every
    missing one, with the closest unused column name as a suggestion."""
    lower = {c.lower(): c for c in df.columns}
    rename = {lower[c]: c for c in required if c not in df.columns and c in lower}
    df = df.rename(columns=rename)
    unused = [c for c in df.columns if c not in required]
    issues = []
    for col in required:
        if col in df.columns:
            continue
        close = difflib.get_close_matches(col, unused, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        issues.append(Issue(file, 1, col, "", f"required column missing{hint}; found: {', '.join(df.columns)}"))
    if issues:
        raise IngestError(issues, f"{file}: missing or misspelled columns")
    return df


def _parse_number(value: str) -> float | None:
    """Float of a cell; None for non-numeric text; NaN for an empty cell."""
    if value == "" or value.lower() in {"nan", "na", "null", "none"}:
        return float("nan")
    try:
        return float(value)
    except ValueError:
        return None


def _points_issues(values: dict[str, str], size: tuple[int, int] | None, file: str, line: int, name: str) -> tuple[list[Issue], list[float]]:
    issues: list[Issue] = []
    coords: list[float] = []
    for col in POINT_COLUMNS:
        v = _parse_number(values[col])
        if v is None:
            issues.append(Issue(file, line, col, name, f"non-numeric coordinate {values[col]!r}"))
            coords.append(float("nan"))
            continue
        if np.isnan(v):
            issues.append(Issue(file, line, col, name, "missing (NaN) coordinate"))
        elif size is not None:
            limit = (size[0] if col.endswith("_x") else size[1]) - 0.5
            if not -0.5 <= v <= limit:
                issues.append(Issue(file, line, col, name, f"coordinate {v:g} outside the image (valid -0.5..{limit:g})"))
        coords.append(v)
    return issues, coords


def _read_spacing(path: Path, file: str) -> tuple[dict[str, tuple[float, float]], list[Issue], dict[str, Issue]]:
    """image_name -> (pixel_size_mm, hc_mm); bad rows become issues. An empty pixel size is NaN
    and its issue is held back (third value): it stands unless the image turns out to be a DICOM
    file, which carries its own (known once the image is read, by its content)."""
    df = read_table_csv(path)
    df = _require_columns(df, ["image_name", "pixel_size_mm"], file)
    out: dict[str, tuple[float, float]] = {}
    issues: list[Issue] = []
    blank: dict[str, Issue] = {}
    for i, row in df.iterrows():
        line = int(i) + 2
        name = row["image_name"]
        px = _parse_number(row["pixel_size_mm"])
        hc = _parse_number(row["hc_mm"]) if "hc_mm" in df.columns else float("nan")
        if px is None or (np.isfinite(px) and px <= 0):
            issues.append(Issue(file, line, "pixel_size_mm", name, f"pixel size must be a positive number, got {row['pixel_size_mm']!r}"))
            continue
        if hc is None or (np.isfinite(hc) and hc <= 0):
            issues.append(Issue(file, line, "hc_mm", name, f"hc_mm must be a positive number or empty, got {row['hc_mm']!r}"))
            continue
        if name in out:
            issues.append(Issue(file, line, "image_name", name, "duplicate image name in the spacing CSV"))
            continue
        out[name] = (px, hc)
        if not np.isfinite(px):
            blank[name] = Issue(file, line, "pixel_size_mm", name, f"pixel size must be a positive number (empty only for a DICOM file, which carries its own), got {row['pixel_size_mm']!r}")
    return out, issues, blank


def _mask_path(masks_dir: Path, name: str) -> Path:
    """A row's mask: the image's file name under the masks folder, else its stem + ``.png`` (the
    mask of a DICOM or other non-PNG image)."""
    own = masks_dir / Path(name).name
    return own if own.exists() else own.with_suffix(".png")


def _pixel_size(csv_px: float, loaded, pts: np.ndarray, counts: dict[str, int]) -> float:
    """The spacing CSV's pixel size, else a DICOM file's own for the head whose axis endpoints
    are ``pts`` (4, 2): the ultrasound region around them, else PixelSpacing (``io_dicom``)."""
    if np.isfinite(csv_px) or loaded.dicom is None or not np.isfinite(pts).all():
        return csv_px
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = loaded.dicom.pixel_size(tuple(pts.mean(axis=0)), (lo[0], lo[1], hi[0], hi[1]))
    counts["pixel_size_from_dicom"] = counts.get("pixel_size_from_dicom", 0) + int(np.isfinite(size.mm))
    return size.mm


def _store_image(src: Path, loaded, out_dir: Path, name: str, source: str) -> str:
    """Copy (or re-encode when converted) an image under ``out_dir/images/<source>``; relative path."""
    rel = Path("images") / source / name
    if loaded.conversions or src.suffix.lower() != ".png":
        rel = rel.with_suffix(".png")
        write_png(out_dir / rel, loaded.pixels)
    else:
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out_dir / rel)
    return rel.as_posix()


def _store_mask(mask01: np.ndarray, out_dir: Path, name: str, source: str) -> str:
    rel = (Path("masks") / source / name).with_suffix(".png")
    write_png(out_dir / rel, (mask01 > 0).astype(np.uint8) * 255)
    return rel.as_posix()


def _ingest_challenge(root: Path, cfg: DataConfig, out_dir: Path, source: str) -> tuple[list[dict], list[Issue], dict[str, int]]:  # long: one pass over the landmark CSV, each row check a line or two, in file order
    lm_file = cfg.landmarks_csv
    df = read_table_csv(root / lm_file)
    df = _require_columns(df, ["image_name", *POINT_COLUMNS], lm_file)
    has_subject = "subject_id" in df.columns
    spacing: dict[str, tuple[float, float]] = {}
    blank: dict[str, Issue] = {}
    issues: list[Issue] = []
    if cfg.spacing_csv and (root / cfg.spacing_csv).is_file():
        spacing, sp_issues, blank = _read_spacing(root / cfg.spacing_csv, cfg.spacing_csv)
        issues += sp_issues
    counts = {"rows_in": len(df), "converted_16bit": 0, "converted_colour": 0, "without_spacing": 0, "without_mask": 0}
    dup = df["image_name"].duplicated(keep=False)
    rows: list[dict] = []
    masks_dir = root / cfg.masks_dir
    images_root = root / cfg.images_dir
    for i, row in df.iterrows():
        line = int(i) + 2
        name = row["image_name"]
        row_issues: list[Issue] = []
        if dup[i]:
            row_issues.append(Issue(lm_file, line, "image_name", name, "duplicate image name"))
        try:
            src = safe_join(images_root, name)
            loaded = read_gray8(src)
        except (UnsafePathError, ImageReadError) as exc:
            row_issues.append(Issue(lm_file, line, "image_name", name, str(exc)))
            loaded = None
        pt_issues, coords = _points_issues(dict(row), loaded.size if loaded else None, lm_file, line, name)
        row_issues += pt_issues
        mask01 = None
        if loaded is not None and masks_dir.is_dir():
            mpath = _mask_path(masks_dir, name)
            if mpath.exists():
                try:
                    m = read_gray8(mpath)
                    if m.size != loaded.size:
                        row_issues.append(Issue(f"{cfg.masks_dir}/{Path(name).name}", None, "", name, f"mask size {m.size[0]}x{m.size[1]} differs from image size {loaded.size[0]}x{loaded.size[1]}"))
                    else:
                        mask01 = (m.pixels > 127).astype(np.uint8)
                except ImageReadError as exc:
                    row_issues.append(Issue(f"{cfg.masks_dir}/{Path(name).name}", None, "", name, str(exc)))
        if row_issues:
            issues += row_issues
            continue
        assert loaded is not None
        if loaded.dicom is not None:
            blank.pop(name, None)  # an empty pixel size is allowed: the file carries its own
        px, hc = spacing.get(name, (float("nan"), float("nan")))
        px = _pixel_size(px, loaded, np.asarray(coords, dtype=np.float64).reshape(4, 2), counts)
        counts["converted_16bit"] += "16bit_to_8bit" in loaded.conversions
        counts["converted_colour"] += any(c.endswith("_to_gray") for c in loaded.conversions)
        counts["without_spacing"] += not np.isfinite(px)
        counts["without_mask"] += mask01 is None
        rows.append(
            {
                "image_name": name,
                "image_path": _store_image(src, loaded, out_dir, name, source),
                "width": loaded.size[0],
                "height": loaded.size[1],
                "subject_id": row["subject_id"] if has_subject and row["subject_id"] else subject_from_name(name),
                **dict(zip(POINT_COLUMNS, coords)),
                "points_source": f"{lm_file}:{','.join(POINT_COLUMNS)}",
                "pixel_size_mm": px,
                "hc_mm": hc,
                "mask_path": _store_mask(mask01, out_dir, name, source) if mask01 is not None else "",
                "image_sha256": file_sha256(src),
                "conversions": ";".join(loaded.conversions),
                "source": source,
                "has_landmarks": True,
            }
        )
    issues += list(blank.values())  # empty pixel sizes of images that are not DICOM (their rows stay, without one)
    labelled = set(df["image_name"])
    extra = sorted(n for n in spacing if n not in labelled)
    counts["spacing_rows_without_landmarks"] = len(extra)
    if images_root.is_dir():
        counts["images_without_landmarks"] = sum(1 for p in images_root.iterdir() if p.is_file() and p.name not in labelled)
    return rows, issues, counts


def _ingest_hc18(root: Path, cfg: DataConfig, out_dir: Path, source: str) -> tuple[list[dict], list[Issue], dict[str, int]]:  # long: one pass over the HC18 CSV, each row check a line or two, in file order
    from fetalbio.geometry.ellipse import ellipse_endpoints, fit_ellipse
    from fetalbio.geometry.masks import fill_outline

    csv_file = f"{HC18_DIR}/{HC18_CSV}" if (root / HC18_DIR / HC18_CSV).is_file() else HC18_CSV
    df = read_table_csv(root / csv_file)
    rename = {}
    for c in df.columns:
        lc = c.lower()
        if lc in {"filename", "image_name"}:
            rename[c] = "image_name"
        elif lc.startswith("pixel size"):
            rename[c] = "pixel_size_mm"
        elif lc.startswith("head circumference"):
            rename[c] = "hc_mm"
    df = df.rename(columns=rename)
    df = _require_columns(df, ["image_name", "pixel_size_mm"], csv_file)
    issues: list[Issue] = []
    rows: list[dict] = []
    counts = {"rows_in": len(df), "converted_16bit": 0, "converted_colour": 0, "without_spacing": 0, "without_mask": 0}
    dup = df["image_name"].duplicated(keep=False)
    img_dir = root / HC18_DIR
    for i, row in df.iterrows():
        line = int(i) + 2
        name = row["image_name"]
        if dup[i]:
            issues.append(Issue(csv_file, line, "image_name", name, "duplicate image name"))
            continue
        px = _parse_number(row["pixel_size_mm"])
        hc = _parse_number(row["hc_mm"]) if "hc_mm" in df.columns else float("nan")
        if px is None or not np.isfinite(px) or px <= 0:
            issues.append(Issue(csv_file, line, "pixel_size_mm", name, f"pixel size must be a positive number, got {row['pixel_size_mm']!r}"))
            continue
        try:
            src = safe_join(img_dir, name)
            loaded = read_gray8(src)
            ann_name = f"{Path(name).stem}_Annotation{Path(name).suffix}"
            ann = read_gray8(safe_join(img_dir, ann_name))
        except (UnsafePathError, ImageReadError) as exc:
            issues.append(Issue(csv_file, line, "image_name", name, str(exc)))
            continue
        if ann.size != loaded.size:
            issues.append(Issue(f"{HC18_DIR}/{ann_name}", None, "", name, f"annotation size {ann.size} differs from image size {loaded.size}"))
            continue
        try:
            mask01 = fill_outline(ann.pixels)
            ys, xs = np.nonzero(ann.pixels > 127)
            pts = ellipse_endpoints(fit_ellipse(np.stack([xs, ys], axis=1).astype(np.float64)))
        except ValueError as exc:
            issues.append(Issue(f"{HC18_DIR}/{ann_name}", None, "", name, f"annotation outline unusable: {exc}"))
            continue
        counts["converted_16bit"] += "16bit_to_8bit" in loaded.conversions
        counts["converted_colour"] += any(c.endswith("_to_gray") for c in loaded.conversions)
        rows.append(
            {
                "image_name": name,
                "image_path": _store_image(src, loaded, out_dir, name, source),
                "width": loaded.size[0],
                "height": loaded.size[1],
                "subject_id": subject_from_name(name),
                **dict(zip(POINT_COLUMNS, pts.reshape(-1).tolist())),
                "points_source": f"{HC18_DIR}/*_Annotation:fitted_ellipse_axes",
                "pixel_size_mm": px,
                "hc_mm": hc if hc is not None else float("nan"),
                "mask_path": _store_mask(mask01, out_dir, name, source),
                "image_sha256": file_sha256(src),
                "conversions": ";".join(loaded.conversions),
                "source": source,
                "has_landmarks": False,
            }
        )
    return rows, issues, counts


def _mask_axes(mask01: np.ndarray) -> np.ndarray:
    """The four axis endpoints (4, 2) of the ellipse fitted to a filled mask's outline."""
    from fetalbio.geometry.ellipse import ellipse_endpoints, fit_ellipse
    from fetalbio.geometry.masks import boundary_points

    pts = boundary_points(mask01)
    if len(pts) < 6:
        raise ValueError("mask has no usable outline")
    return ellipse_endpoints(fit_ellipse(pts))


def _ingest_masks(root: Path, cfg: DataConfig, out_dir: Path, source: str) -> tuple[list[dict], list[Issue], dict[str, int]]:
    """Masks + spacing CSV, no landmark CSV: one row per spacing-CSV row."""
    spacing, issues, blank = _read_spacing(root / cfg.spacing_csv, cfg.spacing_csv)
    rows: list[dict] = []
    counts = {"rows_in": len(spacing) + len(issues), "converted_16bit": 0, "converted_colour": 0, "without_spacing": 0, "without_mask": 0}
    for line, (name, (px, hc)) in enumerate(spacing.items(), start=2):
        mask_file = f"{cfg.masks_dir}/{Path(name).name}"
        try:
            src = safe_join(root / cfg.images_dir, name)
            loaded = read_gray8(src)
            m = read_gray8(_mask_path(root / cfg.masks_dir, name))
        except (UnsafePathError, ImageReadError) as exc:
            issues.append(Issue(cfg.spacing_csv, line, "image_name", name, str(exc)))
            continue
        if m.size != loaded.size:
            issues.append(Issue(mask_file, None, "", name, f"mask size {m.size[0]}x{m.size[1]} differs from image size {loaded.size[0]}x{loaded.size[1]}"))
            continue
        if name in blank and loaded.dicom is None:
            issues.append(blank[name])
            continue
        mask01 = (m.pixels > 127).astype(np.uint8)
        try:
            pts = _mask_axes(mask01)
        except ValueError as exc:
            issues.append(Issue(mask_file, None, "", name, f"mask unusable: {exc}"))
            continue
        px = _pixel_size(px, loaded, pts, counts)
        counts["converted_16bit"] += "16bit_to_8bit" in loaded.conversions
        counts["converted_colour"] += any(c.endswith("_to_gray") for c in loaded.conversions)
        counts["without_spacing"] += not np.isfinite(px)
        rows.append({
            "image_name": name, "image_path": _store_image(src, loaded, out_dir, name, source),
            "width": loaded.size[0], "height": loaded.size[1], "subject_id": subject_from_name(name),
            **dict(zip(POINT_COLUMNS, pts.reshape(-1).tolist())), "points_source": f"{cfg.masks_dir}:fitted_ellipse_axes",
            "pixel_size_mm": px, "hc_mm": hc, "mask_path": _store_mask(mask01, out_dir, name, source),
            "image_sha256": file_sha256(src), "conversions": ";".join(loaded.conversions),
            "source": source, "has_landmarks": False,
        })
    return rows, issues, counts


LAYOUTS = {"challenge": _ingest_challenge, "hc18": _ingest_hc18, "masks": _ingest_masks}
REJECTED_CSV = "rejected.csv"


def _rejected(root: Path, source: str) -> list[Issue]:
    """The reviewer's rejections of a source (``rejected.csv``), as recorded drops."""
    path = root / REJECTED_CSV
    if not path.is_file():
        return []
    df = _require_columns(read_table_csv(path), ["image_name"], f"{source}/{REJECTED_CSV}")
    note = df["reason"] if "reason" in df.columns else pd.Series("", index=df.index)
    return [Issue(f"{source}/{REJECTED_CSV}", int(i) + 2, "image_name", n, f"rejected by the reviewer: {r or 'no note'}")
            for i, (n, r) in enumerate(zip(df["image_name"], note))]


def _ingest_source(name: str, root: Path, cfg: DataConfig, out_dir: Path) -> tuple[list[dict], list[Issue], list[Issue], dict]:
    """One source: its rows, its problems, the reviewer's rejections and its counts."""
    if not root.is_dir():
        raise IngestError([Issue(str(root), None, "", "", f"data source {name!r} is not a directory")], "cannot ingest")
    layout = detect_layout(root, cfg)
    rows, issues, counts = LAYOUTS[layout](root, cfg, out_dir, name)
    rejected = _rejected(root, name)
    gone = {i.image_name for i in rejected}
    rows = [r for r in rows if r["image_name"] not in gone]
    return rows, issues, rejected, {"layout": layout, "root": str(root), **counts, "rejected_by_reviewer": len(rejected), "rows_kept": len(rows)}


def _duplicate_names(rows: list[dict]) -> list[Issue]:
    first: dict[str, str] = {}
    issues = []
    for r in rows:
        if r["image_name"] in first and first[r["image_name"]] != r["source"]:
            issues.append(Issue(r["source"], None, "image_name", r["image_name"], f"image name also in source {first[r['image_name']]!r}: names must be unique across sources"))
        first.setdefault(r["image_name"], r["source"])
    return issues


def ingest(cfg: DataConfig, out_dir: Path, base_dir: Path | None = None) -> IngestResult:
    """Ingest every source of ``cfg`` (``data.sources`` under ``data.root``) into ``out_dir``.

    ``cfg.root`` is taken relative to ``base_dir`` (default: the working directory).
    Raises :class:`IngestError` listing every issue when ``cfg.on_error == "error"``; a
    reviewer's rejection (``rejected.csv``) is a recorded drop, never an error.
    """
    root = Path(cfg.root) if base_dir is None else (base_dir / cfg.root)
    if not root.is_dir():
        raise IngestError([Issue(str(root), None, "", "", "data root is not a directory")], "cannot ingest")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    rows, issues, rejected, per_source = [], [], [], {}
    for name, src_root in cfg.source_dirs(base_dir).items():
        r, i, rej, c = _ingest_source(name, src_root, cfg, out_dir)
        rows, issues, rejected, per_source[name] = rows + r, issues + i, rejected + rej, c
    dups = _duplicate_names(rows)
    issues += dups
    bad = {d.image_name for d in dups}
    rows = [r for r in rows if r["image_name"] not in bad]
    if issues and cfg.on_error == "error":
        shutil.rmtree(out_dir, ignore_errors=True)
        layouts = ", ".join(f"{n}: {c['layout']}" for n, c in per_source.items())
        raise IngestError(issues, f"ingest of {root} ({layouts}) found problems; fix them or set data.on_error: drop")
    dropped = pd.DataFrame([vars(i) for i in issues + rejected], columns=DROP_COLUMNS)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    if table.empty:
        raise IngestError(issues or [Issue(str(root), None, "", "", "no rows")], f"ingest of {root} kept no rows")
    rows_in = sum(c["rows_in"] for c in per_source.values())
    layouts = sorted({c["layout"] for c in per_source.values()})
    totals = {k: sum(int(c.get(k, 0)) for c in per_source.values()) for k in ("converted_16bit", "converted_colour", "without_spacing", "pixel_size_from_dicom", "without_mask", "rejected_by_reviewer")}
    counts = {"layout": "+".join(layouts), "rows_in": rows_in, "rows_kept": len(table), "rows_dropped": rows_in - len(table),
              "issues": len(dropped), "rows_with_landmarks": int(table["has_landmarks"].sum()), **totals, "sources": per_source}
    return IngestResult(table, dropped, counts)


def read_ingested(path: Path) -> pd.DataFrame:
    """Read an ingest table, checking its columns (the contract with later stages)."""
    df = pd.read_csv(path, dtype={"image_name": str, "subject_id": str, "mask_path": str, "conversions": str, "source": str}, keep_default_na=True)
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not an ingest table, missing columns {missing}")
    for c in ("mask_path", "conversions"):
        df[c] = df[c].fillna("")
    return df


