"""The last screen of ``scripts/repro.sh``: what ran, where the outputs are, the top of the
comparison in a few columns, and what the numbers mean (no torch, no DVC import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# the compare table's columns the summary shows (name in metrics/compare.json, width, format)
SUMMARY_COLUMNS = (("HC MAE mm", 10, "{:.2f}"), ("HC bias mm", 11, "{:+.2f}"), ("MRE mm", 7, "{:.2f}"), ("Mask Dice", 9, "{:.3f}"),
                   ("failed", 7, "{:.0f}"))


def stages_run(lock_path: Path, since: float, root: Path, names: set[str] | None = None) -> tuple[int, int]:
    """(stages whose outputs were written at or after ``since``, stages of the pipeline).
    ``names``: the pipeline's stages (default: DVC's own list of ``root``'s dvc.yaml; a lock file
    can keep entries of stages that no longer exist)."""
    if names is None:
        from dvc.repo import Repo

        names = {s.addressing for s in Repo(str(root)).index.stages}
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) if lock_path.is_file() else {}
    stages = {k: v for k, v in ((lock or {}).get("stages", {})).items() if k in names}
    ran = 0
    for st in stages.values():
        outs = [root / o["path"] for o in st.get("outs", [])]
        if any(p.exists() and p.stat().st_mtime >= since for p in outs):
            ran += 1
    return ran, len(names)


def _cell(value: Any, width: int, fmt: str) -> str:
    ok = isinstance(value, (int, float)) and value == value
    return (fmt.format(value) if ok else "–").rjust(width)


def top_rows(compare: dict[str, Any], n: int = 6) -> list[str]:
    """The ``n`` best methods by HC MAE, a fixed-width text table."""
    rows = [r for r in compare.get("table", []) if isinstance(r.get("HC MAE mm"), (int, float))]
    rows.sort(key=lambda r: (r["HC MAE mm"] != r["HC MAE mm"], r["HC MAE mm"]))
    width = max([len("method"), *(len(r["variant"]) for r in rows[:n])])
    head = "  " + "method".ljust(width) + "  " + "family".ljust(12) + "".join(c.rjust(w + 1) for c, w, _ in SUMMARY_COLUMNS)
    lines = [head]
    for r in rows[:n]:
        lines.append("  " + r["variant"].ljust(width) + "  " + str(r.get("family", "")).ljust(12)
                     + "".join(" " + _cell(r.get(c), w, f) for c, w, f in SUMMARY_COLUMNS))
    return lines


def summary_text(root: Path, seconds: float | None, since: float | None, params: dict[str, Any]) -> str:
    """The summary (plain text, under 30 lines) of a finished ``dvc repro`` in ``root``."""
    cmp_path = root / "metrics" / "compare.json"
    compare = json.loads(cmp_path.read_text(encoding="utf-8")) if cmp_path.is_file() else {}
    ingest = json.loads((root / "metrics" / "ingest.json").read_text(encoding="utf-8")) if (root / "metrics" / "ingest.json").is_file() else {}
    data = params.get("data", {})
    sources = ", ".join(f"{k}: {v.get('rows_kept', '?')} images" for k, v in (ingest.get("sources") or {}).items())
    folds = len((params.get("folds") or {}).get("ids", []))
    ran = ""
    if since is not None:
        n_ran, n_all = stages_run(root / "dvc.lock", since, root)
        ran = f"; {n_ran} of {n_all} stages ran, the rest were up to date" if n_ran < n_all else f"; all {n_all} stages ran"
    took = f" in {seconds / 60:.1f} min" if seconds is not None else ""
    lines = [f"fetalbio: dvc repro finished{took}{ran}.",
             f"Data: {data.get('root', '?')} ({sources or 'see metrics/ingest.json'}), {folds} subject-grouped folds.", ""]
    if compare:
        lines += ["Top methods by out-of-fold HC error against the sonographer (all of them: metrics/compare.md):", *top_rows(compare), ""]
    model = root / "release" / "model.pt"
    lines += ["Outputs: metrics/compare.md (every method, HC by gestation), plots/compare/*.png (figures),",
              f"         {'release/model.pt (the exported model), ' if model.exists() else ''}reports/model_card.md,",
              "         reports/label_audit.csv (the label audit), reports/ingest_drops.csv (rows dropped, and why)."]
    if data.get("root") == "data/sample":
        lines += ["", "What these numbers mean: this is the embedded sample, small networks trained for a few epochs on a few dozen",
                  "images so that every stage runs in minutes on a laptop. They show that the pipeline works end to end, not",
                  "how well the methods measure. The real figures (full data, full-size networks) are the README's shipped-model",
                  "table and docs/results.md; `fetalbio params-merge configs/full-cpu-whole.yaml && dvc repro` reruns them."]
    lines += ["", "Next: `dvc metrics show` (every metric), `dvc plots show` (interactive plots), and to measure your images:",
              "      fetalbio predict --model pretrained/fetalbio-hc18.pt --images <files> --report review.html"]
    return "\n".join(lines) + "\n"
