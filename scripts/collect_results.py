"""Copy the reviewable outputs of a finished pipeline run into a results folder.

Usage: python scripts/collect_results.py SRC_REPO DEST_DIR [MODEL_DEST]

SRC_REPO is a checkout where `dvc repro` ran (for example on the full dataset); DEST_DIR gets
its metrics/, plots/compare/, the label-audit picture and report, params.yaml, dvc.lock, every
fold's training summary and a `provenance.json` (source commit, data root, variants, summed
training time). With MODEL_DEST (e.g. pretrained/fetalbio-hc18.pt) the exported model of the
`final` stage (release/model.pt) is copied there, its ONNX form (release/model.onnx + .onnx.json) next
to it with the same name, and its card as MODEL_CARD.md.
A run stopped before `final` (`dvc repro compare`) gets no metrics/final.json or model card: the
checkout's copies of those are the embedded sample's.
Nothing is computed here: every number is a stage output, copied as is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

# metrics/variants and plots/variants are copied per variant of the run (below): a checkout
# also holds the embedded sample's outputs of every other variant, which this run did not write
COPY = [
    "params.yaml",
    "dvc.lock",
    "metrics",
    "plots/compare",
    "plots/label_audit.png",
    "reports/label_audit.csv",
    "reports/ingest_drops.csv",
    "reports/model_card.md",
]

FINAL_OUTS = ["metrics/final.json", "reports/model_card.md"]


def _final_is_current(stages: dict, params: dict) -> bool:
    """``final`` is in the lock, ran on the outputs the lock records for the other stages and
    with the run's params (a checkout's lock keeps the sample's `final` entry when `dvc repro
    compare` stops before it). Folder dependencies that several stages fill (metrics/variants,
    models) are not compared; with nothing to compare the answer is False."""
    final = stages.get("final")
    if final is None:
        return False
    outs = {o["path"]: o.get("md5") for name, st in stages.items() if name != "final" for o in st.get("outs", [])}
    compared = 0
    for dep in final.get("deps", []):
        path = dep["path"]
        if path in outs:
            compared += 1
            if dep.get("md5") != outs[path]:
                return False
    for key, value in (final.get("params") or {}).get("params.yaml", {}).items():
        compared += 1
        if params.get(key) != value:
            return False
    return compared > 0


def _copy(src: Path, dest: Path, rel: str) -> None:
    """``src/rel`` (a file or a folder) to ``dest/rel``. In folders, metrics/bench.json (written
    by `fetalbio bench`, a command, not a stage) and the per-variant folders are left out."""
    s, d = src / rel, dest / rel
    if s.is_dir():
        shutil.copytree(s, d, dirs_exist_ok=True, ignore=shutil.ignore_patterns("bench.json", "variants"))
    elif s.is_file():
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, d)
    else:
        print(f"skip {rel}: not in {src}")


def main(src: Path, dest: Path, model_dest: Path | None = None) -> None:
    if not (src / "dvc.lock").is_file():
        sys.exit(f"{src}: no dvc.lock (has the pipeline run there?)")
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPY:
        _copy(src, dest, rel)
    params = yaml.safe_load((src / "params.yaml").read_text())
    stages = yaml.safe_load((src / "dvc.lock").read_text()).get("stages", {})
    final_ran = _final_is_current(stages, params)
    if not final_ran:  # a run stopped before `final` (`dvc repro compare`): the checkout's
        for rel in FINAL_OUTS:  # final outputs are the embedded sample's, not this run's
            if (dest / rel).is_file():
                (dest / rel).unlink()
                print(f"left out {rel}: the final stage did not run on this run's outputs")
    variants = list(params.get("variant_names", [])) or list(params.get("landmark_variants", [])) + list(params.get("segmentation_variants", []))
    refined = [f"{v}_refined" for v in variants if (src / "models" / f"{v}_refined").is_dir()]
    seconds: dict[str, float] = {}
    for v in variants + refined + (["refine"] if (src / "models" / "refine").is_dir() else []):
        for rel in (f"metrics/variants/{v}.json", f"plots/variants/{v}"):
            _copy(src, dest, rel)
        for summary in sorted((src / "models" / v).glob("fold*/summary.json")):
            out = dest / "folds" / v / f"{summary.parent.name}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(summary, out)
            secs = json.loads(summary.read_text()).get("train_seconds")  # refined folds: no training
            if secs is not None:
                seconds[v] = seconds.get(v, 0.0) + float(secs)
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    provenance = {
        "source_commit": commit,
        "data_root": params.get("data", {}).get("root"),
        "variants": variants + refined,
        "train_seconds_all_folds": {k: round(v, 1) for k, v in seconds.items()},
    }
    if model_dest is not None:
        if not final_ran:
            sys.exit(f"{src}: the final stage did not run on this run's outputs, so there is no model of this run to copy")
        model = src / "release" / "model.pt"
        if not model.is_file():
            sys.exit(f"{model}: no exported model (run the final stage)")
        model_dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model, model_dest)
        shutil.copy2(src / "reports" / "model_card.md", model_dest.parent / "MODEL_CARD.md")
        for suffix in (".onnx", ".onnx.json"):  # its ONNX form (docs/onnx.md), when final wrote one
            if (src / "release" / f"model{suffix}").is_file():
                shutil.copy2(src / "release" / f"model{suffix}", model_dest.with_suffix(suffix))
        provenance["model"] = {"path": str(model_dest), "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
    (dest / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"copied {src} -> {dest}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) == 4 else None)
