"""The ``fetalbio`` command: one subcommand per pipeline stage (dvc.yaml calls these)."""

from __future__ import annotations

import typer

from fetalbio.commands import bench, build_folds, clean_labels, compare, compare_runs, evaluate, export, final, ingest, params_merge, predict, refine, train

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fetal head biometry pipeline (BPD, OFD, HC).")
app.command("ingest", help=ingest.main.__doc__)(ingest.main)
app.command("clean-labels", help=clean_labels.main.__doc__)(clean_labels.main)
app.command("build-folds", help=build_folds.main.__doc__)(build_folds.main)
app.command("train", help=train.main.__doc__)(train.main)
app.command("refine", help=refine.main.__doc__)(refine.main)
app.command("evaluate", help=evaluate.main.__doc__)(evaluate.main)
app.command("compare", help=compare.main.__doc__)(compare.main)
app.command("final", help=final.main.__doc__)(final.main)
app.command("params-merge", help=params_merge.main.__doc__)(params_merge.main)
# user commands (not DVC stages)
app.command("predict", help=predict.main.__doc__)(predict.main)
app.command("bench", help=bench.main.__doc__)(bench.main)
app.command("export", help=export.main.__doc__)(export.main)
app.command("compare-runs", help=compare_runs.main.__doc__)(compare_runs.main)


if __name__ == "__main__":
    app()
