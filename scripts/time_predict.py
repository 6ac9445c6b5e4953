"""Wall time of `fetalbio predict` on a folder, for several checkouts side by side in one run.

Each entry is `NAME=ROOT,MODEL[,RUNTIME]`: the source checkout ROOT (its `src/` goes on
PYTHONPATH, with ROOT itself for older checkouts that had a top-level `stages` package), the model
file and the runtime (`auto` when not given). The entries run in turn, `--rounds` times, the
order rotated each round so that none always goes first; the whole command is timed (start-up,
reading, networks, writing the CSV), as a user meets it. Medians and their ratios to the first
entry go to `--out` (JSON) and stdout.

    python scripts/time_predict.py --images /tmp/p100 --out results/predict-timing/timing.json \
        start=/work/old96,/work/old96/pretrained/fetalbio-hc18.pt,torch \
        now_onnx=.,pretrained/fetalbio-hc18.pt,onnx now_torch=.,pretrained/fetalbio-hc18.pt,torch

Absolute seconds depend on the machine and its load; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_entry(text: str) -> tuple[str, Path, Path, str]:
    name, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or not name or len(parts) not in (2, 3):
        raise SystemExit(f"entry {text!r}: expected NAME=ROOT,MODEL[,RUNTIME]")
    root, model = Path(parts[0]).resolve(), Path(parts[1])
    model = model if model.is_absolute() else (root / model)
    if not (root / "src" / "fetalbio").is_dir():
        raise SystemExit(f"entry {name}: {root} has no src/fetalbio")
    if not model.is_file():
        raise SystemExit(f"entry {name}: model file {model} not found")
    return name, root, model, parts[2] if len(parts) == 3 else "auto"


def _commit(root: Path) -> str:
    """The checkout's commit, with ``+dirty`` when its tracked files differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("entries", nargs="+", help="NAME=ROOT,MODEL[,RUNTIME]; the first is the reference of the ratios")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="--threads of predict (torch and ONNX Runtime)")
    args = ap.parse_args()
    entries = [parse_entry(e) for e in args.entries]
    n_images = sum(1 for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
    exe = Path(sys.executable).parent / "fetalbio"
    times: dict[str, list[float]] = {name: [] for name, *_ in entries}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, root, model, runtime in entries[r % len(entries):] + entries[: r % len(entries)]:
                env = dict(os.environ, PYTHONPATH=f"{root / 'src'}{os.pathsep}{root}")
                cmd = [str(exe), "predict", "--images", str(args.images), "--out", f"{tmp}/{name}.csv", "--model", str(model),
                       "--threads", str(args.threads), "--no-progress"]
                if runtime != "auto":
                    cmd += ["--runtime", runtime]
                t0 = time.perf_counter()
                res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
                dt = time.perf_counter() - t0
                if res.returncode != 0:
                    raise SystemExit(f"{name}: predict failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
                times[name].append(round(dt, 3))
                print(f"round {r + 1} {name}: {dt:.2f} s  {res.stdout.strip().splitlines()[-1][:100]}", flush=True)
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    ref = entries[0][0]
    out = {
        "images": n_images,
        "rounds": args.rounds,
        "threads": args.threads,
        "entries": {name: {"root": str(root), "commit": _commit(root), "model": str(model), "runtime": rt} for name, root, model, rt in entries},
        "seconds": times,
        "median_s": med,
        f"ratio_to_{ref}": {k: round(v / med[ref], 3) for k, v in med.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"median_s": med, f"ratio_to_{ref}": out[f"ratio_to_{ref}"]}, indent=1))


if __name__ == "__main__":
    main()
