"""Per-image latency of several models, timed side by side, for a speed/accuracy comparison.

Usage: python scripts/speed_tradeoff.py OUT_MD NAME=MODEL[@MODE] [NAME=MODEL[@MODE] ...] [--images DIR] [--rounds R]

MODEL is a model file exported by `final` (`pretrained/fetalbio-hc18.pt`), or one or more fold
checkpoints (`models/<variant>/fold<k>/model.pt` of a run) joined by `+`: several checkpoints
make an ensemble whose raw outputs are averaged, exactly as `Predictor` averages the networks
of a model file. An ensemble's time does not depend on which weights its members hold, so two
fold models of one configuration time a two-seed export of that configuration.

MODE runs the networks another way than `Predictor`'s eager channels-last forward, to measure
what a graph compiler would give: `jit` (TorchScript trace at the model's input size, frozen,
`optimize_for_inference`; deprecated in this torch) or `compile` (`torch.compile`, default
inductor backend; needs a C compiler). The compilation itself is not timed; its wall time is
reported.

What is timed is what `fetalbio bench` calls `model_ms_per_image_batch1` (the speed target):
`Predictor.forward` + `Predictor.decode` of one preprocessed image, on 2 CPU threads. Every
round times each model once on each image, the models in turn (which one goes first rotates),
so a busy spell of a shared machine slows all of them alike; the table gives the median over
rounds and images, and the 25th / 75th percentiles. The same figures go to OUT_MD with a .json suffix.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fetalbio.data.io import read_gray8
from fetalbio.engine.train import load_checkpoint
from fetalbio.inference.export import n_parameters
from fetalbio.inference.model_file import FORMAT, LoadedModel, load_model
from fetalbio.inference.predictor import Predictor

from compare_fits import load_fold_model, write_report  # scripts/ is on sys.path when run as a script

THREADS = 2


def load_any(spec: str) -> LoadedModel:
    """A model file, or fold checkpoints joined by ``+`` (one network each, same configuration)."""
    parts = [Path(p) for p in spec.split("+")]
    for p in parts:
        if not p.is_file():
            sys.exit(f"{p}: no such file")
    if len(parts) == 1 and load_checkpoint_format(parts[0]) == FORMAT:
        return load_model(parts[0])
    tasks, tcfgs, variants = [], [], []
    for p in parts:
        variant = load_checkpoint(p)["config"]["variant"]
        task, tcfg, _ = load_fold_model(p, variant)
        tasks.append(task)
        tcfgs.append(tcfg)
        variants.append(variant)
    if len(set(variants)) != 1 or any(t != tcfgs[0] for t in tcfgs[1:]):
        sys.exit(f"{spec}: the checkpoints are not of one variant and configuration")
    return LoadedModel(variants[0], tasks[0].family, tasks, tcfgs[0], None, {})


def compiled(pred: Predictor, mode: str, example: torch.Tensor) -> float:
    """Replace ``pred``'s networks by compiled ones; returns the seconds compiling took."""
    import warnings

    t0 = time.perf_counter()
    x = example.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # TracerWarning / DeprecationWarning of torch.jit
        if mode == "jit":
            pred.nets = [torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(n, x))) for n in pred.nets]
        elif mode == "compile":
            pred.nets = [torch.compile(n) for n in pred.nets]
        else:
            sys.exit(f"unknown mode {mode!r}: jit or compile")
        for n in pred.nets:
            n(x)  # compile now, not in the first timed call
    return time.perf_counter() - t0


def load_checkpoint_format(path: Path) -> str | None:
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return raw.get("format") if isinstance(raw, dict) else None


def main(argv: list[str]) -> None:
    images_dir, rounds = Path("data/sample/images"), 5
    args = list(argv)
    if "--images" in args:
        i = args.index("--images")
        images_dir = Path(args.pop(i + 1))
        args.pop(i)
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args.pop(i + 1))
        args.pop(i)
    if len(args) < 2 or any("=" not in a for a in args[1:]):
        sys.exit(__doc__)
    out_md = Path(args[0])
    pairs = [a.split("=", 1) for a in args[1:]]
    specs = dict(pairs)
    if len(specs) != len(pairs):
        sys.exit(f"a NAME is given twice: {', '.join(n for n, _ in pairs)}")
    torch.set_num_threads(THREADS)
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() == ".png")[:16]
    if not paths:
        sys.exit(f"{images_dir}: no .png images")
    images = [read_gray8(p).pixels for p in paths]
    modes = {name: spec.rpartition("@")[2] if "@" in spec else "" for name, spec in specs.items()}
    models = {name: load_any(spec.rpartition("@")[0] if "@" in spec else spec) for name, spec in specs.items()}
    preds = {name: Predictor(m, "cpu") for name, m in models.items()}
    inputs = {name: [p.preprocess(im) for im in images] for name, p in preds.items()}
    compile_s = {name: round(compiled(preds[name], mode, inputs[name][0][0][None]), 1) for name, mode in modes.items() if mode}
    times: dict[str, list[float]] = {name: [] for name in models}
    for name, p in preds.items():  # warm-up
        for x, lb in inputs[name][:2]:
            p.decode(p.forward(x[None]), [lb])
    order = list(preds)
    for r in range(rounds):
        for k in range(len(images)):
            turn = order[(r + k) % len(order):] + order[: (r + k) % len(order)]  # every model in every position, in turn
            for name in turn:
                p = preds[name]
                x, lb = inputs[name][k]
                t0 = time.perf_counter()
                p.decode(p.forward(x[None]), [lb])
                times[name].append(time.perf_counter() - t0)
    rows = {}
    for name, m in models.items():
        t = np.asarray(times[name]) * 1000.0
        rows[name] = {
            "model": specs[name].rpartition("@")[0] if modes[name] else specs[name],
            "variant": m.variant,
            "mode": modes[name] or "eager",
            "compile_seconds": compile_s.get(name),
            "networks": len(m.tasks),
            "parameters_per_network": n_parameters(m.tasks[0].model.state_dict()),
            "input_size": list(m.input_size),
            "ms_median": round(float(np.median(t)), 2),
            "ms_p25": round(float(np.percentile(t, 25)), 2),
            "ms_p75": round(float(np.percentile(t, 75)), 2),
            "timings": int(t.size),
        }
    meta = {"threads": THREADS, "images": len(images), "rounds": rounds, "torch": torch.__version__, "python": platform.python_version()}
    lines = [
        "# Latency per image: forward + decode, batch 1, 2 CPU threads",
        "",
        f"Written by `python scripts/{Path(__file__).name} {' '.join(argv)}`: {len(images)} images of "
        f"`{images_dir}`, {rounds} rounds, the models timed in turn on each image (torch {torch.__version__}).",
        "",
        "| name | model | variant | run as | networks | parameters each | input | median ms | 25th–75th pct ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        w, h = r["input_size"]
        how = r["mode"] + (f" ({r['compile_seconds']} s to compile)" if r["compile_seconds"] is not None else "")
        lines.append(f"| {name} | `{r['model']}` | `{r['variant']}` | {how} | {r['networks']} | {r['parameters_per_network']:,} | {w}×{h} | "
                     f"**{r['ms_median']:.2f}** | {r['ms_p25']:.2f}–{r['ms_p75']:.2f} |")
    write_report(out_md, lines)
    out_md.with_suffix(".json").write_text(json.dumps({"meta": meta, "models": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
