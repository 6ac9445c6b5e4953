"""Stages ``train@<variant>`` and ``train_refine``: one variant, each of its folds in turn (one
process for all of them: a sample fold trains in seconds, so a process per fold was mostly start-up)."""

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
    fold: Optional[list[int]] = typer.Option(None, help="Held-out fold id (repeat for several); default: every id of params' folds.ids."),
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table."),
    folds: Path = typer.Option(Path("data/folds.csv"), help="Fold assignment."),
    images_root: Path = typer.Option(Path("data/ingested"), help="Folder the table's image/mask paths are relative to."),
    out_dir: Path = typer.Option(..., help="models/<variant>: per fold, fold<k>/ with model.pt, oof.csv, masks/, dvclive/, summary.json (+ dvclive_seed<s>/ per extra seed of a seed ensemble; model.pt holds every member)."),
    resume_dir: Optional[Path] = typer.Option(None, help="Folder of the per-epoch resume files, fold<k>/ each (outside models/: DVC deletes outs before a rerun); default .resume/<variant>."),
) -> None:
    """Train one variant on every fold but FOLD and predict the held-out fold, for each FOLD."""
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
    folds_ids = list(fold) if fold else _fold_ids(raw, params)
    for k in folds_ids:  # the tables are read afresh for each fold, as a process of its own would
        summary = train_fold(read_clean(labels), pd.read_csv(folds, dtype={"subject_id": str}), images_root, variant, vcfg, tcfg, k, read_seed(params), out_dir / f"fold{k}",
                             resume_dir=resume_dir / f"fold{k}" if resume_dir is not None else default_resume_dir(variant, k))
        if DistContext.from_env().is_main:  # torchrun: rank 0 reports
            _report(variant, k, summary, out_dir / f"fold{k}")


def _fold_ids(raw: dict, params: Path) -> list[int]:
    ids = get_key(raw, "folds.ids", str(params))
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ConfigError(f"{params}: folds.ids must be a non-empty list of fold numbers, got {ids!r}")
    return ids


def _report(variant: str, fold: int, summary: dict, out_dir: Path) -> None:
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
