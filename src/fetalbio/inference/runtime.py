"""Which runtime runs a model's networks: torch, or ONNX Runtime on the model's ONNX form.

``auto`` takes ONNX Runtime when the model file ``X.pt`` has its ONNX form next to it
(``X.onnx`` + ``X.onnx.json``, :mod:`fetalbio.inference.onnx_form`) and the device is the CPU,
torch otherwise; the note returned says which and why. An ONNX form that is there but broken is
refused (never silently replaced by torch). ``X.onnx`` (or ``X.onnx.json``) given as the model
runs on ONNX Runtime from the two files alone, without the model file.

On ONNX Runtime nothing here imports torch (about a second of start-up): the model file is not
read, only its bytes hashed against the ONNX form's record of the file it was exported from,
and a segmentation or refinement stage decodes in numpy.
"""

from __future__ import annotations

import os
from pathlib import Path

from fetalbio.config import ConfigError
from fetalbio.inference.predictor import Predictor, device_type
from fetalbio.model_file import model_from_raw, read_model_file

RUNTIMES = ("auto", "onnx", "torch")
DEVICES = ("auto", "cpu", "cuda")
# a GPU driver leaves one of these; without any, torch cannot see CUDA (or ROCm), so `auto` means
# the CPU without importing torch to ask
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")


def resolve_device(device: str, runtime: str = "auto") -> str:
    """``cpu`` or ``cuda`` for ``--device auto|cpu|cuda`` (auto: CUDA when torch sees it;
    ``--runtime onnx``: the CPU, where ONNX Runtime runs here). Imports torch only to ask about
    CUDA, and only where a GPU driver is present."""
    if device not in DEVICES:
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu" or (device == "auto" and (runtime == "onnx" or not any(os.path.exists(f) for f in GPU_DRIVER_FILES))):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ConfigError("--device cuda but CUDA is not available")
    return "cpu"


def open_predictor(model: Path, runtime: str = "auto", device="cpu", threads: int = 0) -> tuple[Predictor, str]:
    """``(predictor, note)``: the model at ``model`` ready to measure, on the runtime chosen
    (``device``: ``cpu``/``cuda`` or a torch.device; ``threads``: ONNX Runtime's intra-op
    threads, 0 its default; torch's are set by the caller)."""
    from fetalbio.inference.onnx_form import OnnxBackend, is_onnx_path, load_onnx_form, onnx_paths

    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    model = Path(model)
    kind = device_type(device)
    graph, manifest = onnx_paths(model)
    if is_onnx_path(model):
        if runtime == "torch":
            raise ConfigError(f"{model}: an ONNX form runs on ONNX Runtime only; give the model file (.pt) for --runtime torch")
        if kind != "cpu":
            raise ConfigError(f"{model}: ONNX Runtime runs on the CPU here; use --device cpu")
        if not graph.exists() and not manifest.exists():
            raise FileNotFoundError(f"model file not found: {model}")
        form = load_onnx_form(model, threads)
        return Predictor(form.loaded_model(), "cpu", OnnxBackend(form)), f"runtime: onnx ({graph.name} + {manifest.name}, no model file)"
    if not model.is_file():
        raise FileNotFoundError(f"model file not found: {model}")
    has_form = graph.exists() or manifest.exists()
    if runtime == "onnx" and not has_form:
        raise ConfigError(f"{model}: no ONNX form ({graph.name} not found next to it); make one with: fetalbio export {model} --format onnx")
    if runtime == "onnx" and kind != "cpu":
        raise ConfigError("--runtime onnx runs on the CPU here; use --device cpu")
    if runtime == "torch" or not has_form or kind != "cpu":
        why = ("as asked" if runtime == "torch" else
               f"no ONNX form {graph.name} next to the model; `fetalbio export {model} --format onnx` makes one" if not has_form else
               f"ONNX Runtime runs on the CPU here, the device is {kind}")
        return Predictor(model_from_raw(model, read_model_file(model), device), device), f"runtime: torch on {kind} ({why})"
    # the form is used only if it was exported from this very file (load_onnx_form compares the
    # file's sha256 with the manifest's record), so the model file need not be loaded
    form = load_onnx_form(model, threads, model_file=model)
    return Predictor(form.loaded_model(), "cpu", OnnxBackend(form)), f"runtime: onnx ({graph.name})"
