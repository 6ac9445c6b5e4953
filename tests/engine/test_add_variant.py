"""Adding a variant is one registry entry and one params section (plus a network file if it is a
new network): a toy segmentation variant and a toy landmark variant added exactly that way train,
predict their held-out folds, are evaluated with the family the registry gives them and
compared, with no other change anywhere (the micro pipeline test, tests/test_pipeline.py, runs
the refinement of every variant through dvc)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from fetalbio.config import TrainConfig, VariantConfig, from_dict
from fetalbio.data.folds import assign_folds
from fetalbio.engine.run import train_fold
from fetalbio.io import read_oof_folds
from fetalbio.models import MODELS
from fetalbio.reporting.compare import best_of_family, compare_table
from fetalbio.reporting.evaluate import evaluate, per_image_table
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


TOYS = {
    # name: (registry entry, params section)
    "toy": (VariantSpec("segmentation", "toy_seg", "dice_bce", description="toy segmentation"),
            {"arch": {"width": 4}, "loss": "dice_bce", "postprocess": {"threshold": 0.5, "method": "plain"}}),
    "toy_points": (VariantSpec("landmark", "toy_seg", "heatmap_mse", "heatmap", "soft_argmax", "toy heatmap landmarks"),
                   {"arch": {"width": 4}, "codec": {"sigma": 2.0, "decoder": "soft_argmax"}, "loss": "heatmap_mse"}),
}


@pytest.fixture
def toy_variants(monkeypatch):
    # 1. the network, registered by name (a new file under src/fetalbio/models/ in real life)
    if "toy_seg" not in MODELS:
        MODELS.register("toy_seg")(ToySegNet)
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    for name, (spec, section) in TOYS.items():
        monkeypatch.setitem(VARIANTS, name, spec)  # 2. one registry entry
        params["variants"][name] = section  # 3. one params section (and its name in variant_names)
        params["variant_names"].append(name)
    return params


def test_toy_variants_added_by_registry_entry_and_params_section_run_end_to_end(toy_variants, synth_clean, tmp_path, monkeypatch) -> None:
    from fetalbio.commands._common import compared_names, read_variant_names

    params = toy_variants
    assert {"toy", "toy_points"} <= set(read_variant_names(params, Path("params.yaml")))
    assert {"toy_refined", "toy_points_refined"} <= set(compared_names(params, Path("params.yaml")))
    clean, d = synth_clean
    folds = assign_folds(clean, k=2, size_bins=1, seed=0)
    monkeypatch.chdir(tmp_path)
    metrics = {}
    for name, (spec, _) in TOYS.items():
        vcfg = from_dict(VariantConfig, params["variants"][name], f"variants.{name}")
        out = tmp_path / "models" / name
        for fold in (0, 1):
            summary = train_fold(clean, folds, d, name, vcfg, TCFG, fold, 42, out / f"fold{fold}")
            assert summary["family"] == spec.family and (out / f"fold{fold}" / "model.pt").is_file()
        oof = read_oof_folds(out)
        assert sorted(oof["image_name"]) == sorted(clean["image_name"])  # every image held out once
        assert (oof["mask_path"].fillna("") != "").any() == (spec.family == "segmentation")  # masks only from a segmentation method
        ev = evaluate(per_image_table(clean, oof, d, out), spec.family, [2.0])
        assert ev.summary["family"] == spec.family and ev.summary["n_images"] == len(clean)
        assert ("mask_dice" in ev.summary["segmentation"]) == (spec.family == "segmentation")
        assert ev.summary["n_scored"]["landmarks_vs_clean_labels"] == int((clean["weight"] > 0).sum())
        metrics[name] = ev.summary
    table, _ = compare_table(metrics)
    assert dict(zip(table["variant"], table["family"])) == {"toy": "segmentation", "toy_points": "landmark"}
    assert best_of_family(table, "landmark") == "toy_points" and best_of_family(table, "segmentation") == "toy"
