"""Timing of prediction (and of a training step) for ``fetalbio bench`` -> ``metrics/bench.json``.

Each figure is the median over images (or repeats) after a warm-up. ``model_ms_per_image`` is
what the speed target is about: network forward + decoding (heatmap decoding or mask
post-processing and ellipse fit) at batch 1. Image decoding (file -> pixels), preprocessing and
overlay drawing are timed separately. The training figure is forward + backward + AdamW step on
batches of 8 at the model's input size (data loading and augmentation not included).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fetalbio.data.io import read_gray8
from fetalbio.inference.export import n_parameters
from fetalbio.inference.model_file import LoadedModel
from fetalbio.inference.predictor import Predictor, draw_overlay, measurement_row, Measured


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


def bench_device(model: LoadedModel, images: Sequence[np.ndarray], device: torch.device, batch_sizes: Sequence[int], warmup: int = 2, train_steps: int = 5) -> dict[str, Any]:
    """Times on one device (the model's tasks are moved there)."""
    for t in model.tasks:
        t.model.to(device).eval()
    pred = Predictor(model, device)
    pre = [pred.preprocess(im) for im in images]
    pre_ms = _median_ms([_timed(lambda im=im: pred.preprocess(im), torch.device("cpu")) for im in images])
    fwd, post, outs = [], [], []
    for i, (x, lb) in enumerate(pre * 1):
        box: dict = {}
        for _ in range(warmup if i == 0 else 0):
            pred.forward(x[None])
        fwd.append(_timed(lambda x=x: box.__setitem__("y", pred.forward(x[None])), device))
        post.append(_timed(lambda lb=lb: box.__setitem__("p", pred.decode(box["y"], [lb])), torch.device("cpu")))
        outs.append(box["p"][0])
    overlay = []
    for im, p in zip(images, outs):
        row = measurement_row(Measured("x.png", im, p, 0.1, "ok", ""))
        overlay.append(_timed(lambda im=im, p=p, row=row: draw_overlay(im, p, row), torch.device("cpu")))
    throughput = {}
    for bs in batch_sizes:
        reps = max(1, len(pre) // bs)
        xb = torch.stack([pre[i % len(pre)][0] for i in range(bs)])
        lbs = [pre[i % len(pre)][1] for i in range(bs)]
        pred.decode(pred.forward(xb), lbs)  # warm-up at this shape
        secs = [_timed(lambda: pred.decode(pred.forward(xb), lbs), device) for _ in range(reps)]
        throughput[str(bs)] = round(bs / float(np.median(secs)), 2)
    best = max(throughput, key=throughput.get)
    # training step
    task = model.tasks[0]
    net = task.model.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    xb = torch.stack([pre[i % len(pre)][0] for i in range(8)]).to(device)

    def step() -> None:
        out = net(xb)
        loss = sum(o.float().pow(2).mean() for o in out) if isinstance(out, (list, tuple)) else out.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    train = [_timed(step, device) for _ in range(train_steps)]
    net.eval()
    forward_ms, post_ms = _median_ms(fwd), _median_ms(post)
    return {
        "device": device.type if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "forward_ms_batch1": forward_ms,
        "postprocess_ms_batch1": post_ms,
        "model_ms_per_image_batch1": round(forward_ms + post_ms, 3),
        "preprocess_ms": pre_ms,
        "overlay_ms": _median_ms(overlay),
        "images_per_s_by_batch": throughput,
        "best_batch": int(best),
        "best_images_per_s": throughput[best],
        "train_images_per_s_batch8": round(8 / float(np.median(train)), 2),
    }


def run_bench(model: LoadedModel, paths: Sequence[Path], threads: int, batch_sizes: Sequence[int], cuda: bool) -> dict[str, Any]:
    """Everything ``metrics/bench.json`` holds."""
    decode = []
    images = []
    for p in paths:
        box: dict = {}
        decode.append(_timed(lambda p=p: box.__setitem__("im", read_gray8(Path(p)).pixels), torch.device("cpu")))
        images.append(box["im"])
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cpu = bench_device(model, images, torch.device("cpu"), batch_sizes)
    finally:
        torch.set_num_threads(prev)
    gpu = bench_device(model, images, torch.device("cuda"), batch_sizes) if cuda and torch.cuda.is_available() else None
    return {
        "model": model.variant,
        "family": model.family,
        "n_networks": len(model.tasks),
        "n_parameters": n_parameters(model.tasks[0].model.state_dict()),
        "input_size": list(model.input_size),
        "n_images": len(images),
        "image_sizes": sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images}),
        "image_decode_ms": _median_ms(decode),
        "cpu": cpu,
        "cuda": gpu,
        "torch": torch.__version__,
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
