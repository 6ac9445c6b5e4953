"""Timing of prediction (and of a training step) for ``fetalbio bench`` -> ``metrics/bench.json``.

What is timed per *entry* -- a model on a runtime (torch eager, channels-last; ONNX Runtime on
the model's ONNX form) -- is what the speed target is about, ``model_ms_per_image_batch1``:
network forward + decoding (heatmap decoding or mask post-processing and ellipse fit) of one
preprocessed image, plus, for a two-stage (coarse-to-fine) model, the whole refinement stage
(``refine_ms_batch1``: head-aligned crop from the coarse ellipse, its normalisation, the
refinement network's forward, the mask's ellipse fit and the mapping back) -- every network of
the method, so the figure is what one measurement costs. Every entry (several ``--model``, each on torch and ONNX Runtime) runs in
the same process, on the same images, with the same number of threads, and interleaved: every
round times every entry once on each image, the order rotating from image to image, so a busy
spell of a shared machine slows all of them alike. Figures are medians over rounds and images
(25th/75th percentiles alongside), after a warm-up; ``onnx_over_torch`` gives their ratios per
model. Throughput at larger batches is interleaved the same way. Image decoding (file ->
pixels), preprocessing and overlay drawing are timed once (they do not depend on the runtime);
the training figure is forward + backward + AdamW step on batches of 8 at the model's input
size (torch, data loading and augmentation not included).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fetalbio.inference.export import n_parameters
from fetalbio.inference.predictor import Measured, Predictor, draw_overlay, measurement_row
from fetalbio.io import read_gray8
from fetalbio.model_file import LoadedModel

RUNTIME_CHOICES = ("both", "torch", "onnx")


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _median_ms(values: list[float]) -> float:
    return round(float(np.median(values)) * 1000.0, 3)


def _pct_ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000.0, 3)


@dataclass
class Entry:
    """One model on one runtime, and its timings."""

    model: str
    runtime: str
    predictor: Predictor
    pre: list = field(default_factory=list)  # the images' (tensor, letterbox)
    fwd: list[float] = field(default_factory=list)
    post: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)  # the refinement stage (two-stage models)
    batch: dict[int, list[float]] = field(default_factory=dict)

    def run(self, images: Sequence[np.ndarray], xb: torch.Tensor, lbs: list) -> list:
        """Both stages on a preprocessed batch (what ``predict`` does after reading)."""
        return self.predictor.follow(images, self.predictor.decode(self.predictor.forward(xb), lbs))

    def figures(self) -> dict[str, Any]:
        throughput = {str(bs): round(bs / float(np.median(v)), 2) for bs, v in self.batch.items()}
        best = max(throughput, key=throughput.get) if throughput else None
        f, p = _median_ms(self.fwd), _median_ms(self.post)
        refs = self.ref if self.ref else [0.0] * len(self.fwd)
        total = [a + b + c for a, b, c in zip(self.fwd, self.post, refs)]
        return {
            "forward_ms_batch1": f,
            "forward_ms_p25": _pct_ms(self.fwd, 25),
            "forward_ms_p75": _pct_ms(self.fwd, 75),
            "postprocess_ms_batch1": p,
            **({"refine_ms_batch1": _median_ms(self.ref)} if self.ref else {}),
            "model_ms_per_image_batch1": _median_ms(total),
            "timings": len(self.fwd),
            "images_per_s_by_batch": throughput,
            "best_batch": int(best) if best else None,
            "best_images_per_s": throughput[best] if best else None,
        }


def bench_device(model: LoadedModel, images: Sequence[np.ndarray], device: torch.device, batch_sizes: Sequence[int], warmup: int = 2) -> dict[str, Any]:
    """Torch times on one device (CUDA): forward and decoding at batch 1, images/s by batch."""
    pred = Predictor(model, device)
    pre = [pred.preprocess(im) for im in images]
    fwd, post = [], []
    for i, (x, lb) in enumerate(pre):
        box: dict = {}
        for _ in range(warmup if i == 0 else 0):
            pred.forward(x[None])
        fwd.append(_timed(lambda x=x: box.__setitem__("y", pred.forward(x[None])), device))
        post.append(_timed(lambda lb=lb: pred.decode(box["y"], [lb]), torch.device("cpu")))
    throughput = {}
    for bs in batch_sizes:
        reps = max(1, len(pre) // bs)
        xb = np.stack([pre[i % len(pre)][0] for i in range(bs)])
        lbs = [pre[i % len(pre)][1] for i in range(bs)]
        pred.decode(pred.forward(xb), lbs)
        secs = [_timed(lambda: pred.decode(pred.forward(xb), lbs), device) for _ in range(reps)]
        throughput[str(bs)] = round(bs / float(np.median(secs)), 2)
    best = max(throughput, key=throughput.get)
    forward_ms, post_ms = _median_ms(fwd), _median_ms(post)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "forward_ms_batch1": forward_ms,
        "postprocess_ms_batch1": post_ms,
        "model_ms_per_image_batch1": round(forward_ms + post_ms, 3),
        "images_per_s_by_batch": throughput,
        "best_batch": int(best),
        "best_images_per_s": throughput[best],
    }


def _n_parameters(model: LoadedModel) -> int:
    """Parameters of one first-stage network (an ONNX form's tasks decode without one: it is
    built, untrained, for its size)."""
    net = model.tasks[0].model
    if net is None:
        from fetalbio.config import VariantConfig, from_dict
        from fetalbio.tasks import build_task

        st = model.meta["stages"][0]
        net = build_task(st["variant"], from_dict(VariantConfig, st["variant_cfg"], "variant_cfg"), model.train_cfg).model
    return n_parameters(net.state_dict())


def train_images_per_s(model: LoadedModel, images: Sequence[np.ndarray], steps: int = 5) -> float:
    """Forward + backward + AdamW step on batches of 8 (torch, CPU), images per second."""
    import copy

    pred = Predictor(model, "cpu", backend=object())  # its preprocessing only
    xb = torch.from_numpy(np.stack([pred.preprocess(images[i % len(images)])[0] for i in range(8)]))
    net = copy.deepcopy(model.tasks[0].model).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> None:
        out = net(xb)
        loss = sum(o.float().pow(2).mean() for o in out) if isinstance(out, (list, tuple)) else out.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    secs = [_timed(step, torch.device("cpu")) for _ in range(steps)]
    return round(8 / float(np.median(secs)), 2)


def run_bench(
    models: Sequence[Path],
    paths: Sequence[Path],
    threads: int,
    batch_sizes: Sequence[int],
    cuda: bool,
    runtime: str = "both",
    rounds: int = 3,
    train: bool = True,
    warmup: int = 2,
    on_note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Everything ``metrics/bench.json`` holds (see the module docstring)."""
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"--runtime must be one of {', '.join(RUNTIME_CHOICES)}, got {runtime!r}")
    decode, images = [], []
    for p in paths:
        box: dict = {}
        decode.append(_timed(lambda p=p: box.__setitem__("im", read_gray8(p).pixels), torch.device("cpu")))  # p: a file or a FrameRef
        images.append(box["im"])
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        entries: list[Entry] = []
        per_model: list[dict[str, Any]] = []
        for m in models:
            row, mine = _model_row(Path(m), images, runtime, threads, batch_sizes, cuda, train)
            entries.extend(mine)
            per_model.append(row)
        _time_batch1(entries, images, rounds, warmup)
        _time_batches(entries, images, batch_sizes, rounds)
    finally:
        torch.set_num_threads(prev)
    for row in per_model:
        rts = {e.runtime: e.figures() for e in entries if e.model == row["model"]}
        row["runtimes"] = rts
        if "torch" in rts and "onnx" in rts:
            t, o = rts["torch"], rts["onnx"]
            row["onnx_over_torch"] = {
                "forward_ms_batch1": round(o["forward_ms_batch1"] / t["forward_ms_batch1"], 3),
                "model_ms_per_image_batch1": round(o["model_ms_per_image_batch1"] / t["model_ms_per_image_batch1"], 3),
                "ms_per_image_at_best_batch": round(t["best_images_per_s"] / o["best_images_per_s"], 3),
            }
        if on_note is not None:
            for note in row["notes"]:
                on_note(f"{row['model']}: {note}")
    import onnxruntime as ort

    return {
        "threads": threads, "rounds": rounds, "n_images": len(images), "image_sizes": sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images}),
        "image_decode_ms": _median_ms(decode), "models": per_model, "torch": torch.__version__, "onnxruntime": ort.__version__,
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
    }


def _model_row(m: Path, images: list[np.ndarray], runtime: str, threads: int, batch_sizes: Sequence[int], cuda: bool,
               train: bool) -> tuple[dict[str, Any], list[Entry]]:
    """A model's entries (one per runtime it is timed on) and its row: what it is, and what is timed
    once (preprocessing, overlay drawing, a training step, CUDA)."""
    from fetalbio.inference.onnx_form import onnx_paths
    from fetalbio.inference.runtime import open_predictor

    cpu = torch.device("cpu")
    graph, manifest = onnx_paths(m)
    has_onnx = graph.exists() or manifest.exists()
    wanted = ["torch", "onnx"] if runtime == "both" else [runtime]
    if m.name.endswith((".onnx", ".onnx.json")):
        wanted = [r for r in wanted if r == "onnx"] or ["onnx"]
    row: dict[str, Any] = {"model": str(m), "notes": []}
    mine = []
    for rt in wanted:
        if rt == "onnx" and not has_onnx and runtime == "both":
            row["notes"].append(f"no ONNX form ({graph.name}): torch only")
            continue
        pred, _ = open_predictor(m, rt, cpu, threads)
        mine.append(Entry(str(m), rt, pred))
    lm = mine[0].predictor.model
    stage_meta = lm.meta.get("stages", [{}])
    row.update({
        "method": lm.method, "family": lm.family,
        "n_networks": int(stage_meta[0].get("members", len(lm.tasks))) if mine[0].runtime == "onnx" else len(lm.tasks),
        "n_parameters": _n_parameters(lm), "input_size": list(lm.input_size), "stages": [st.get("role") for st in stage_meta] if stage_meta else ["coarse"],
    })
    pre = [mine[0].predictor.preprocess(im) for im in images]
    row["preprocess_ms"] = _median_ms([_timed(lambda im=im: mine[0].predictor.preprocess(im), cpu) for im in images])
    for e in mine:
        e.pre = pre
    torch_entry = next((e for e in mine if e.runtime == "torch"), None)
    if train and torch_entry is not None:
        row["train_images_per_s_batch8"] = train_images_per_s(torch_entry.predictor.model, images)
    outs = [e.predictor.decode(e.predictor.forward(x[None]), [lb])[0] for e in mine[:1] for x, lb in pre]
    overlay = []
    for im, p in zip(images, outs):
        r = measurement_row(Measured("x.png", im, p, 0.1, "ok", ""))
        overlay.append(_timed(lambda im=im, p=p, r=r: draw_overlay(im, p, r), cpu))
    row["overlay_ms"] = _median_ms(overlay)
    row["cuda"] = (bench_device(torch_entry.predictor.model, images, torch.device("cuda"), batch_sizes)
                   if cuda and torch.cuda.is_available() and torch_entry is not None else None)
    return row, mine


def _time_batch1(entries: list[Entry], images: list[np.ndarray], rounds: int, warmup: int) -> None:
    """Every entry on every image at batch 1, interleaved (the order rotating), after a warm-up."""
    cpu = torch.device("cpu")
    for e in entries:  # warm-up
        for k, (x, lb) in enumerate(e.pre[:warmup]):
            e.run([images[k]], x[None], [lb])
    n = len(entries)
    for r in range(rounds):
        for k in range(len(images)):
            shift = (r + k) % n
            for e in entries[shift:] + entries[:shift]:
                x, lb = e.pre[k]
                box: dict = {}
                e.fwd.append(_timed(lambda: box.__setitem__("y", e.predictor.forward(x[None])), cpu))
                e.post.append(_timed(lambda: box.__setitem__("p", e.predictor.decode(box["y"], [lb])), cpu))
                if len(e.predictor.model.stages) > 1:
                    e.ref.append(_timed(lambda: e.predictor.follow([images[k]], box["p"]), cpu))


def _time_batches(entries: list[Entry], images: list[np.ndarray], batch_sizes: Sequence[int], rounds: int) -> None:
    """Both stages on batches of each size, interleaved the same way, after a warm-up at each shape."""
    cpu, n = torch.device("cpu"), len(entries)
    for bs in batch_sizes:
        batches = {}
        for e in entries:
            xb = np.stack([e.pre[i % len(images)][0] for i in range(bs)])
            lbs = [e.pre[i % len(images)][1] for i in range(bs)]
            ims = [images[i % len(images)] for i in range(bs)]
            e.run(ims, xb, lbs)  # warm-up at this shape
            batches[id(e)] = (ims, xb, lbs)
        reps = max(2, len(images) // bs) * rounds
        for rep in range(reps):
            shift = rep % n
            for e in entries[shift:] + entries[:shift]:
                ims, xb, lbs = batches[id(e)]
                e.batch.setdefault(bs, []).append(_timed(lambda: e.run(ims, xb, lbs), cpu))
