"""The DVC stage scripts (``stages/<name>.py``) and the ``fetalbio`` user command in one Typer
app, so that tests can invoke any of them by name with one CliRunner (``ingest``,
``clean-labels``, ... as dvc.yaml runs them; ``predict``, ``refine``, ... as a user does).
Importable as ``stage_cli`` (tests/conftest.py puts tests/support on sys.path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import typer

from fetalbio.cli import app as user_app

REPO = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "clean_labels", "build_folds", "train", "evaluate", "compare", "final")


def stage_module(name: str) -> ModuleType:
    """``stages/<name>.py`` imported as module ``fetalbio_stage_<name>``."""
    mod_name = f"fetalbio_stage_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, REPO / "stages" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def stage_script(name: str) -> list[str]:
    """The command line prefix that runs a stage as dvc.yaml does."""
    return [sys.executable, str(REPO / "stages" / f"{name}.py")]


app = typer.Typer(add_completion=False, no_args_is_help=True)
for _name in STAGES:
    _main = stage_module(_name).main
    app.command(_name.replace("_", "-"), help=_main.__doc__)(_main)
for _cmd in user_app.registered_commands:
    app.registered_commands.append(_cmd)
