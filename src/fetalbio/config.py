"""Typed views of the ``params.yaml`` sections.

Stages read their section through :func:`load_section`, which refuses unknown keys (a typo in
``params.yaml`` must not be ignored), reports missing keys, and checks types and ranges, naming
the file and the key in every message. The library itself never reads ``params.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from fetalbio.variants import get_variant

T = TypeVar("T")

# train.normalize -> the steps of fetalbio.data.transforms.normalize applied before the z-score
NORMALIZE_STEPS: dict[str, tuple[str, ...]] = {"zscore": (), **{m: tuple(m.split("_")) for m in (
    "clahe", "median", "bilateral", "diffusion", "median_clahe", "bilateral_clahe", "diffusion_clahe")}}
# train.schedule: the learning-rate schedules of fetalbio.engine.train
SCHEDULES = ("warmup_cosine", "cosine_restarts")


class ConfigError(ValueError):
    """A params file is missing, malformed, or holds a bad value."""


@dataclass(frozen=True)
class DataConfig:
    """Section ``data``: where the dataset is and how strictly to ingest it."""

    root: str
    # the data sources under ``root``: name -> folder relative to ``root``, each in its own layout
    # (``{}``: one source, ``root`` itself, named after it; a null folder switches a source off)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    layout: Literal["auto", "challenge", "hc18", "masks"] = "auto"
    images_dir: str = "images"
    landmarks_csv: str = "landmarks.csv"
    masks_dir: str = "masks"
    spacing_csv: str = "hc18_reference.csv"
    on_error: Literal["error", "drop"] = "error"

    def source_dirs(self, base_dir: Path | None = None) -> dict[str, Path]:
        """name -> folder of every source (``root`` joined with each source's folder)."""
        root = Path(self.root) if base_dir is None else Path(base_dir) / self.root
        if not self.sources:
            return {root.resolve().name or "data": root}
        for name, sub in self.sources.items():
            if not (sub is None or isinstance(sub, str)) or not name or "/" in name:
                raise ConfigError(f"data.sources: {name!r}: {sub!r} must map a plain name to a folder under data.root")
        dirs = {name: root / sub for name, sub in self.sources.items() if sub}  # null / "": source switched off
        if not dirs:
            raise ConfigError("data.sources: every source is switched off")
        return dirs


@dataclass(frozen=True)
class LabelsConfig:
    """Section ``labels``: the label audit's thresholds and what to do with flagged rows."""

    policy: Literal["drop", "keep", "weight"] = "weight"
    flagged_weight: float = 0.0
    angle_tol_deg: float = 20.0
    centre_tol_frac: float = 0.2
    ratio_min: float = 0.55
    ratio_max: float = 0.98
    mahalanobis_quantile: float = 0.999
    off_skull_mm: float = 4.0
    near_duplicate_mad: float = 2.0
    near_duplicates: Literal["keep", "drop"] = "keep"
    audit_picture_rows: int = 12
    # rows without landmark labels (masks-only sources): their points are the axes of the mask's
    # ellipse. ignore: landmark variants do not train on them (weight 0); train: they do
    derived_points: Literal["ignore", "train"] = "ignore"

    def __post_init__(self) -> None:
        _check_range("labels.flagged_weight", self.flagged_weight, 0.0, 1.0)
        _check_range("labels.mahalanobis_quantile", self.mahalanobis_quantile, 0.5, 1.0, hi_open=True)
        _check_range("labels.angle_tol_deg", self.angle_tol_deg, 0.0, 90.0)
        if not 0 < self.ratio_min < self.ratio_max:
            raise ConfigError(f"labels.ratio_min/ratio_max must satisfy 0 < min < max, got {self.ratio_min}, {self.ratio_max}")
        for name in ("centre_tol_frac", "off_skull_mm", "near_duplicate_mad"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"labels.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class FoldsConfig:
    """Section ``folds``: subject-grouped, head-size-stratified K-fold.

    ``ids`` lists the folds (``0 .. K-1``; K = its length); DVC's train matrix iterates it.
    """

    ids: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3, 4])
    size_bins: int = 3

    def __post_init__(self) -> None:
        if len(self.ids) < 2 or list(self.ids) != list(range(len(self.ids))):
            raise ConfigError(f"folds.ids must be 0, 1, ..., K-1 with K >= 2, got {self.ids}")
        if self.size_bins < 1:
            raise ConfigError(f"folds.size_bins must be >= 1, got {self.size_bins}")

    @property
    def k(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class AugmentConfig:
    """Section ``train.augment``: training augmentation strengths (0 switches a transform off);
    used by :func:`fetalbio.data.transforms.build_augment`."""

    rotate_deg: float = 10.0
    scale: float = 0.1
    shift: float = 0.05
    hflip: float = 0.5
    brightness_contrast: float = 0.2
    gamma: float = 0.2
    speckle: float = 0.15
    elastic: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Section ``train``: what every variant shares (a variant may override keys)."""

    input_width: int = 128
    input_height: int = 96
    # intensity preprocessing (fetalbio.data.transforms.normalize): a speckle filter (median,
    # bilateral or anisotropic diffusion) and/or CLAHE, then the per-image z-score
    normalize: Literal[tuple(NORMALIZE_STEPS)] = "zscore"
    batch_size: int = 8
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    # learning-rate schedule after the linear warm-up: one cosine decay to 0 at the last epoch
    # (warmup_cosine), or cosine annealing with warm restarts (SGDR, cosine_restarts) whose
    # first cycle lasts restart_epochs epochs and every next one restart_mult times longer
    schedule: Literal[SCHEDULES] = "warmup_cosine"
    restart_epochs: int = 2
    restart_mult: int = 2
    patience: int = 5
    inner_val_frac: float = 0.15
    num_workers: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    cpu_threads: int = 2
    progress: bool = True
    augment: AugmentConfig = AugmentConfig()

    def __post_init__(self) -> None:
        for name in ("input_width", "input_height"):
            v = getattr(self, name)
            if v < 32 or v % 32:
                raise ConfigError(f"train.{name} must be a multiple of 32 and >= 32, got {v}")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0 or self.patience < 1 or self.num_workers < 0 or self.cpu_threads < 1:
            raise ConfigError("train.warmup_epochs >= 0, train.patience >= 1, train.num_workers >= 0 and train.cpu_threads >= 1 are required")
        if self.restart_epochs < 1 or self.restart_mult < 1:
            raise ConfigError(f"train.restart_epochs and train.restart_mult must be >= 1, got {self.restart_epochs}, {self.restart_mult}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"train.lr must be > 0 and train.weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0.0 < self.inner_val_frac <= 0.5:
            raise ConfigError(f"train.inner_val_frac must be in (0, 0.5], got {self.inner_val_frac}")


@dataclass(frozen=True)
class VariantConfig:
    """Section ``variants.<name>``: one variant's own hyperparameters (read by :func:`variant_config`).

    ``arch`` goes to the model builder, ``codec`` to the codec, ``loss`` / ``loss_cfg`` override
    the registry's default loss, ``postprocess`` to the mask -> ellipse step, ``crop`` to the
    refinement's crops, ``train`` overrides keys of the common ``train`` section.
    ``seeds``: empty (default), one network trained with the top-level ``seed``; otherwise one
    network per seed (a seed ensemble), each trained exactly as a run with that top-level
    ``seed`` would train it, whose raw outputs are averaged for the held-out predictions and in
    the exported model.
    """

    arch: dict = dataclasses.field(default_factory=dict)
    codec: dict = dataclasses.field(default_factory=dict)
    loss: str | None = None
    loss_cfg: dict = dataclasses.field(default_factory=dict)
    geometric_prior: float = 0.0
    mask_source: Literal["sonographer", "landmarks"] = "sonographer"
    postprocess: dict = dataclasses.field(default_factory=dict)
    train: dict = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=list)
    crop: dict = dataclasses.field(default_factory=dict)  # span, passes, jitter, combine, tta

    def __post_init__(self) -> None:
        if self.geometric_prior < 0:
            raise ConfigError(f"geometric_prior must be >= 0, got {self.geometric_prior}")
        if not isinstance(self.seeds, list) or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be a list of non-negative integers, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must not repeat a seed, got {self.seeds}")

    def member_seeds(self, seed: int) -> list[int]:
        """The seed of every network of the variant: ``seeds``, or the run's ``seed`` alone."""
        return list(self.seeds) if self.seeds else [int(seed)]


# The keys of ``variants.<name>`` that only some families read, and those families (every family
# reads arch, loss, loss_cfg, train and seeds); on a variant of another family they would be ignored.
FAMILY_KEYS: dict[str, tuple[str, ...]] = {"codec": ("landmark",), "geometric_prior": ("landmark",), "mask_source": ("segmentation",),
                                           "postprocess": ("segmentation", "refine"), "crop": ("refine",)}


def variant_config(variant: str, raw: Any, section: str, stored: bool = False) -> VariantConfig:
    """``raw`` as ``variant``'s :class:`VariantConfig`, refusing unknown keys and those of other
    families (its family: the registry's). ``stored``: a model file's ``variant_cfg``, which holds
    every key (``dataclasses.asdict``): there another family's key is refused off its default."""
    family, vcfg = get_variant(variant).family, from_dict(VariantConfig, raw, section)
    for key, owners in FAMILY_KEYS.items():
        if key in raw and family not in owners and not (stored and getattr(vcfg, key) == getattr(VariantConfig(), key)):
            raise ConfigError(f"{section}.{key}: `{key}` belongs to the {' and '.join(owners)} famil{'ies' if len(owners) > 1 else 'y'} "
                              f"({variant} is a {family} variant)")
    return vcfg


@dataclass(frozen=True)
class EvaluateConfig:
    """Section ``evaluate``."""

    sdr_thresholds_mm: list[float] = dataclasses.field(default_factory=lambda: [2.0, 2.5, 3.0, 4.0])

    def __post_init__(self) -> None:
        if not self.sdr_thresholds_mm or any(t <= 0 for t in self.sdr_thresholds_mm):
            raise ConfigError(f"evaluate.sdr_thresholds_mm must be positive numbers, got {self.sdr_thresholds_mm}")


@dataclass(frozen=True)
class FinalConfig:
    """Section ``final``: the exported model (see :mod:`fetalbio.inference.export`)."""

    variant: str = "auto"  # auto: best of metrics/compare.json by HC MAE vs the sonographer
    source: Literal["refit", "folds"] = "refit"  # retrain on all rows | ensemble of the fold models
    uncertain_quantile: float = 0.95

    def __post_init__(self) -> None:
        _check_range("final.uncertain_quantile", self.uncertain_quantile, 0.5, 1.0, hi_open=True)


def merged_train_config(common: TrainConfig, variant: VariantConfig, section: str) -> TrainConfig:
    """The common ``train`` section with the variant's ``train`` overrides applied (validated)."""
    if not variant.train:
        return common
    base = dataclasses.asdict(common)
    for key, value in variant.train.items():
        if key not in base:
            raise ConfigError(f"unknown key in {section}.train: {key} (valid: {', '.join(base)})")
        base[key] = {**base[key], **value} if isinstance(base[key], dict) and isinstance(value, dict) else value
    return from_dict(TrainConfig, base, f"{section}.train")


def _check_range(name: str, value: float, lo: float, hi: float, hi_open: bool = False) -> None:
    if value < lo or value > hi or (hi_open and value >= hi):
        raise ConfigError(f"{name} must be in [{lo}, {hi}{')' if hi_open else ']'}, got {value}")


def read_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file into a dict, with a clear error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def get_key(params: dict[str, Any], dotted: str, source: str = "params.yaml") -> Any:
    """``get_key(params, "data.root")`` with an error naming the missing key."""
    cur: Any = params
    for i, part in enumerate(dotted.split(".")):
        if not isinstance(cur, dict) or part not in cur:
            have = ", ".join(sorted(cur)) if isinstance(cur, dict) else type(cur).__name__
            raise ConfigError(f"{source}: missing key {'.'.join(dotted.split('.')[: i + 1])!r} (found: {have})")
        cur = cur[part]
    return cur


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{name} must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, value, a)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        (inner, *_) = get_args(tp) or (Any,)
        items = [_coerce(f"{name}[{i}]", v, inner) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, name)
    return value


def from_dict(cls: type[T], raw: Any, section: str) -> T:
    """Build dataclass ``cls`` from ``raw``, refusing unknown keys and checking types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"section {section!r} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) in {section!r}: {', '.join(unknown)} (valid: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _coerce(f"{section}.{name}", raw[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {section}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a __post_init__ check: say which section
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(section) else f"{section}: {msg}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def load_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Read ``section`` of the params file at ``path`` as a ``cls`` instance."""
    params = read_params(path)
    try:
        return from_dict(cls, get_key(params, section, str(path)), section)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


__all__ = [
    "ConfigError", "DataConfig", "FoldsConfig", "LabelsConfig", "TrainConfig", "EvaluateConfig", "FinalConfig", "VariantConfig", "AugmentConfig",
    "FAMILY_KEYS", "NORMALIZE_STEPS", "SCHEDULES", "variant_config", "merged_train_config", "from_dict", "get_key", "load_section", "read_params",
]
