"""Command ``summary``: the readable last screen of ``scripts/repro.sh`` (what ran, where the
outputs are, the top of the comparison, what the numbers mean)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fetalbio.commands._common import PARAMS_OPTION, friendly_errors
from fetalbio.config import read_params


@friendly_errors(ValueError, FileNotFoundError)
def main(
    params: Path = PARAMS_OPTION,
    root: Path = typer.Option(Path("."), help="The project folder (dvc.lock, metrics/, release/)."),
    seconds: Optional[float] = typer.Option(None, help="How long `dvc repro` took (s), to report."),
    since: Optional[float] = typer.Option(None, help="When it started (epoch seconds): stages whose outputs are newer ran."),
) -> None:
    """Print a short summary of the last `dvc repro`: what ran, where the outputs are, the top methods."""
    from fetalbio.reporting.summary import summary_text

    typer.echo(summary_text(root, seconds, since, read_params(params)), nl=False)
