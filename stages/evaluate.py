"""Stage ``evaluate``: one variant's out-of-fold predictions of all folds, alone and refined ->
metrics + plot data (one process for both: the sample's first run pays one start-up, not two)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import pandas as pd
import typer

from fetalbio.commands._common import PARAMS_OPTION, friendly_errors
from fetalbio.config import ConfigError, EvaluateConfig, load_section
from fetalbio.data.tables import read_clean
from fetalbio.io import read_oof_folds, write_csv, write_json
from fetalbio.variants import VARIANTS, method_family, method_outputs, method_stages, refined_name

app = typer.Typer(add_completion=False)


def _score(name: str, read_table: Callable[[], pd.DataFrame], images_root: Path, models: Path, metrics: Path, plots: Path, sdr: list[float], triage: bool) -> None:
    """Score ``models/<name>`` into ``metrics/<name>.json`` and ``plots/<name>/``."""
    from fetalbio.reporting.evaluate import evaluate, per_image_table, triage_signals

    first, *later = [v for v, _ in method_stages(name)]
    model_dir = models / name
    oof = read_oof_folds(model_dir)
    clean = read_table()  # after the predictions: a missing oof.csv is the error to report first
    pi = per_image_table(clean, oof, images_root, model_dir)
    signals = None
    if triage:  # a refined method also gets the stage-disagreement signal from its first stage
        signals = triage_signals(clean, oof.set_index("image_name").loc[pi["image_name"]].reset_index(), images_root, pi["pred_hc_mm"].to_numpy(),
                                 read_oof_folds(models / first) if later else None)
    # the registry says what a method is and gives; nothing is guessed from its files
    ev = evaluate(pi, method_family(name), sdr, signals, scores_masks="mask" in method_outputs(name))
    out = plots / name
    write_json(metrics / f"{name}.json", ev.summary)
    write_csv(out / "per_image.csv", ev.per_image)
    write_csv(out / "ced.csv", ev.ced)
    write_csv(out / "bland_altman.csv", ev.bland_altman)
    write_csv(out / "risk_coverage.csv", ev.risk_coverage)
    write_csv(out / "by_gestation.csv", ev.by_gestation)
    # a declared plot: written even without triage (header only) so that the stage's outputs exist
    write_csv(out / "interval_coverage.csv", ev.interval_coverage if ev.interval_coverage is not None else pd.DataFrame(columns=["hc_tercile", "coverage", "n"]))
    hc = ev.summary["measurements_vs_sonographer"]["hc"]
    typer.echo(f"evaluate {name}: {ev.summary['n_images']} images, HC MAE {hc['mae']} mm, MRE {ev.summary['landmarks_vs_clean_labels']['mre_mm']} mm -> {metrics / f'{name}.json'}")


@app.command()
@friendly_errors(ValueError, FileNotFoundError)
def main(
    variant: str = typer.Option(..., help="Variant name (its refined predictions are <variant>_refined)."),
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table (references)."),
    images_root: Path = typer.Option(Path("data/ingested"), help="Folder the table's paths are relative to."),
    models_dir: Path = typer.Option(Path("models"), help="Folder of models/<variant>/fold*/oof.csv (and <variant>_refined/)."),
    metrics_dir: Path = typer.Option(Path("metrics/variants"), help="Summary metrics: <metrics-dir>/<variant>.json (and _refined.json)."),
    plots_dir: Path = typer.Option(Path("plots/variants"), help="Plot data: <plots-dir>/<variant>/ (and <variant>_refined/)."),
    refined: bool = typer.Option(True, help="Also score <variant>_refined (the `refine` stage's output)."),
    triage: bool = typer.Option(True, help="Fit and score the nested out-of-fold triage (uncertainty, interval, flag)."),
) -> None:
    """Score a variant alone and refined: MRE, SDR, BPD/OFD/HC errors, Bland–Altman, Dice, risk–coverage."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    sdr = list(load_section(params, "evaluate", EvaluateConfig).sdr_thresholds_mm)
    read_table = cache(lambda: read_clean(labels))
    for name in [variant] + ([refined_name(variant)] if refined else []):
        _score(name, read_table, images_root, models_dir, metrics_dir, plots_dir, sdr, triage)


if __name__ == "__main__":
    app()
