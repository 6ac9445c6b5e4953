"""The self-describing model file: every fold's trained network(s) and the exported model that
``fetalbio predict`` loads are this one format, read by :func:`read_model_file`.

One ``torch.save`` of plain data and tensors only, so it loads with ``weights_only=True``:

``format``, ``format_version``
    ``"fetalbio-model"``, :data:`FORMAT_VERSION` (2; version-1 files, one stage, still load).
``method``
    what it measures with: a variant name, or ``<variant>_refined`` for a coarse-to-fine model
    (a fold file of a later stage's network alone: its variant, e.g. ``refine``).
``stages``
    the networks of the method, in the order they run, each a dict: ``role`` (``coarse``, else a
    later stage's family: :func:`stage_role`), ``variant``, ``family``, ``spec``, ``variant_cfg``, ``train_cfg`` (what
    rebuilds the network, its preprocessing and its decoding), ``state_dicts`` (one, or several
    whose raw outputs are averaged: a seed or fold ensemble) and ``calibration`` (what decoding
    measured on training rows, :meth:`fetalbio.tasks.base.Task.calibrate`). Stages may have
    different architectures. ``[coarse, <later>...]`` measures (a later stage takes the previous
    one's predictions: :meth:`~fetalbio.tasks.base.Task.follow`); one later stage alone is its
    fold file (``[refine]``: used by the ``refine`` stage, concatenated by ``final.source: folds``).
``uncertainty_threshold_px``, ``uncertain_quantile``
    an image whose mean point uncertainty exceeds the threshold is flagged ``uncertain``; the
    threshold is that quantile of the held-out uncertainties of cross-validation (None when the
    method has no uncertainty).
``triage`` (optional)
    the fitted triage combiner (:class:`fetalbio.triage.Triage`, plain data): the per-image
    uncertainty, the 90 % interval and the ``ok``/``uncertain``/``failed`` verdict.
``provenance``
    exported model: training data hash, data root, rows used, the cross-validated metrics it was
    chosen by; fold file: ``fold`` (the fold held out), ``member_seeds``, ``best_epochs`` and
    ``training_data_hash`` (of each member's training rows). ``final.source: folds`` concatenates
    the fold files' ``state_dicts`` stage by stage (:func:`concatenate_stages`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fetalbio.config import TrainConfig, VariantConfig, from_dict, variant_config
from fetalbio.io import load_failure_reason, write_torch
from fetalbio.tasks import Task, build_task
from fetalbio.variants import get_variant

if TYPE_CHECKING:
    import torch

FORMAT = "fetalbio-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MODEL_FILE = "model.pt"  # the file name of a fold's networks in models/<variant>/fold<k>/


@dataclass
class LoadedStage:
    """One stage of a model file, rebuilt: one task per state dict (same configuration)."""

    role: str
    variant: str
    tasks: list[Task]
    train_cfg: TrainConfig


@dataclass
class LoadedModel:
    """A model file, rebuilt: its ``stages`` in the order they run. ``variant``/``tasks``/
    ``train_cfg``/``input_size``/``family``: the first stage's, which measures the image."""

    stages: list[LoadedStage]
    family: str
    uncertainty_threshold_px: float | None
    meta: dict[str, Any]

    variant = property(lambda self: self.stages[0].variant)
    tasks = property(lambda self: self.stages[0].tasks)
    train_cfg = property(lambda self: self.stages[0].train_cfg)
    input_size = property(lambda self: (self.train_cfg.input_width, self.train_cfg.input_height))
    method = property(lambda self: str(self.meta.get("method", self.variant)))


def stage_role(variant: str) -> str:
    """The role a variant's networks play in a model file: ``coarse`` for a first stage (it
    measures an image on its own), else its family (a later stage, e.g. ``refine``)."""
    spec = get_variant(variant)
    return "coarse" if spec.standalone_family else spec.family


def layout_problem(roles: list) -> str:
    """Why ``roles`` is no stage list ('' when it is one): ``coarse`` first and only first, or
    one later stage alone (a fold file of it)."""
    if roles and (roles[0] == "coarse" or len(roles) == 1) and "coarse" not in roles[1:] and all(isinstance(r, str) for r in roles):
        return ""
    return f"stages must be [coarse], [coarse, <later stage>, ...] or one later stage alone (a fold file), got {roles}"


@dataclass
class StageWeights:
    """What :func:`model_payload` stores of one stage."""

    role: str
    variant: str
    vcfg: VariantConfig
    tcfg: TrainConfig
    state_dicts: list[dict[str, torch.Tensor]]
    calibration: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        if self.role != stage_role(self.variant):
            raise ValueError(f"variant {self.variant!r} plays role {stage_role(self.variant)!r} in a model file, not {self.role!r}")
        if not self.state_dicts:
            raise ValueError(f"the {self.role} stage needs at least one state dict")
        spec = get_variant(self.variant)
        return {
            "role": self.role,
            "variant": self.variant,
            "family": spec.family,
            "spec": dataclasses.asdict(spec),
            "variant_cfg": dataclasses.asdict(self.vcfg),
            "train_cfg": dataclasses.asdict(self.tcfg),
            "state_dicts": [{k: v.detach().cpu() for k, v in sd.items()} for sd in self.state_dicts],
            "calibration": dict(self.calibration),
        }


def fold_payload(stage: StageWeights, provenance: dict[str, Any]) -> dict[str, Any]:
    """A fold's trained network(s) as a one-stage model file (``role`` ``coarse`` for a first
    stage, else a later stage's, e.g. ``refine``); ``provenance`` holds ``fold`` and the members'
    seeds. A fold file of a first stage measures like an exported model (no uncertainty
    threshold: that is measured on every fold's held-out predictions)."""
    return model_payload(stage.variant, [stage], provenance)


def model_payload(method: str, stages: list[StageWeights], provenance: dict[str, Any],
                  uncertainty_threshold_px: float | None = None, uncertain_quantile: float | None = None) -> dict[str, Any]:
    """The dict :func:`save_model` writes (plain data + CPU tensors): ``stages`` in the order
    they run; an exported model and a fold file alike."""
    problem = layout_problem([st.role for st in stages])
    if problem:
        raise ValueError(problem)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": method,
        "stages": [st.payload() for st in stages],
        "uncertainty_threshold_px": None if uncertainty_threshold_px is None else float(uncertainty_threshold_px),
        "uncertain_quantile": None if uncertain_quantile is None else float(uncertain_quantile),
        "provenance": provenance,
    }


def concatenate_stages(path_and_raws: list[tuple[Path, dict[str, Any]]]) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
    """Fold files of one variant -> one stage's ``(state_dicts, calibration)``: the state dicts
    of every fold, in order, and the numeric calibration values averaged over folds (the members
    of a fold share one calibration, so each fold counts once; ``edge_offset_n`` is summed)."""
    if not path_and_raws:
        raise ValueError("no fold files to concatenate")
    first_path, first = path_and_raws[0]
    variant = first["stages"][0]["variant"]
    state_dicts: list[dict[str, torch.Tensor]] = []
    cals: list[dict[str, Any]] = []
    for path, raw in path_and_raws:
        if len(raw["stages"]) != 1:
            raise ValueError(f"{path}: a fold file holds one stage, this one {len(raw['stages'])}")
        st = raw["stages"][0]
        if st["variant"] != variant:
            raise ValueError(f"{path}: holds variant {st['variant']!r}, {first_path} holds {variant!r}")
        state_dicts.extend(st["state_dicts"])
        cals.append(st.get("calibration") or {})
    keys = set().union(*cals)
    calibration: dict[str, Any] = {k: float(np.mean([c[k] for c in cals if k in c])) for k in sorted(keys)}
    if "edge_offset_n" in calibration:
        calibration["edge_offset_n"] = int(sum(c.get("edge_offset_n", 0) for c in cals))
    return state_dicts, calibration


def save_model(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename)."""
    write_torch(path, payload)


def read_model_file(path: Path) -> dict[str, Any]:
    """Load and check a model file (``weights_only=True``: no code in it can run)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    import torch  # here, not at the top: decoding a model's ONNX form needs no torch

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled objects other than plain data and tensors are refused here
        raise ValueError(f"{path}: not a loadable fetalbio model file ({load_failure_reason(exc)})") from None
    if isinstance(raw, dict) and raw.get("format") == "fetalbio-checkpoint":
        raise ValueError(f"{path}: a fold checkpoint of an older fetalbio (format 'fetalbio-checkpoint'); fold models are model files now: retrain the fold (dvc repro)")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fetalbio model file (no 'format: {FORMAT}')")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: model file version {version!r}, this fetalbio reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    if version == 1:  # one stage at the top level: the same content as a one-stage version 2 file
        stage = {k: raw.get(k) for k in ("variant", "family", "spec", "variant_cfg", "train_cfg", "state_dicts", "calibration")}
        raw = {k: v for k, v in raw.items() if k not in stage} | {"method": raw.get("variant"), "stages": [{"role": "coarse", **stage}], "format_version": FORMAT_VERSION}
    stages = raw.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(st, dict) for st in stages):
        raise ValueError(f"{path}: incomplete model file (no stages)")
    problem = layout_problem([st.get("role") for st in stages])
    if problem:
        raise ValueError(f"{path}: {problem}")
    for st in stages:
        missing = {"variant", "variant_cfg", "train_cfg", "state_dicts", "calibration"} - {k for k, v in st.items() if v is not None}
        if missing or not isinstance(st["state_dicts"], list) or not st["state_dicts"]:
            raise ValueError(f"{path}: incomplete {st.get('role')} stage (missing {sorted(missing) or ['state_dicts']})")
    return raw


def load_stage(path: Path, st: dict[str, Any], device: torch.device | str, weights: bool = True) -> LoadedStage:
    """One stage rebuilt: a task per state dict (``weights=False``: one task, for decoding only,
    its network left as initialised -- the networks run elsewhere, e.g. in ONNX Runtime)."""
    variant, role = st["variant"], st["role"]
    vcfg = variant_config(variant, st["variant_cfg"], f"{path}: {role} variant_cfg", stored=True)
    tcfg = from_dict(TrainConfig, st["train_cfg"], f"{path}: {role} train_cfg")
    if stage_role(variant) != role:
        raise ValueError(f"{path}: the {role} stage holds variant {variant!r}")
    tasks = []
    for i, sd in enumerate(st["state_dicts"] if weights else [None]):
        task = build_task(variant, vcfg, tcfg, network=weights)
        if sd is not None:
            try:
                task.model.load_state_dict(sd)
            except RuntimeError as exc:
                raise ValueError(f"{path}: {role} state dict {i} does not fit variant {variant!r}: {str(exc).splitlines()[0]}") from None
        task.set_calibration(st["calibration"])
        if task.model is not None:
            task.model.to(device).eval()
        tasks.append(task)
    return LoadedStage(role, variant, tasks, tcfg)


def load_model(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the network(s) of a model file for inference (eval mode, on ``device``)."""
    return model_from_raw(Path(path), read_model_file(path), device)


def model_from_raw(path: Path, raw: dict[str, Any], device: torch.device | str = "cpu", weights: bool = True) -> LoadedModel:
    """A :class:`LoadedModel` from checked model-file content (:func:`read_model_file`);
    ``weights=False``: from a description without ``state_dicts`` (the ONNX manifest), for
    preprocessing, decoding and flags only (one task per stage, untrained networks)."""
    if raw["stages"][0]["role"] != "coarse":
        raise ValueError(f"{path}: holds a later stage alone (a fold file of `{raw['stages'][0]['variant']}`), which cannot measure an image; "
                         "use a model made by the final stage")
    stages = [load_stage(path, st, device, weights) for st in raw["stages"]]
    meta = {k: v for k, v in raw.items() if k != "stages"}
    meta["stages"] = [{k: v for k, v in st.items() if k != "state_dicts"} for st in raw["stages"]]
    return LoadedModel(stages, raw["stages"][0].get("family") or get_variant(stages[0].variant).family, raw.get("uncertainty_threshold_px"), meta)
