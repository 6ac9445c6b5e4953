"""Temporary git + DVC copies of the project for the end-to-end tests (test_pipeline, test_scale).

Importable from tests as ``dvc_project`` (tests/conftest.py puts tests/support on sys.path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COPY = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "src", "stages", "data/sample"]
GIT_ID = ["-c", "user.name=ci", "-c", "user.email=ci@localhost"]


def dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with the venv's executables first on PATH; fail the test on a non-zero exit."""
    proc = subprocess.run(args, cwd=cwd, env=dvc_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def micro_params(params: dict) -> dict:
    """The embedded configuration shrunk for CI: 2 folds, one variant per kind of network
    (heatmap, regression, segmentation), tiny widths, 2 epochs. Same code paths."""
    params = dict(params)
    params["folds"] = {**params["folds"], "ids": [0, 1]}
    params["variant_names"] = ["hm_unet", "coord_regression", "seg_unet"]
    params["train"] = {**params["train"], "epochs": 2, "input_width": 96, "input_height": 64, "progress": False}
    v = params["variants"]
    v["hm_unet"] = {**v["hm_unet"], "arch": {"base_width": 4, "depth": 3}}
    v["seg_unet"] = {**v["seg_unet"], "arch": {"base_width": 4, "depth": 3}}
    v["refine"] = {**v["refine"], "arch": {"base_width": 4, "depth": 3}, "train": {"input_width": 96, "input_height": 64}}
    v["coord_regression"] = {**v["coord_regression"], "arch": {"base_width": 4, "hidden": 16}, "loss_cfg": {"scale": [96, 64]}}
    return params


def make_project(dst: Path, shrink: Callable[[dict], dict] = micro_params) -> Path:
    """Copy the project into ``dst``, rewrite params.yaml with ``shrink``, ``git init`` + ``dvc init``
    and commit it (a clone always has a commit; dvclive and ``dvc exp`` read the baseline revision)."""
    for rel in COPY:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / rel)
    params = shrink(yaml.safe_load((dst / "params.yaml").read_text()))
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dst)
    run(["dvc", "init", "-q"], dst)
    run(["dvc", "config", "core.analytics", "false"], dst)
    commit(dst, "copy")
    return dst


def commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", *GIT_ID, "commit", "-qm", message], project)
