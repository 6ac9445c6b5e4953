"""Command ``predict`` (not a DVC stage): measure new images with an exported model."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import typer

from fetalbio.commands._common import friendly_errors, plural
from fetalbio.config import ConfigError

app = typer.Typer(add_completion=False)


def _spacing_lookup(spacing: Optional[Path], pixel_size: Optional[float]):
    """image name -> mm per pixel (NaN when unknown). A frame ``file.dcm:N`` of a multi-frame
    file takes its own row in the ``--spacing`` CSV, else the file's; the lookup's ``table``
    holds the CSV's rows (to report those that match no image)."""
    if spacing is not None and pixel_size is not None:
        raise ConfigError("give --spacing or --pixel-size, not both")
    if pixel_size is not None:
        if not (math.isfinite(pixel_size) and pixel_size > 0):
            raise ConfigError(f"--pixel-size must be a positive number of mm, got {pixel_size}")
        return lambda name: pixel_size
    if spacing is None:
        return lambda name: math.nan
    from fetalbio.data.ingest import read_table_csv

    df = read_table_csv(spacing)
    if not {"image_name", "pixel_size_mm"} <= set(df.columns):
        raise ConfigError(f"{spacing}: needs columns image_name,pixel_size_mm (has {', '.join(df.columns)})")
    table: dict[str, float] = {}
    for line, (name, value) in enumerate(zip(df["image_name"], df["pixel_size_mm"]), start=2):
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{spacing} line {line}, column pixel_size_mm [{name}]: not a positive number: {value!r}")
        table[name] = v

    def lookup(name: str) -> float:
        base, sep, frame = name.rpartition(":")
        return table.get(name, table.get(base, math.nan) if sep and frame.isdigit() else math.nan)

    lookup.table = table
    return lookup


def _warn_unmatched_spacing(lookup, names: list[str]) -> None:
    """Warn about ``--spacing`` rows that name no image (a typo there silently loses mm)."""
    known = set(names) | {n.rpartition(":")[0] for n in names if ":" in n}
    unmatched = [n for n in getattr(lookup, "table", {}) if n not in known]
    if unmatched:
        typer.secho(f"warning: --spacing rows that match no image ({len(unmatched)}): {', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}",
                    fg=typer.colors.YELLOW, err=True)


def _warn_no_pixel_size(table) -> None:
    """Warn about measured images without a pixel size (their mm columns are empty)."""
    missing = table[(table["pixel_size_source"] == "none") & (table["flag"] != "failed")]
    if len(missing):
        first = ", ".join(missing["image_name"].head(5)) + (" ..." if len(missing) > 5 else "")
        typer.secho(f"warning: {plural(len(missing), 'image')} without a pixel size, so no mm values: {first} "
                    "(column pixel_size_note says why; give --pixel-size or --spacing)", fg=typer.colors.YELLOW, err=True)


def _sr_callback(sr: Optional[Path], method: str):
    """``on_result`` part writing each measured image's DICOM SR under ``sr`` (a no-op without
    ``--sr``), and what it wrote: ``{"written": [paths], "not_dicom": [image names]}``. A report
    that cannot be written is a warning, never the end of the run."""
    written: dict[str, list] = {"written": [], "not_dicom": []}
    if sr is None:
        return (lambda m: None), written
    from fetalbio.inference.dicom_sr import sr_writer
    from fetalbio.inference.predictor import measurement_row

    write = sr_writer(sr, method)

    def on_result(m) -> None:
        try:
            path = write(m, measurement_row(m))
        except Exception as exc:  # noqa: BLE001 - highdicom/pydicom refuse odd sources in many ways
            typer.secho(f"warning: {m.name}: no DICOM SR ({type(exc).__name__}: {str(exc)[:200]})", fg=typer.colors.YELLOW, err=True)
            return
        if path is not None:
            written["written"].append(path)
            if m.dicom is None:
                written["not_dicom"].append(m.name)

    return on_result, written


@app.command()
@friendly_errors(ValueError, FileNotFoundError)
def main(
    model: Path = typer.Option(..., help="Model file exported by the final stage (e.g. pretrained/fetalbio-hc18.pt), or its ONNX form (X.onnx)."),
    images: list[Path] = typer.Option(..., "--images", help="Image folder(s) or file(s); repeat the option, or list more files after it."),
    more_images: Optional[list[Path]] = typer.Argument(None, help="More image files (e.g. a shell glob after --images)."),
    out: Path = typer.Option(..., help="Output CSV."),
    spacing: Optional[Path] = typer.Option(None, help="CSV image_name,pixel_size_mm[,...] giving mm per pixel."),
    pixel_size: Optional[float] = typer.Option(None, help="One pixel size (mm) for every image."),
    overlays: Optional[Path] = typer.Option(None, help="Folder for overlays: the image with both diameters, the ellipse and the values."),
    masks: Optional[Path] = typer.Option(None, help="Folder for predicted masks (segmentation models)."),
    batch_size: int = typer.Option(8, min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto (CUDA when present) | cpu | cuda."),
    threads: int = typer.Option(0, min=0, help="CPU threads for torch and ONNX Runtime (0: their default)."),
    runtime: str = typer.Option("auto", help="auto (ONNX Runtime when the model has its ONNX form X.onnx next to it, on the CPU) | onnx | torch."),
    read_threads: int = typer.Option(2, min=0, help="Threads reading and preprocessing the next images while the networks run."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    report: Optional[Path] = typer.Option(None, help="Write a self-contained HTML review page: every image's overlay and values, failed and uncertain first."),
    frames: str = typer.Option("all", help="Frames of multi-frame DICOM files: all | first | frame numbers from 1 (2,5); a row each, named file.dcm:N."),
    sr: Optional[Path] = typer.Option(None, "--sr", help="Folder for DICOM Structured Reports: one per image measured in mm, referring to its DICOM source (docs/dicom.md)."),
) -> None:  # long: a Typer command, 17 lines of options; the body reads, measures and writes in one flow
    """Measure BPD, OFD, HC (mm, with a pixel size) and GA of new images; one CSV row per image.

    An unreadable image becomes a `failed` row with the reason (exit code 0, with a warning).
    Which runtime ran the networks is said on stderr.
    """
    from fetalbio.inference.predictor import collect_images, writer
    from fetalbio.inference.runtime import open_predictor, resolve_device
    from fetalbio.io import write_csv
    from fetalbio.reporting.review import CardImage, write_review
    from fetalbio.variants import method_outputs

    dev = resolve_device(device, runtime)  # torch is imported only where the networks run in it
    lookup = _spacing_lookup(spacing, pixel_size)
    from fetalbio.inference.predictor import parse_frames

    paths, names = collect_images([*images, *(more_images or [])], frames=parse_frames(frames))
    _warn_unmatched_spacing(lookup, names)
    predictor, note = open_predictor(model, runtime, dev, threads)
    if threads and predictor.runtime == "torch":
        import torch

        torch.set_num_threads(threads)
    typer.echo(note, err=True)
    loaded = predictor.model
    if masks is not None and "mask" not in method_outputs(loaded.method):  # the registry says what a method gives
        typer.secho(f"warning: --masks ignored: {loaded.method} is a landmark model (no mask)", fg=typer.colors.YELLOW, err=True)
        masks = None
    write_files = writer(masks, overlays)
    card_images: dict = {}  # image name -> the page's JPEGs, encoded as each image is measured
    write_sr, sr_written = _sr_callback(sr, loaded.method)

    def on_result(m) -> None:
        write_files(m)
        write_sr(m)
        if report is not None:
            card_images[m.name] = CardImage.of(m.image) if m.image is not None else None

    table = predictor.measure(paths, names, lookup, batch_size, on_result, progress=progress and sys.stderr.isatty(), read_threads=read_threads,
                              spacing_source="option" if pixel_size is not None else "csv" if spacing is not None else "none")
    _warn_no_pixel_size(table)
    if sr is not None:
        typer.echo(f"predict: {plural(len(sr_written['written']), 'DICOM SR')} -> {sr} (images measured in mm)", err=True)
        if sr_written["not_dicom"]:
            plain = sr_written["not_dicom"]
            typer.echo(f"note: {plural(len(plain), 'image')} not DICOM ({', '.join(plain[:3])}{' ...' if len(plain) > 3 else ''}): "
                       "their SRs refer to them by new UIDs, which no archive holds", err=True)
    for folder in dict.fromkeys(p.parent for p in (out, report) if p is not None):
        if not folder.exists():
            typer.echo(f"predict: created folder {folder}", err=True)
    write_csv(out, table)
    if report is not None:
        cards = [(row, card_images.get(row["image_name"])) for row in table.to_dict("records")]
        write_review(report, cards, f"fetalbio review: {plural(len(cards), 'image')}, model {loaded.method}")
        typer.echo(f"predict: review page -> {report}", err=True)
    counts = table["flag"].value_counts().to_dict()
    for r in table[table["flag"] == "failed"].itertuples(index=False):
        typer.secho(f"warning: {r.image_name}: failed ({r.reason})", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"predict: {plural(len(table), 'image')} with {loaded.method} on {predictor.device_type} ({predictor.runtime}): "
               + ", ".join(f"{counts.get(f, 0)} {f}" for f in ("ok", "uncertain", "failed")) + f" -> {out}")
