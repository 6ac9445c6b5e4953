"""Stage ``build_folds``: subject-grouped, head-size-stratified K folds."""

from __future__ import annotations

from pathlib import Path

import typer

from fetalbio.commands._common import PARAMS_OPTION, friendly_errors, read_seed
from fetalbio.config import FoldsConfig, load_section
from fetalbio.data.tables import read_clean
from fetalbio.io import write_csv, write_json

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError)
def main(
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table."),
    out: Path = typer.Option(Path("data/folds.csv"), help="image_name, subject_id, size_bin, fold."),
    metrics: Path = typer.Option(Path("metrics/folds.json"), help="Per-fold counts."),
) -> None:
    """Assign every cleaned row to exactly one of K folds, grouped by subject."""
    from fetalbio.data.folds import assign_folds, fold_summary

    cfg = load_section(params, "folds", FoldsConfig)
    table = read_clean(labels)
    folds = assign_folds(table, cfg.k, cfg.size_bins, read_seed(params))
    write_csv(out, folds)
    write_json(metrics, {"k": cfg.k, "rows": len(folds), "subjects": int(folds["subject_id"].nunique()), "folds": fold_summary(folds, table)})
    typer.echo(f"build_folds: {len(folds)} rows, {folds['subject_id'].nunique()} subjects in {cfg.k} folds -> {out}")


if __name__ == "__main__":
    app()
