"""The self-describing model file that ``fetalbio predict`` loads.

One ``torch.save`` of plain data and tensors only, so it loads with ``weights_only=True``:

``format``, ``format_version``
    ``"fetalbio-model"``, :data:`FORMAT_VERSION`.
``variant``, ``family``, ``spec``, ``variant_cfg``, ``train_cfg``
    what rebuilds the network, its preprocessing (letterbox size, normalisation) and its
    decoding (codec or mask post-processing).
``state_dicts``
    one state dict, or several (an ensemble of fold models whose raw outputs are averaged).
``calibration``
    what decoding measured on training rows (:meth:`fetalbio.tasks.base.Task.calibrate`).
``uncertainty_threshold_px``, ``uncertain_quantile``
    an image whose mean point uncertainty exceeds the threshold is flagged ``uncertain``; the
    threshold is that quantile of the held-out uncertainties of cross-validation (None when the
    method has no uncertainty).
``provenance``
    training data hash, data root, rows used, the cross-validated metrics it was chosen by.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fetalbio.config import TrainConfig, VariantConfig, from_dict
from fetalbio.reporting.files import write_torch
from fetalbio.tasks import Task, build_task
from fetalbio.variants import get_variant

FORMAT = "fetalbio-model"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A model file, rebuilt: one task per state dict (same variant and configuration)."""

    variant: str
    family: str
    tasks: list[Task]
    train_cfg: TrainConfig
    uncertainty_threshold_px: float | None
    meta: dict[str, Any]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.train_cfg.input_width, self.train_cfg.input_height


def model_payload(
    variant: str,
    vcfg: VariantConfig,
    tcfg: TrainConfig,
    state_dicts: list[dict[str, torch.Tensor]],
    calibration: dict[str, Any],
    uncertainty_threshold_px: float | None,
    uncertain_quantile: float,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """The dict :func:`save_model` writes (plain data + CPU tensors)."""
    if not state_dicts:
        raise ValueError("a model file needs at least one state dict")
    spec = get_variant(variant)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "family": spec.family,
        "spec": dataclasses.asdict(spec),
        "variant_cfg": dataclasses.asdict(vcfg),
        "train_cfg": dataclasses.asdict(tcfg),
        "state_dicts": [{k: v.detach().cpu() for k, v in sd.items()} for sd in state_dicts],
        "calibration": dict(calibration),
        "uncertainty_threshold_px": None if uncertainty_threshold_px is None else float(uncertainty_threshold_px),
        "uncertain_quantile": float(uncertain_quantile),
        "provenance": provenance,
    }


def save_model(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename)."""
    write_torch(path, payload)


def read_model_file(path: Path) -> dict[str, Any]:
    """Load and check a model file (``weights_only=True``: no code in it can run)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled objects other than plain data and tensors are refused here
        raise ValueError(f"{path}: not a loadable fetalbio model file ({load_failure_reason(exc)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fetalbio model file (no 'format: {FORMAT}'); training checkpoints (model.pt of a fold) are exported by the final stage")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: model file version {raw.get('format_version')!r}, this fetalbio reads {FORMAT_VERSION}")
    missing = {"variant", "variant_cfg", "train_cfg", "state_dicts", "calibration"} - set(raw)
    if missing or not isinstance(raw["state_dicts"], list) or not raw["state_dicts"]:
        raise ValueError(f"{path}: incomplete model file (missing {sorted(missing) or ['state_dicts']})")
    return raw


def load_failure_reason(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line (torch's own message is
    long, has terminal colour codes and may suggest ``weights_only=False``, which we never do)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"it pickles a Python object ({m.group(1)}), not only plain data and tensors; refused by weights_only=True"
    if isinstance(exc, (EOFError, KeyError)) or any(k in text for k in ("WeightsUnpickler error", "invalid load key", "PytorchStreamReader")):
        return f"not a torch.save file, or a truncated one ({type(exc).__name__})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:200]}"


def load_model(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the network(s) of a model file for inference (eval mode, on ``device``)."""
    raw = read_model_file(path)
    variant = raw["variant"]
    vcfg = from_dict(VariantConfig, raw["variant_cfg"], f"{path}: variant_cfg")
    tcfg = from_dict(TrainConfig, raw["train_cfg"], f"{path}: train_cfg")
    tasks = []
    for i, sd in enumerate(raw["state_dicts"]):
        task = build_task(variant, vcfg, tcfg)
        try:
            task.model.load_state_dict(sd)
        except RuntimeError as exc:
            raise ValueError(f"{path}: state dict {i} does not fit variant {variant!r}: {str(exc).splitlines()[0]}") from None
        task.set_calibration(raw["calibration"])
        task.model.to(device).eval()
        tasks.append(task)
    meta = {k: v for k, v in raw.items() if k not in ("state_dicts",)}
    return LoadedModel(variant, raw.get("family", get_variant(variant).family), tasks, tcfg, raw.get("uncertainty_threshold_px"), meta)
