"""Stage ``ingest``: dataset root (either layout) -> canonical table + 8-bit images + masks."""

from __future__ import annotations

from pathlib import Path

import typer

from fetalbio.commands._common import PARAMS_OPTION, friendly_errors
from fetalbio.config import DataConfig, load_section
from fetalbio.data.ingest import IngestError, ingest
from fetalbio.io import write_csv, write_json

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(IngestError)
def main(
    params: Path = PARAMS_OPTION,
    out_dir: Path = typer.Option(Path("data/ingested"), help="Output folder: table.csv, images/, masks/."),
    drops: Path = typer.Option(Path("reports/ingest_drops.csv"), help="Every dropped row with file, line, column and reason."),
    metrics: Path = typer.Option(Path("metrics/ingest.json"), help="Counts: rows in/kept/dropped, conversions."),
) -> None:
    """Read the dataset root named by params `data` and write one canonical table."""
    cfg = load_section(params, "data", DataConfig)
    result = ingest(cfg, out_dir)
    write_csv(out_dir / "table.csv", result.table)
    write_csv(drops, result.dropped)
    write_json(metrics, result.counts)
    typer.echo(f"ingest: {result.counts['rows_kept']} rows kept, {result.counts['rows_dropped']} dropped ({result.counts['layout']} layout) -> {out_dir / 'table.csv'}")
    if len(result.dropped):
        typer.secho(f"ingest: {len(result.dropped)} issue(s) recorded in {drops}", fg=typer.colors.YELLOW, err=True)


if __name__ == "__main__":
    app()
