"""The ``fetalbio`` command: what a user runs by hand. The DVC stages are scripts under the
project's ``stages/`` (``python stages/<name>.py``), which dvc.yaml calls."""

from __future__ import annotations

import typer

from fetalbio.commands import bench, compare_runs, corrections_to_source, export, params_merge, predict, refine, summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fetal head biometry (BPD, OFD, HC): measure images, compare runs, export models.")
app.command("predict", help=predict.main.__doc__)(predict.main)
app.command("bench", help=bench.main.__doc__)(bench.main)
app.command("export", help=export.main.__doc__)(export.main)
app.command("compare-runs", help=compare_runs.main.__doc__)(compare_runs.main)
app.command("refine", help=refine.main.__doc__)(refine.main)
app.command("params-merge", help=params_merge.main.__doc__)(params_merge.main)
app.command("summary", help=summary.main.__doc__)(summary.main)
app.command("corrections-to-source", help=corrections_to_source.main.__doc__)(corrections_to_source.main)


if __name__ == "__main__":
    app()
