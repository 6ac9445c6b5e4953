"""Command ``compare-runs``: paired out-of-fold HC comparison of two runs (not a DVC stage)."""

from __future__ import annotations

from pathlib import Path

import typer

from fetalbio.commands._common import friendly_errors
from fetalbio.io import write_json, write_text

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, FileNotFoundError)
def main(
    run_a: str = typer.Argument(..., help="RUN_DIR:VARIANT of run A, e.g. results/full-cpu-4:seg_deeplabv3plus; RUN_DIR:V1,V2,... pairs each with B (one summary table)."),
    run_b: str = typer.Argument(..., help="RUN_DIR:VARIANT of run B, e.g. results/full-cpu-baseline:seg_unet."),
    out_md: Path = typer.Option(..., "--out", help="Markdown report to write.", dir_okay=False),
    out_json: Path | None = typer.Option(None, "--json", help="The same figures as JSON.", dir_okay=False),
    resamples: int = typer.Option(2000, min=100, help="Bootstrap resamples (of subjects) for the MAE difference's interval."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    common_images: bool = typer.Option(False, "--common-images", help="Pair on the images both runs measured, though their data and folds differ (each error stays out-of-fold in its own run)."),
) -> None:
    """Pair two runs' out-of-fold HC errors image by image (same images, folds and reference
    required) and report each run's agreement with the sonographer, the MAE difference A - B
    with a subject-bootstrap 95 % interval, the Wilcoxon test and the MAE by HC tercile."""
    from fetalbio.reporting.runs import compare_runs, read_run, runs_markdown, runs_summary_markdown

    run_dir, _, names = run_a.rpartition(":")
    specs = [f"{run_dir}:{n}" for n in names.split(",")] if "," in names else [run_a]
    b = read_run(run_b)
    results = [compare_runs(read_run(spec), b, n_boot=resamples, seed=seed, common=common_images) for spec in specs]
    write_text(out_md, runs_markdown(results[0]) if len(results) == 1 else runs_summary_markdown(results))
    if out_json is not None:
        write_json(out_json, results[0] if len(results) == 1 else {"comparisons": results})
    for result in results:
        p = result["paired"]
        lo, hi = p["mae_diff_ci95"]
        typer.echo(f"compare-runs: {result['a']['label']}: HC MAE {p['mae_a']:.3f} (A) vs {p['mae_b']:.3f} (B) mm on {p['n_images']} images; "
                   f"A - B {p['mae_diff']:+.3f} mm [{lo:+.3f}, {hi:+.3f}] -> {out_md}")
