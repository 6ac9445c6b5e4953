"""Adding a variant is one registry entry and one params section (plus a network file if it is a
new network): a toy variant added exactly that way trains, predicts its held-out fold, is
evaluated, refined and compared, with no other change anywhere."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from fetalbio.data.folds import assign_folds
from fetalbio.config import TrainConfig, VariantConfig, from_dict
from fetalbio.engine.run import train_fold
from fetalbio.models import MODELS
from fetalbio.reporting.evaluate import evaluate, output_kind, per_image_table, read_oof
from fetalbio.variants import VARIANTS, VariantSpec

TCFG = TrainConfig(input_width=64, input_height=64, batch_size=4, epochs=1, patience=1, device="cpu", cpu_threads=1, progress=False, amp=False)


class ToySegNet(nn.Module):
    """The 'new network file': two convolutions, full-resolution logits."""

    output_kind, output_stride, input_multiple = "dense", 1, 1

    def __init__(self, in_channels: int, out_channels: int, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def toy_variant(monkeypatch):
    # 1. the network, registered by name (a new file under src/fetalbio/models/ in real life)
    if "toy_seg" not in MODELS:
        MODELS.register("toy_seg")(ToySegNet)
    # 2. one registry entry
    monkeypatch.setitem(VARIANTS, "toy", VariantSpec("segmentation", "toy_seg", "dice_bce", description="toy"))
    # 3. one params section (and its name in variant_names)
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["variants"]["toy"] = {"arch": {"width": 4}, "loss": "dice_bce", "postprocess": {"threshold": 0.5, "method": "plain"}}
    params["variant_names"].append("toy")
    return params


def test_a_toy_variant_added_by_registry_entry_and_params_section_runs_end_to_end(toy_variant, synth_clean, tmp_path, monkeypatch) -> None:
    from fetalbio.commands._common import compared_names, read_variant_names

    params = toy_variant
    assert "toy" in read_variant_names(params, Path("params.yaml")) and "toy_refined" in compared_names(params, Path("params.yaml"))
    clean, d = synth_clean
    folds = assign_folds(clean, k=2, size_bins=1, seed=0)
    vcfg = from_dict(VariantConfig, params["variants"]["toy"], "variants.toy")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "models" / "toy"
    for fold in (0, 1):
        summary = train_fold(clean, folds, d, "toy", vcfg, TCFG, fold, 42, out / f"fold{fold}")
        assert summary["family"] == "segmentation" and (out / f"fold{fold}" / "model.pt").is_file()
    oof = read_oof(out)
    assert sorted(oof["image_name"]) == sorted(clean["image_name"]) and output_kind(oof) == "segmentation"
    ev = evaluate(per_image_table(clean, oof, d, out), output_kind(oof), [2.0])
    assert ev.summary["n_images"] == len(clean) and "mask_dice" in ev.summary["segmentation"]
    assert isinstance(pd.DataFrame(ev.per_image), pd.DataFrame)
