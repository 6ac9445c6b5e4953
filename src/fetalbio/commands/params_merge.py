"""Command ``params-merge``: deep-merge an override YAML (e.g. configs/full-cpu.yaml) into
params.yaml, refusing keys that params.yaml does not have (typos)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
import yaml

from fetalbio.commands._common import friendly_errors
from fetalbio.config import ConfigError, TrainConfig, read_params

app = typer.Typer(add_completion=False)

def _may_add(where: str) -> bool:
    """A key params.yaml may lack: anything inside ``variants`` (a new variant, or options of one:
    validated when the variant's stage runs), and an optional key of the ``train`` section that
    params.yaml leaves at its default (e.g. ``train.schedule``)."""
    if where.startswith("variants."):
        return True
    section, _, key = where.partition(".")
    return section == "train" and key in {f.name for f in dataclasses.fields(TrainConfig)}


def deep_merge(base: dict[str, Any], over: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Merge ``over`` into ``base``. New keys are refused (typos) except where :func:`_may_add`
    allows them."""
    out = dict(base)
    for k, v in over.items():
        where = f"{path}.{k}" if path else k
        if k not in base and not _may_add(where):
            raise ConfigError(f"override key {where!r} does not exist in params.yaml")
        out[k] = deep_merge(base[k], v, where) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


@app.command()
@friendly_errors()
def main(
    override: Path = typer.Argument(..., help="YAML file with the keys to change.", exists=True, dir_okay=False),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Params file to update in place."),
) -> None:
    """Merge OVERRIDE into params.yaml (comments in params.yaml are not kept)."""
    merged = deep_merge(read_params(params), read_params(override))
    params.write_text(yaml.safe_dump(merged, sort_keys=False, default_flow_style=None, width=100))
    typer.echo(f"params-merge: {override} -> {params}")
