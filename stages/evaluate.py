"""Stage ``evaluate``: one variant's out-of-fold predictions of all folds -> metrics + plot data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from fetalbio.commands._common import PARAMS_OPTION, friendly_errors
from fetalbio.config import ConfigError, EvaluateConfig, load_section
from fetalbio.data.tables import read_clean
from fetalbio.io import write_csv, write_json
from fetalbio.variants import VARIANTS, split_refined

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, FileNotFoundError)
def main(
    variant: str = typer.Option(..., help="Variant name, or <variant>_refined for its refined predictions."),
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table (references)."),
    images_root: Path = typer.Option(Path("data/ingested"), help="Folder the table's paths are relative to."),
    models_dir: Path = typer.Option(..., help="models/<variant> holding fold*/oof.csv."),
    metrics: Path = typer.Option(..., help="Summary metrics JSON (metrics/variants/<variant>.json)."),
    plots_dir: Path = typer.Option(..., help="Plot data folder (plots/variants/<variant>/)."),
    coarse_dir: Optional[Path] = typer.Option(None, help="For a refined method: models/<variant> of its first stage (the stage-disagreement signal)."),
    triage: bool = typer.Option(True, help="Fit and score the nested out-of-fold triage (uncertainty, interval, flag)."),
) -> None:
    """Score a variant: MRE, SDR, BPD/OFD/HC errors, Bland–Altman, Dice, risk–coverage."""
    from fetalbio.reporting.evaluate import evaluate, per_image_table, read_oof, triage_signals

    if split_refined(variant)[0] not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)} (and <variant>_refined)")
    cfg = load_section(params, "evaluate", EvaluateConfig)
    oof = read_oof(models_dir)
    clean = read_clean(labels)
    pi = per_image_table(clean, oof, images_root, models_dir)
    signals = None
    if triage:
        signals = triage_signals(clean, oof.set_index("image_name").loc[pi["image_name"]].reset_index(), images_root, pi["pred_hc_mm"].to_numpy(),
                                 read_oof(coarse_dir) if coarse_dir is not None else None)
    base, refined = split_refined(variant)
    family = VARIANTS[base].family  # the registry says what a method is; nothing is guessed from its files
    ev = evaluate(pi, family, list(cfg.sdr_thresholds_mm), signals, scores_masks=refined or family == "segmentation")
    write_json(metrics, ev.summary)
    write_csv(plots_dir / "per_image.csv", ev.per_image)
    write_csv(plots_dir / "ced.csv", ev.ced)
    write_csv(plots_dir / "bland_altman.csv", ev.bland_altman)
    write_csv(plots_dir / "risk_coverage.csv", ev.risk_coverage)
    write_csv(plots_dir / "by_gestation.csv", ev.by_gestation)
    # a declared plot: written even without triage (header only) so that the stage's outputs exist
    write_csv(plots_dir / "interval_coverage.csv", ev.interval_coverage if ev.interval_coverage is not None else pd.DataFrame(columns=["hc_tercile", "coverage", "n"]))
    hc = ev.summary["measurements_vs_sonographer"]["hc"]
    typer.echo(f"evaluate {variant}: {ev.summary['n_images']} images, HC MAE {hc['mae']} mm, MRE {ev.summary['landmarks_vs_clean_labels']['mre_mm']} mm -> {metrics}")


if __name__ == "__main__":
    app()
