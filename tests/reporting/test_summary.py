"""The last screen of scripts/repro.sh: short, says what ran, the top methods and what they mean."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from fetalbio.reporting.summary import stages_run, summary_text


def _project(root: Path) -> None:
    (root / "metrics").mkdir(parents=True)
    (root / "out_new").write_text("x")
    (root / "out_old").write_text("x")
    os.utime(root / "out_old", (1_000_000, 1_000_000))
    lock = {"schema": "2.0", "stages": {"a": {"outs": [{"path": "out_new"}]}, "b": {"outs": [{"path": "out_old"}]},
                                        "gone": {"outs": [{"path": "out_new"}]}}}  # a stage no longer in dvc.yaml
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    rows = [{"variant": f"v{i}", "family": "landmark", "HC MAE mm": float(10 - i), "HC bias mm": 0.5, "MRE mm": 2.0, "Mask Dice": float("nan"), "failed": 0.0}
            for i in range(8)]
    (root / "metrics" / "compare.json").write_text(json.dumps({"table": rows}))
    (root / "metrics" / "ingest.json").write_text(json.dumps({"sources": {"fetal-head": {"rows_kept": 48}, "hc18-late": {"rows_kept": 8}}}))


def test_stages_run_counts_only_the_pipelines_stages_written_since_the_start(tmp_path: Path) -> None:
    _project(tmp_path)
    assert stages_run(tmp_path / "dvc.lock", time.time() - 60, tmp_path, names={"a", "b"}) == (1, 2)


def test_summary_is_short_readable_and_honest_about_the_sample(tmp_path: Path) -> None:
    _project(tmp_path)
    params = {"data": {"root": "data/sample"}, "folds": {"ids": [0, 1]}}
    text = summary_text(tmp_path, 600.0, None, params)
    lines = text.splitlines()
    assert lines[0] == "fetalbio: dvc repro finished in 10.0 min."
    assert "fetal-head: 48 images, hc18-late: 8 images" in text and "2 subject-grouped folds" in text
    assert len(lines) < 30 and max(len(ln) for ln in lines) <= 120  # readable in a terminal
    top = [ln for ln in lines if ln.startswith("  v")]
    assert [ln.split()[0] for ln in top] == ["v7", "v6", "v5", "v4", "v3", "v2"]  # the six best by HC MAE, best first
    assert "dvc metrics show" in text and "not" in text and "how well the methods measure" in text
    assert "embedded sample" not in summary_text(tmp_path, None, None, {"data": {"root": "../shared/data"}})
