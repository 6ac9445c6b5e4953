"""Issue 22's training options: speckle filtering in ``train.normalize`` (identical in training and
prediction) and the ``train.schedule`` option (cosine annealing with warm restarts; the default
schedule unchanged)."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fetalbio.config import ConfigError, TrainConfig, VariantConfig, from_dict
from fetalbio.data.transforms import NORMALIZE_STEPS, anisotropic_diffusion, normalize
from fetalbio.engine import train as train_mod
from fetalbio.engine.dataset import BiometryDataset
from fetalbio.engine.train import cosine_restarts, lr_schedule, warmup_cosine
from fetalbio.inference.predictor import Predictor
from fetalbio.io import read_gray8
from fetalbio.model_file import LoadedModel, LoadedStage
from fetalbio.tasks import build_task

REPO = Path(__file__).resolve().parents[2]
FILTERS = ["median", "bilateral", "diffusion"]


def _speckled(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A two-level image (dark | bright halves) with multiplicative gamma speckle, and the clean one."""
    clean = np.full((64, 96), 60.0)
    clean[:, 48:] = 180.0
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean * rng.gamma(16.0, 1 / 16.0, clean.shape), 0, 255).astype(np.uint8)
    return noisy, clean


# ------------------------------------------------------------------------------ speckle filters


def test_normalize_values_match_the_config() -> None:
    allowed = set(typing.get_args(typing.get_type_hints(TrainConfig)["normalize"]))
    assert allowed == set(NORMALIZE_STEPS) and TrainConfig().normalize == "zscore"
    for method in NORMALIZE_STEPS:
        assert from_dict(TrainConfig, {"normalize": method}, "train").normalize == method
    with pytest.raises(ConfigError, match="train.normalize must be one of"):
        from_dict(TrainConfig, {"normalize": "gaussian"}, "train")
    with pytest.raises(ValueError, match="unknown normalisation 'gaussian'"):
        normalize(np.zeros((8, 8), np.uint8), "gaussian")


@pytest.mark.parametrize("method", FILTERS)
def test_speckle_filters_smooth_flat_regions_and_keep_edges(method: str) -> None:
    noisy, clean = _speckled()
    plain, filtered = normalize(noisy, "zscore"), normalize(noisy, method)
    assert filtered.dtype == np.float32 and filtered.shape == noisy.shape
    assert abs(float(filtered.mean())) < 1e-4 and abs(float(filtered.std()) - 1.0) < 1e-3
    flat = (slice(4, 60), slice(4, 40))  # inside the dark half, away from the edge

    def noise(z: np.ndarray) -> float:  # speckle relative to the step height
        return float(z[flat].std() / (z[:, 56:92].mean() - z[:, 4:40].mean()))

    assert noise(filtered) < 0.75 * noise(plain), method
    # the edge stays where it is and stays sharp: most of the step within two pixels
    profile = filtered[4:60].mean(axis=0)
    step = profile[56:92].mean() - profile[4:40].mean()
    assert profile[49] - profile[46] > 0.7 * step, method


def test_speckle_filter_then_clahe_order() -> None:
    noisy, _ = _speckled(1)
    from fetalbio.data import transforms as T

    for f in FILTERS:
        expected = normalize(T._step(noisy, f), "clahe")
        np.testing.assert_array_equal(normalize(noisy, f"{f}_clahe"), expected)


def test_anisotropic_diffusion_properties() -> None:
    noisy, _ = _speckled(2)
    np.testing.assert_array_equal(anisotropic_diffusion(noisy, iterations=0), noisy)
    out = anisotropic_diffusion(noisy)
    assert out.dtype == np.uint8 and out.shape == noisy.shape
    assert abs(float(out.mean()) - float(noisy.mean())) < 0.5  # zero flux at the border: mass kept
    flat = np.full((16, 16), 77, np.uint8)
    np.testing.assert_array_equal(anisotropic_diffusion(flat), flat)
    with pytest.raises(ValueError, match="step"):
        anisotropic_diffusion(noisy, step=0.5)


@pytest.mark.parametrize("method", ["diffusion", "bilateral_clahe"])
def test_speckle_option_is_applied_identically_in_training_and_prediction(method: str, synth_clean, tiny_arch) -> None:
    clean, d = synth_clean
    tcfg = TrainConfig(input_width=96, input_height=64, device="cpu", normalize=method)
    task = build_task("hm_unet", VariantConfig(arch=tiny_arch("unet")), tcfg)
    ds = BiometryDataset(clean.iloc[:3], d, task, tcfg, train=False)
    pred = Predictor(LoadedModel([LoadedStage("coarse", "hm_unet", [task], tcfg)], "landmark", None, {}))
    for i, (_, row) in enumerate(clean.iloc[:3].iterrows()):
        x, _ = pred.preprocess(read_gray8(d / row["image_path"]).pixels)
        torch.testing.assert_close(torch.from_numpy(x), ds[i]["image"], rtol=0, atol=0)
        zscored = normalize(ds.samples[i].image, "zscore")
        assert not np.allclose(x[0], zscored)  # the filter did something


# ------------------------------------------------------------------------------ schedules


def test_default_schedule_is_unchanged() -> None:
    tcfg = TrainConfig(epochs=7, warmup_epochs=2)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert tcfg.schedule == "warmup_cosine"
    assert from_dict(TrainConfig, params["train"], "train").schedule == "warmup_cosine"
    new, old = lr_schedule(tcfg, 5), warmup_cosine(35, 10)
    assert [new(s) for s in range(36)] == [old(s) for s in range(36)]


def test_cosine_restarts_values() -> None:
    fn = cosine_restarts(total_steps=150, warmup_steps=10, cycle_steps=20, mult=2)
    assert [fn(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    # cycles start at steps 10, 30, 70, 150: the multiplier restarts at 1 there
    for start, length in ((10, 20), (30, 40), (70, 80)):
        assert fn(start) == 1.0
        vals = [fn(start + t) for t in range(length)]
        assert all(a > b for a, b in zip(vals, vals[1:]))  # a half cosine down ...
        assert vals[length // 2] == pytest.approx(0.5)
        assert vals[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * (length - 1) / length)))
    assert fn(150) == 1.0
    same = cosine_restarts(100, 0, 10, 1)
    assert [same(s) for s in range(10)] == [same(s + 10) for s in range(10)] == [same(s + 50) for s in range(10)]
    tcfg = TrainConfig(epochs=15, warmup_epochs=1, schedule="cosine_restarts", restart_epochs=2, restart_mult=2)
    via_cfg, direct = lr_schedule(tcfg, 3), cosine_restarts(45, 3, 6, 2)
    assert [via_cfg(s) for s in range(46)] == [direct(s) for s in range(46)]


def test_every_configured_schedule_is_implemented() -> None:
    """train.py takes its list of schedules from config (``train.schedule``'s choices)."""
    choices = typing.get_args(typing.get_type_hints(TrainConfig)["schedule"])
    assert set(choices) == {"warmup_cosine", "cosine_restarts"}
    for name in choices:
        assert callable(lr_schedule(TrainConfig(schedule=name), 3))
    with pytest.raises(ValueError, match=r"train.schedule must be one of \['warmup_cosine', 'cosine_restarts'\], got 'step'"):
        lr_schedule(TrainConfig(schedule="step"), 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"schedule": "step"}, "train.schedule must be one of"),
        ({"restart_epochs": 0}, "restart_epochs"),
        ({"restart_mult": 0}, "restart_mult"),
    ],
)
def test_bad_schedule_options(raw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_dict(TrainConfig, raw, "train")


@pytest.mark.parametrize("schedule", ["warmup_cosine", "cosine_restarts"])
def test_fit_follows_the_schedule(schedule: str, synth_clean, tiny_arch) -> None:
    clean, d = synth_clean
    tcfg = TrainConfig(input_width=64, input_height=64, device="cpu", batch_size=4, epochs=4, warmup_epochs=1,
                       patience=10, progress=False, schedule=schedule, restart_epochs=1, restart_mult=1)
    task = build_task("hm_unet", VariantConfig(arch=tiny_arch("unet")), tcfg)
    train_ds = BiometryDataset(clean.iloc[:8], d, task, tcfg, train=True, seed=0)
    val_ds = BiometryDataset(clean.iloc[8:10], d, task, tcfg, train=False)
    res = train_mod.fit(task, train_ds, val_ds, lambda preds: 0.0, tcfg, seed=0, device=torch.device("cpu"), say=lambda _m: None)
    lrs = [row["lr"] for row in res.history]
    steps = 2  # 8 images, batch 4
    fn = lr_schedule(tcfg, steps)
    assert lrs == pytest.approx([tcfg.lr * fn(steps * (e + 1)) for e in range(4)])
    if schedule == "cosine_restarts":  # every epoch ends at the start of a new one-epoch cycle
        assert lrs == pytest.approx([tcfg.lr] * 4)
    else:
        assert all(a > b for a, b in zip(lrs, lrs[1:]))
