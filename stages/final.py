"""Stage ``final``: export the chosen variant as a self-describing model file with its model card."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fetalbio.config import FinalConfig, TrainConfig, VariantConfig, from_dict, get_key, load_section, merged_train_config, read_params
from fetalbio.data.tables import read_clean
from fetalbio.reporting import write_json, write_text
from stages._common import PARAMS_OPTION, friendly_errors, read_variant_names, read_seed

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, FileNotFoundError, KeyError, TypeError)
def main(
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table."),
    images_root: Path = typer.Option(Path("data/ingested"), help="Folder the table's image/mask paths are relative to."),
    models_dir: Path = typer.Option(Path("models"), help="Folder with models/<variant>/fold*/ (held-out predictions, fold models)."),
    compare: Path = typer.Option(Path("metrics/compare.json"), help="The comparison the variant is chosen from."),
    metrics_dir: Path = typer.Option(Path("metrics/variants"), help="Folder with <variant>.json (cross-validated metrics for the card)."),
    out: Path = typer.Option(Path("release/model.pt"), help="The exported model file."),
    card: Path = typer.Option(Path("reports/model_card.md"), help="The model card (Markdown)."),
    metrics: Path = typer.Option(Path("metrics/final.json"), help="What was exported (JSON)."),
) -> None:
    """Train the chosen variant on all cleaned rows (or gather its fold models) and export it."""
    from fetalbio.engine.distributed import DistContext
    from fetalbio.inference.export import choose_variant, export_final
    from fetalbio.reporting.model_card import model_card

    if DistContext.from_env().enabled:  # every rank would train and write the same files
        raise ValueError("final runs as one process; do not launch it with torchrun (only `fetalbio train` is distributed)")
    raw = read_params(params)
    fcfg = load_section(params, "final", FinalConfig)
    candidates = read_variant_names(raw, params)
    cmp = json.loads(Path(compare).read_text(encoding="utf-8"))
    variant = choose_variant(cmp, fcfg.variant, candidates)
    vcfg = from_dict(VariantConfig, get_key(raw, f"variants.{variant}", str(params)) or {}, f"variants.{variant}")
    tcfg = merged_train_config(load_section(params, "train", TrainConfig), vcfg, f"variants.{variant}")
    clean = read_clean(labels)
    data_root = str(get_key(raw, "data.root", str(params)))
    summary = export_final(clean, images_root, models_dir, cmp, variant, vcfg, tcfg, read_seed(params),
                           fcfg.source, fcfg.uncertain_quantile, data_root, out)
    vm = json.loads((metrics_dir / f"{variant}.json").read_text(encoding="utf-8"))
    write_json(metrics, summary)
    write_text(card, model_card(summary, vm, data_root, int(clean["subject_id"].nunique())))
    typer.echo(f"final: {variant} ({fcfg.source}, {summary['n_models']} network(s)) -> {out}, card {card}")
