"""Stage ``compare``: every variant's metrics -> one table, best per metric, paired test, figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer

from fetalbio.commands._common import PARAMS_OPTION, compared_names, friendly_errors
from fetalbio.config import get_key, read_params
from fetalbio.data.tables import read_clean
from fetalbio.io import read_oof_folds, write_csv, write_json, write_text

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, FileNotFoundError, KeyError)
def main(
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table."),
    images_root: Path = typer.Option(Path("data/ingested"), help="Folder the table's paths are relative to."),
    metrics_dir: Path = typer.Option(Path("metrics/variants"), help="Folder with <variant>.json per variant."),
    plots_dir: Path = typer.Option(Path("plots/variants"), help="Folder with <variant>/ plot data per variant."),
    models_dir: Path = typer.Option(Path("models"), help="Folder with models/<variant>/fold*/oof.csv."),
    out_json: Path = typer.Option(Path("metrics/compare.json"), help="Comparison (JSON)."),
    out_md: Path = typer.Option(Path("metrics/compare.md"), help="Comparison (Markdown table)."),
    figures_dir: Path = typer.Option(Path("plots/compare"), help="CED, Bland–Altman and worst-case figures."),
) -> None:
    """Compare every variant of params' variant_names, each alone and refined (<variant>_refined)."""
    from fetalbio.reporting.compare import best_of_family, compare_table, draw_bland_altman, draw_by_gestation, draw_ced, draw_worst_cases, gestation_table, markdown_table, paired_hc_test

    raw = read_params(params)
    names = compared_names(raw, params)
    data_root = get_key(raw, "data.root", str(params))
    metrics = {n: json.loads((metrics_dir / f"{n}.json").read_text()) for n in names}
    per_image = {n: pd.read_csv(plots_dir / n / "per_image.csv") for n in names}
    table, best = compare_table(metrics)
    test = paired_hc_test(per_image, best_of_family(table, "landmark"), best_of_family(table, "segmentation"))
    note = f"Data: `{data_root}` ({int(table['failed'].count())} variants, {len(per_image[names[0]])} held-out images each)."
    gest = gestation_table(metrics)
    write_json(out_json, {"table": table.to_dict(orient="records"), "best": best, "paired_test_hc": test, "data_root": data_root,
                          "hc_by_gestation": gest.to_dict(orient="records")})
    write_text(out_md, markdown_table(table, best, test, note, gest))
    figures_dir.mkdir(parents=True, exist_ok=True)
    draw_ced({n: pd.read_csv(plots_dir / n / "ced.csv") for n in names}, figures_dir / "ced.png")
    draw_bland_altman({n: pd.read_csv(plots_dir / n / "bland_altman.csv") for n in names}, figures_dir / "bland_altman.png")
    draw_by_gestation(per_image, figures_dir / "by_gestation.png")
    top = best.get("HC MAE mm", [names[0]])[0]
    draw_worst_cases(top, per_image[top], read_clean(labels), read_oof_folds(models_dir / top), images_root, figures_dir / "worst_cases.png")
    write_csv(figures_dir / "hc_abs_err.csv", pd.concat([per_image[n][["image_name", "hc_abs_err_mm"]].assign(variant=n) for n in names]))
    typer.echo(f"compare: {len(names)} variants; best HC MAE: {top} -> {out_md}")


if __name__ == "__main__":
    app()
