"""Stage ``clean_labels``: audit the landmark labels, write the cleaned table and the report."""

from __future__ import annotations

from pathlib import Path

import typer

from fetalbio.commands._common import PARAMS_OPTION, friendly_errors, read_seed
from fetalbio.config import LabelsConfig, load_section
from fetalbio.data.ingest import read_ingested
from fetalbio.io import write_csv, write_json

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError)
def main(
    params: Path = PARAMS_OPTION,
    table: Path = typer.Option(Path("data/ingested/table.csv"), help="Ingest table."),
    out: Path = typer.Option(Path("data/clean/labels.csv"), help="Cleaned table (canonical points, evidence, weight)."),
    report: Path = typer.Option(Path("reports/label_audit.csv"), help="Every input row with evidence, flags and action."),
    metrics: Path = typer.Option(Path("metrics/label_audit.json"), help="Counts per reason."),
    picture: Path = typer.Option(Path("plots/label_audit.png"), help="Worst flagged rows drawn on their images."),
) -> None:
    """Semantics by geometry, canonical endpoint order, outlier evidence, policy drop/keep/weight."""
    from fetalbio.data.labels import audit, draw_audit_picture

    cfg = load_section(params, "labels", LabelsConfig)
    seed = read_seed(params)
    result = audit(read_ingested(table), table.parent, cfg, seed=seed)
    write_csv(out, result.clean)
    write_csv(report, result.report.drop(columns=["severity"]))
    shown = draw_audit_picture(result.report, table.parent, picture, cfg.audit_picture_rows)
    write_json(metrics, {**result.counts, "picture_rows": shown})
    c = result.counts
    typer.echo(
        f"clean_labels: {c['rows_in']} rows, renamed {c['renamed_ofd_bpd']}, flagged {c['flagged_any_label_reason']} "
        f"({c['policy']}: {c['rows_dropped']} dropped, {c['rows_weighted']} weighted) -> {out}"
    )


if __name__ == "__main__":
    app()
