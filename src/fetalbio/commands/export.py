"""Command ``export`` (not a DVC stage): convert a model file to another format (ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fetalbio.commands._common import friendly_errors
from fetalbio.config import ConfigError

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, FileNotFoundError)
def main(
    model: Path = typer.Argument(..., help="Model file (format version 1 or 2), e.g. pretrained/fetalbio-hc18.pt."),
    format: str = typer.Option("onnx", "--format", help="onnx: the networks as X.onnx, everything else in X.onnx.json (docs/onnx.md)."),
    out: Optional[Path] = typer.Option(None, help="The graph's path (default: the model file with .onnx); the manifest is <out>.json."),
) -> None:
    """Write a model file's ONNX form (graph + JSON manifest), checked against torch."""
    from fetalbio.inference.onnx_export import export_onnx

    if format != "onnx":
        raise ConfigError(f"--format must be onnx, got {format!r}")
    graph, manifest_path, manifest = export_onnx(model, out)
    diff = max(manifest["export"]["max_abs_diff_vs_torch"].values())
    stages = " + ".join(f"{st['role']} {st['variant']} x{st['members']}" for st in manifest["stages"])
    typer.echo(f"export: {model} -> {graph} + {manifest_path.name} ({stages}; largest |ONNX Runtime - torch| {diff:.2g})")
