"""Stage ``final``: export the chosen variant as a self-describing model file with its model card."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fetalbio.commands._common import PARAMS_OPTION, compared_names, friendly_errors, read_seed
from fetalbio.config import FinalConfig, TrainConfig, VariantConfig, get_key, load_section, merged_train_config, read_params, variant_config
from fetalbio.data.tables import read_clean
from fetalbio.io import write_json, write_text
from fetalbio.variants import method_stages

app = typer.Typer(add_completion=False)


def read_per_image(path: Path):
    import pandas as pd

    return pd.read_csv(path, dtype={"image_name": str}) if path.is_file() else None


@app.command()
@friendly_errors(ValueError, FileNotFoundError, KeyError, TypeError)
def main(
    params: Path = PARAMS_OPTION,
    labels: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned label table."),
    images_root: Path = typer.Option(Path("data/ingested"), help="Folder the table's image/mask paths are relative to."),
    models_dir: Path = typer.Option(Path("models"), help="Folder with models/<variant>/fold*/ (held-out predictions, fold models)."),
    compare: Path = typer.Option(Path("metrics/compare.json"), help="The comparison the variant is chosen from."),
    metrics_dir: Path = typer.Option(Path("metrics/variants"), help="Folder with <variant>.json (cross-validated metrics for the card)."),
    plots_dir: Path = typer.Option(Path("plots/variants"), help="Folder with <variant>/per_image.csv (held-out errors and triage signals)."),
    out: Path = typer.Option(Path("release/model.pt"), help="The exported model file."),
    onnx: bool = typer.Option(True, help="Also write its ONNX form next to it (<out>.onnx + <out>.onnx.json, docs/onnx.md)."),
    logs: Path = typer.Option(Path("release/logs"), help="dvclive logs of the refit networks (one folder per network)."),
    card: Path = typer.Option(Path("reports/model_card.md"), help="The model card (Markdown)."),
    metrics: Path = typer.Option(Path("metrics/final.json"), help="What was exported (JSON)."),
) -> None:
    """Train the chosen variant on all cleaned rows (or gather its fold models) and export it (model file + ONNX form)."""
    from fetalbio.engine.distributed import DistContext
    from fetalbio.inference.export import choose_variant, export_final
    from fetalbio.reporting.model_card import model_card

    if DistContext.from_env().enabled:  # every rank would train and write the same files
        raise ValueError("final runs as one process; do not launch it with torchrun (only `fetalbio train` is distributed)")
    raw = read_params(params)
    fcfg = load_section(params, "final", FinalConfig)
    candidates = compared_names(raw, params)
    cmp = json.loads(Path(compare).read_text(encoding="utf-8"))
    method = choose_variant(cmp, fcfg.variant, candidates)
    variant, *later = [name for name, _ in method_stages(method)]
    common = load_section(params, "train", TrainConfig)

    def configs(name: str) -> tuple[VariantConfig, TrainConfig]:
        vcfg = variant_config(name, get_key(raw, f"variants.{name}", str(params)) or {}, f"variants.{name}")
        return vcfg, merged_train_config(common, vcfg, f"variants.{name}")

    vcfg, tcfg = configs(variant)
    logs.mkdir(parents=True, exist_ok=True)  # a declared output, also when nothing is refit (source: folds)
    (logs / "README.txt").write_text("dvclive logs of the networks the final stage refit on all cleaned rows, one folder each "
                                     "(none with final.source: folds).\n", encoding="utf-8")
    clean = read_clean(labels)
    data_root = str(get_key(raw, "data.root", str(params)))
    summary = export_final(clean, images_root, models_dir, cmp, variant, vcfg, tcfg, read_seed(params),
                           fcfg.source, fcfg.uncertain_quantile, data_root, out, later=[(n, *configs(n)) for n in later], method=method,
                           log_root=logs, resume_root=Path(".resume") / "final", per_image=read_per_image(plots_dir / method / "per_image.csv"))
    onnx_note = ""
    if onnx:
        from fetalbio.inference.onnx_export import export_onnx

        graph, manifest_path, _ = export_onnx(out)
        onnx_note = f" + {graph.name}, {manifest_path.name}"
    vm = json.loads((metrics_dir / f"{method}.json").read_text(encoding="utf-8"))
    write_json(metrics, summary)
    write_text(card, model_card(summary, vm, data_root, int(clean["subject_id"].nunique())))
    typer.echo(f"final: {method} ({fcfg.source}, {summary['n_models']} network(s)) -> {out}{onnx_note}, card {card}")


if __name__ == "__main__":
    app()
