"""What ``predict`` and ``bench`` say on the terminal: a progress bar only on a terminal, plural
forms, a created output folder said, and ``bench`` defaults that work from any folder without
touching the project's own metrics/bench.json."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pandas as pd

from fetalbio import POINT_COLUMNS

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "pretrained" / "fetalbio-hc18.pt"


def _sample(n: int) -> list[Path]:
    """The first ``n`` images of the sample's largest ``images/`` folder."""
    found = [p for p in (REPO / "data" / "sample").rglob("*_HC.png") if p.parent.name == "images"]
    folder = max(sorted({p.parent for p in found}), key=lambda d: sum(p.parent == d for p in found))
    return sorted(p for p in found if p.parent == folder)[:n]


def _cli(args: list, cwd: Path, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fetalbio.cli", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=stderr,
                          text=True, timeout=600)


def test_predict_says_one_image_and_the_folder_it_created(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    shutil.copy(_sample(1)[0], tmp_path / "one.png")
    blank.write_bytes(b"")  # unreadable: a failed row
    out = tmp_path / "new" / "deeper" / "preds.csv"
    proc = _cli(["predict", "--model", MODEL, "--images", tmp_path / "one.png", "--out", out, "--pixel-size", "0.1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"predict: created folder {out.parent}" in proc.stderr and out.is_file()
    assert "predict: 1 image with" in proc.stdout and "1 images" not in proc.stdout
    assert "img/s" not in proc.stderr and "%|" not in proc.stderr  # no progress bar: stderr is no terminal
    proc = _cli(["predict", "--model", MODEL, "--images", tmp_path / "one.png", blank, "--out", out, "--pixel-size", "0.1"], tmp_path)
    assert "predict: 2 images with" in proc.stdout and "created folder" not in proc.stderr
    failed = pd.read_csv(out).set_index("image_name").loc["blank.png"]
    assert failed["flag"] == "failed" and failed[list(POINT_COLUMNS)].isna().all()  # nothing measured: no endpoints


def test_predict_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for p in _sample(3):
        shutil.copy(p, folder / p.name)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    try:
        proc = _cli(["predict", "--model", MODEL, "--images", folder, "--out", tmp_path / "p.csv", "--pixel-size", "0.1"], tmp_path, stderr=slave)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"predict: 100%" in seen and b"3/3" in seen, seen[-2000:]


def test_bench_defaults_work_from_anywhere_and_leave_the_projects_metrics_alone(tmp_path: Path) -> None:
    ours = REPO / "metrics" / "bench.json"
    before = hashlib.sha256(ours.read_bytes()).hexdigest() if ours.exists() else None
    proc = _cli(["bench", "--model", MODEL, "--runtime", "onnx", "--n-images", "1", "--rounds", "1", "--batch-sizes", "1",
                 "--no-train", "--no-cuda"], tmp_path)  # run outside the repository
    assert proc.returncode == 0, proc.stderr
    assert "bench: timing on the project's sample images" in proc.stderr
    assert "bench: 1 model, 1 image x 1 round -> not saved" in proc.stdout
    assert not list(tmp_path.rglob("*.json"))
    assert (hashlib.sha256(ours.read_bytes()).hexdigest() if ours.exists() else None) == before
    out = tmp_path / "b" / "bench.json"
    proc = _cli(["bench", "--model", MODEL, "--runtime", "onnx", "--n-images", "1", "--rounds", "1", "--batch-sizes", "1",
                 "--no-train", "--no-cuda", "--out", out], tmp_path)
    assert proc.returncode == 0 and out.is_file() and f"-> {out}" in proc.stdout
