"""The README's commands work as written: the `fetalbio predict` example is run from the README
itself (its output paths moved to a temporary folder), and every relative link resolves."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _predict_example() -> list[str]:
    text = README.read_text(encoding="utf-8")
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            if line.strip().startswith("fetalbio predict"):
                return shlex.split(line)
    raise AssertionError("no `fetalbio predict` example in the README")


def test_readme_predict_example_runs(tmp_path: Path) -> None:
    args = _predict_example()
    outputs = {"--out": "preds.csv", "--overlays": "overlays", "--report": "review.html"}
    for opt, name in outputs.items():
        if opt in args:
            args[args.index(opt) + 1] = str(tmp_path / name)
    proc = subprocess.run([sys.executable, "-m", "fetalbio.cli", *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert len(preds) == 2 and preds["hc_mm"].notna().all()
    assert (tmp_path / "review.html").stat().st_size > 10_000 and len(list((tmp_path / "overlays").iterdir())) == 2


def test_readme_and_docs_links_resolve() -> None:
    for md in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (md.parent / target).exists(), f"{md.relative_to(REPO)}: broken link {target}"
