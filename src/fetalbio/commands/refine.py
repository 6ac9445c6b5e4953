"""Stage ``refine``: one first-stage variant's held-out predictions, refined (coarse-to-fine)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fetalbio.commands._common import PARAMS_OPTION, friendly_errors
from fetalbio.config import ConfigError
from fetalbio.data.tables import read_clean
from fetalbio.variants import VARIANTS

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, FileNotFoundError, KeyError)
def main(
    variant: str = typer.Option(..., help="The first-stage variant whose held-out predictions are refined."),
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table (image paths; reference masks for the error report)."),
    images_root: Path = typer.Option(Path("data/ingested"), help="Folder the table's paths are relative to."),
    coarse_dir: Path = typer.Option(..., help="models/<variant>: fold*/oof.csv of the first stage."),
    refine_dir: Path = typer.Option(Path("models/refine"), help="models/refine: fold*/model.pt of the refinement stage."),
    out_dir: Path = typer.Option(..., help="models/<variant>_refined: fold*/oof.csv, masks/, summary.json."),
    passes: Optional[int] = typer.Option(None, help="Crop passes instead of the trained crop.passes (to measure another number; not used by dvc.yaml)."),
    combine: Optional[str] = typer.Option(None, help="mean | refined instead of the trained crop.combine (not used by dvc.yaml)."),
    tta: Optional[str] = typer.Option(None, help="none | hflip | hvflip instead of the trained crop.tta (not used by dvc.yaml)."),
) -> None:
    """Refine every fold's held-out coarse ellipses with the refinement network of that fold."""
    from fetalbio.engine.refine_run import refine_heldout

    if variant not in VARIANTS or not VARIANTS[variant].standalone_family:
        raise ConfigError(f"unknown first-stage variant {variant!r}")
    del params  # the refinement settings travel in its checkpoints
    totals = refine_heldout(read_clean(labels), images_root, coarse_dir, refine_dir, out_dir, passes=passes, combine=combine, tta=tta)
    kept = ", ".join(f"{k}: {v}" for k, v in totals["kept_reasons"].items()) or "none"
    typer.echo(f"refine {variant}: {totals['n_refined']}/{totals['n_images']} refined, {totals['n_kept_coarse']} kept coarse ({kept}) -> {out_dir}")
