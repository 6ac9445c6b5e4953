"""Which runtime runs a model's networks: torch, or ONNX Runtime on the model's ONNX form.

``auto`` takes ONNX Runtime when the model file ``X.pt`` has its ONNX form next to it
(``X.onnx`` + ``X.onnx.json``, :mod:`fetalbio.inference.onnx_form`) and the device is the CPU,
torch otherwise; the note returned says which and why. An ONNX form that is there but broken is
refused (never silently replaced by torch). ``X.onnx`` (or ``X.onnx.json``) given as the model
runs on ONNX Runtime from the two files alone, without the model file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fetalbio.config import ConfigError
from fetalbio.model_file import model_from_raw, read_model_file
from fetalbio.inference.predictor import Predictor

RUNTIMES = ("auto", "onnx", "torch")


def open_predictor(model: Path, runtime: str = "auto", device: torch.device | str = "cpu", threads: int = 0) -> tuple[Predictor, str]:
    """``(predictor, note)``: the model at ``model`` ready to measure, on the runtime chosen
    (``threads``: ONNX Runtime's intra-op threads, 0 its default; torch's are set by the caller)."""
    from fetalbio.inference.onnx_form import OnnxBackend, is_onnx_path, load_onnx_form, onnx_paths

    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    model, device = Path(model), torch.device(device)
    graph, manifest = onnx_paths(model)
    if is_onnx_path(model):
        if runtime == "torch":
            raise ConfigError(f"{model}: an ONNX form runs on ONNX Runtime only; give the model file (.pt) for --runtime torch")
        if device.type != "cpu":
            raise ConfigError(f"{model}: ONNX Runtime runs on the CPU here; use --device cpu")
        if not graph.exists() and not manifest.exists():
            raise FileNotFoundError(f"model file not found: {model}")
        form = load_onnx_form(model, threads)
        return Predictor(form.loaded_model(), "cpu", OnnxBackend(form)), f"runtime: onnx ({graph.name} + {manifest.name}, no model file)"
    raw = read_model_file(model)
    has_form = graph.exists() or manifest.exists()
    if runtime == "onnx" and not has_form:
        raise ConfigError(f"{model}: no ONNX form ({graph.name} not found next to it); make one with: fetalbio export {model} --format onnx")
    if runtime == "onnx" and device.type != "cpu":
        raise ConfigError("--runtime onnx runs on the CPU here; use --device cpu")
    if runtime == "torch" or not has_form or device.type != "cpu":
        why = ("as asked" if runtime == "torch" else
               f"no ONNX form {graph.name} next to the model; `fetalbio export {model} --format onnx` makes one" if not has_form else
               f"ONNX Runtime runs on the CPU here, the device is {device.type}")
        return Predictor(model_from_raw(model, raw, device), device), f"runtime: torch on {device.type} ({why})"
    form = load_onnx_form(model, threads, model_file=model)
    return Predictor(form.loaded_model(), "cpu", OnnxBackend(form)), f"runtime: onnx ({graph.name})"
