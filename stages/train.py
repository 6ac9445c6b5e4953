"""Stages ``train_landmark`` / ``train_segmentation``: one variant x one fold."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from fetalbio.commands._common import PARAMS_OPTION, friendly_errors, read_seed
from fetalbio.config import ConfigError, TrainConfig, get_key, load_section, merged_train_config, read_params, variant_config
from fetalbio.data.tables import read_clean
from fetalbio.variants import VARIANTS

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, KeyError, TypeError, FileNotFoundError)
def main(
    variant: str = typer.Option(..., help=f"Variant name: {', '.join(VARIANTS)}."),
    fold: int = typer.Option(..., help="Held-out fold id."),
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table."),
    folds: Path = typer.Option(Path("data/folds.csv"), help="Fold assignment."),
    images_root: Path = typer.Option(Path("data/ingested"), help="Folder the table's image/mask paths are relative to."),
    out_dir: Path = typer.Option(..., help="Output folder: model.pt, oof.csv, masks/, dvclive/, summary.json (+ dvclive_seed<s>/ per extra seed of a seed ensemble; model.pt holds every member)."),
    resume_dir: Optional[Path] = typer.Option(None, help="Folder of the per-epoch resume file (outside models/: DVC deletes outs before a rerun); default .resume/<variant>/fold<k>."),
) -> None:
    """Train one variant on every fold but FOLD; predict the held-out fold."""
    from fetalbio.engine.distributed import DistContext
    from fetalbio.engine.run import default_resume_dir, train_fold
    from fetalbio.tasks import build_task

    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    raw = read_params(params)
    tcfg = load_section(params, "train", TrainConfig)
    vcfg = variant_config(variant, get_key(raw, f"variants.{variant}", str(params)) or {}, f"variants.{variant}")
    tcfg = merged_train_config(tcfg, vcfg, f"variants.{variant}")
    try:  # fail on a bad arch / codec / loss option before any data is read
        build_task(variant, vcfg, tcfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{params}: variants.{variant}: {exc}") from None
    summary = train_fold(read_clean(labels), pd.read_csv(folds, dtype={"subject_id": str}), images_root, variant, vcfg, tcfg, fold, read_seed(params), out_dir,
                         resume_dir=resume_dir if resume_dir is not None else default_resume_dir(variant, fold))
    if not DistContext.from_env().is_main:  # torchrun: rank 0 reports
        return
    typer.echo(
        f"train {variant} fold {fold}: best epoch {summary['best_epoch']}/{summary['epochs_run']}, "
        f"inner-val {summary['inner_val_score_kind']} {summary['best_inner_val_score']:.4g}, "
        f"{summary['train_seconds']:.1f}s on {summary['device']} -> {out_dir}"
    )
    if summary.get("n_heldout") and summary.get("n_failed_heldout") == summary["n_heldout"]:
        typer.secho(
            f"train {variant} fold {fold}: note: no held-out image could be measured: after {summary['epochs_run']} epoch(s) on "
            f"{summary['n_train']} images the network has not learned yet (best inner-val {summary['inner_val_score_kind']} "
            f"{summary['best_inner_val_score']:.3g}); give it more epochs (variants.{variant}.train.epochs) or more data",
            fg=typer.colors.YELLOW, err=True)


if __name__ == "__main__":
    app()
