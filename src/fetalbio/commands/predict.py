"""Command ``predict`` (not a DVC stage): measure new images with an exported model."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import typer

from fetalbio.commands._common import friendly_errors
from fetalbio.config import ConfigError

app = typer.Typer(add_completion=False)


def _spacing_lookup(spacing: Optional[Path], pixel_size: Optional[float]):
    """image name -> mm per pixel (NaN when unknown)."""
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
    return lambda name: table.get(name, math.nan)


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
) -> None:
    """Measure BPD, OFD, HC (mm, with a pixel size) and GA of new images; one CSV row per image.

    An unreadable image becomes a `failed` row with the reason (exit code 0, with a warning).
    Which runtime ran the networks is said on stderr.
    """
    from fetalbio.inference.predictor import collect_images, draw_overlay, measurement_row, writer
    from fetalbio.inference.runtime import open_predictor, resolve_device
    from fetalbio.io import write_csv
    from fetalbio.reporting.review import write_review

    dev = resolve_device(device, runtime)  # torch is imported only where the networks run in it
    lookup = _spacing_lookup(spacing, pixel_size)
    paths, names = collect_images([*images, *(more_images or [])])
    predictor, note = open_predictor(model, runtime, dev, threads)
    if threads and predictor.runtime == "torch":
        import torch

        torch.set_num_threads(threads)
    typer.echo(note, err=True)
    loaded = predictor.model
    if masks is not None and loaded.family != "segmentation":
        typer.secho(f"warning: --masks ignored: {loaded.variant} is a landmark model (no mask)", fg=typer.colors.YELLOW, err=True)
        masks = None
    write_files = writer(masks, overlays)
    cards: list = []

    def on_result(m) -> None:
        write_files(m)
        if report is not None:
            row = measurement_row(m)
            cards.append((row, draw_overlay(m.image, m.prediction, row) if m.image is not None else None))

    table = predictor.measure(paths, names, lookup, batch_size, on_result, progress=progress and sys.stderr.isatty(), read_threads=read_threads)
    write_csv(out, table)
    if report is not None:
        write_review(report, cards, f"fetalbio review: {len(cards)} images, model {loaded.method}")
    counts = table["flag"].value_counts().to_dict()
    for r in table[table["flag"] == "failed"].itertuples(index=False):
        typer.secho(f"warning: {r.image_name}: failed ({r.reason})", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"predict: {len(table)} images with {loaded.method} on {predictor.device_type} ({predictor.runtime}): "
               + ", ".join(f"{counts.get(f, 0)} {f}" for f in ("ok", "uncertain", "failed")) + f" -> {out}")
