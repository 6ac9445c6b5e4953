"""Command ``corrections-to-source`` (not a DVC stage): a reviewed corrections.csv -> a data source."""

from __future__ import annotations

from pathlib import Path

import typer

from fetalbio.commands._common import friendly_errors, plural
from fetalbio.data.corrections import CorrectionsError

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(CorrectionsError, FileNotFoundError)
def main(
    corrections: Path = typer.Argument(..., help="corrections.csv exported by the review page (fetalbio predict --report)."),
    images: list[Path] = typer.Option(..., "--images", help="The image folder(s) or file(s) predict read; repeat the option for several."),
    out: Path = typer.Option(..., help="The data source folder to write (e.g. data/reviewed-2025-06, under data.root)."),
    overwrite: bool = typer.Option(False, help="Replace OUT when it exists and is not empty."),
) -> None:
    """Turn the review page's corrections.csv into a data source (labels for the next model).

    Writes OUT in the challenge layout: images/, landmarks.csv (the reviewed points), masks/ (the
    reviewed ellipse), hc18_reference.csv (pixel sizes; hc_mm left empty: a reviewed measurement
    is no independent reference) and rejected.csv (ingest records each as a drop with the note).
    Name the folder in params.yaml data.sources and run dvc repro.
    """
    from fetalbio.data.corrections import corrections_to_source

    c = corrections_to_source(corrections, images, out, overwrite=overwrite)
    typer.echo(f"corrections-to-source: {plural(c['labels'], 'label')} ({c['accepted']} accepted, {c['corrected']} corrected), "
               f"{c['rejected']} rejected, {c['not_reviewed']} not reviewed -> {out}")
    if c["points_outside_image"]:
        typer.secho(f"warning: {c['points_outside_image']} reviewed image(s) have a caliper outside the image: "
                    f"listed in {out / 'rejected.csv'}, not as labels", fg=typer.colors.YELLOW, err=True)
    if c["accepted_without_points"]:
        typer.echo(f"note: {c['accepted_without_points']} accepted image(s) had no measurement (nothing to label)", err=True)
    typer.echo("next: add it to params.yaml data.sources (a folder under data.root), then dvc repro", err=True)
