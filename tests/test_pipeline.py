"""End to end: `dvc repro` on the embedded sample in a temporary copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COPY = ["dvc.yaml", "params.yaml", ".dvcignore", "src", "stages", "data/sample"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def micro_params(params: dict) -> dict:
    """The embedded configuration, shrunk for CI (fewer folds: same code paths)."""
    params = dict(params)
    params["folds"] = {**params["folds"], "k": 3}
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("project")
    for rel in COPY:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / rel)
    params = micro_params(yaml.safe_load((dst / "params.yaml").read_text()))
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dst)
    _run(["dvc", "init", "-q"], dst)
    _run(["dvc", "config", "core.analytics", "false"], dst)
    return dst


@pytest.mark.slow
def test_dvc_repro_end_to_end(project: Path) -> None:
    out = _run(["dvc", "repro"], project).stdout
    for stage in ("ingest", "clean_labels", "build_folds"):
        assert f"Running stage '{stage}'" in out
    table = pd.read_csv(project / "data/ingested/table.csv")
    assert len(table) == 48
    clean = pd.read_csv(project / "data/clean/labels.csv")
    folds = pd.read_csv(project / "data/folds.csv", dtype={"subject_id": str})
    assert set(folds["image_name"]) == set(clean["image_name"])
    assert (folds.groupby("subject_id")["fold"].nunique() == 1).all()
    assert (project / "plots/label_audit.png").stat().st_size > 10_000
    for m in ("ingest", "label_audit", "folds"):
        assert (project / f"metrics/{m}.json").is_file()

    again = _run(["dvc", "repro"], project).stdout
    assert "Running stage" not in again
    assert "up to date" in again.lower()
    status = _run(["dvc", "status"], project).stdout
    assert "up to date" in status.lower()


@pytest.mark.slow
def test_bad_params_fail_with_clear_message(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["labels"]["policy"] = "discard"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run(["fetalbio", "clean-labels", "--params", "params.yaml"], cwd=project, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 1
    assert "labels.policy must be one of ['drop', 'keep', 'weight'], got 'discard'" in proc.stderr
