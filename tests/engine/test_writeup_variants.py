"""The write-ups' variants (issue 22) through the landmark task: joint losses, the hybrid codec,
and the combinations the task refuses. (Every variant's optimiser steps: test_train_step.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from fetalbio.config import TrainConfig, VariantConfig, variant_config
from fetalbio.engine.dataset import BiometryDataset
from fetalbio.losses import build_loss
from fetalbio.tasks import LandmarkTask, build_task
from fetalbio.variants import VARIANTS, VariantSpec, get_variant

REPO = Path(__file__).resolve().parents[2]
TCFG = TrainConfig(input_width=64, input_height=64, device="cpu", batch_size=4)
NEW = ["multihead_unet", "hybrid_hourglass", "attention_fpn", "vit_landmark", "coord_alexnet", "coord_resnet18",
       "coord_resnet34", "coord_efficientnet"]


def _params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def _vcfg(name: str, tiny_arch, **over) -> VariantConfig:
    raw = dict(_params()["variants"][name])
    raw["arch"] = tiny_arch(get_variant(name).model)
    raw.update(over)
    return variant_config(name, raw, f"variants.{name}")


def _batch(task, synth_clean, n: int = 4) -> tuple[dict, BiometryDataset]:
    clean, d = synth_clean
    ds = BiometryDataset(clean.iloc[:n], d, task, TCFG, train=False)
    return torch.utils.data.default_collate([ds[i] for i in range(len(ds))]), ds


def test_new_variants_are_registered_and_listed() -> None:
    params = _params()
    for name in NEW:
        assert name in VARIANTS and get_variant(name).family == "landmark"
        assert name in params["variant_names"]
        variant_config(name, params["variants"][name], f"variants.{name}")  # the section parses, with its family's keys only
    assert params["variants"]["coord_resnet18"]["arch"]["layers"] == [2, 2, 2, 2]
    assert params["variants"]["coord_resnet34"]["arch"]["layers"] == [3, 4, 6, 3]
    assert params["variants"]["vit_landmark"]["geometric_prior"] > 0


def test_attention_fpn_loss_is_heatmaps_plus_wing_on_the_decoded_points(synth_clean, tiny_arch) -> None:
    torch.manual_seed(0)
    task = build_task("attention_fpn", _vcfg("attention_fpn", tiny_arch), TCFG)
    assert task.joint and task.codec.kind == "heatmap"
    batch, _ = _batch(task, synth_clean)
    assert batch["target_coords"].shape == (4, 4, 2)
    task.model.train()
    out = task.model(batch["image"])
    loss = task.loss(out, batch)
    cfg = _params()["variants"]["attention_fpn"]["loss_cfg"]
    decoded = (task.codec.decode_torch(out) + 0.5) / 64.0
    expected = (build_loss("heatmap_mse")(out, batch["target"], batch["weight"], batch["point_weight"])
                + cfg["coord_weight"] * build_loss("wing", **cfg["coord_cfg"])(decoded, batch["target_coords"], batch["weight"], batch["point_weight"]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the coordinate targets are the regression codec's normalised points
    sample = _batch(task, synth_clean, 1)[1].samples[0]
    torch.testing.assert_close(batch["target_coords"][0], torch.from_numpy((sample.points + 0.5) / 64.0).float())


@pytest.mark.parametrize("source", ["heatmap", "regression", "average"])
def test_hybrid_hourglass_decodes_the_chosen_point(source: str, synth_clean, tiny_arch) -> None:
    torch.manual_seed(0)
    vcfg = _vcfg("hybrid_hourglass", tiny_arch, codec={"sigma": 1.5, "point_source": source})
    task = build_task("hybrid_hourglass", vcfg, TCFG)
    batch, ds = _batch(task, synth_clean)
    task.model.eval()
    with torch.no_grad():
        out = task.model(batch["image"])
    preds = task.decode(out, [s.letterbox for s in ds.samples])
    heat, _ = task.codec.heatmap.decode(out[0].numpy())
    reg, _ = task.codec.regression.decode(out[1].numpy())
    want = {"heatmap": heat, "regression": reg, "average": 0.5 * (heat + reg)}[source]
    for p, w, s in zip(preds, want, ds.samples):
        got = s.letterbox.to_input(p.points)
        assert sorted(map(tuple, got.round(4))) == sorted(map(tuple, w.round(4)))  # same points, canonical order


def test_vit_landmark_loss_includes_the_geometric_prior(synth_clean, tiny_arch) -> None:
    torch.manual_seed(0)
    with_prior = build_task("vit_landmark", _vcfg("vit_landmark", tiny_arch), TCFG)
    without = build_task("vit_landmark", _vcfg("vit_landmark", tiny_arch, geometric_prior=0.0), TCFG)
    without.model.load_state_dict(with_prior.model.state_dict())
    batch, _ = _batch(with_prior, synth_clean)
    with_prior.model.eval()
    without.model.eval()
    with torch.no_grad():
        out = with_prior.model(batch["image"])
        assert with_prior.loss(out, batch).item() > without.loss(out, batch).item()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (VariantSpec("landmark", "hybrid_hourglass", "heatmap_coord", "heatmap"), "hybrid codec"),
        (VariantSpec("landmark", "hourglass", "heatmap_coord", "hybrid"), "hybrid codec"),
        (VariantSpec("landmark", "hybrid_hourglass", "heatmap_mse", "hybrid"), "joint heatmap"),
        (VariantSpec("landmark", "coord_regression", "heatmap_coord", "regression"), "needs heatmaps"),
    ],
)
def test_mismatched_model_codec_loss_is_refused(spec: VariantSpec, match: str, tiny_arch) -> None:
    vcfg = VariantConfig(arch=tiny_arch(spec.model))
    with pytest.raises(ValueError, match=match):
        LandmarkTask(spec, vcfg, TCFG)
