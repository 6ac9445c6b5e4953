"""Params validation: unknown, missing and mistyped keys are named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fetalbio.commands.params_merge import deep_merge
from fetalbio.config import (
    FAMILY_KEYS,
    ConfigError,
    DataConfig,
    EvaluateConfig,
    FinalConfig,
    FoldsConfig,
    LabelsConfig,
    TrainConfig,
    VariantConfig,
    from_dict,
    load_section,
    merged_train_config,
    read_params,
    variant_config,
)
from fetalbio.variants import VARIANTS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["params.yaml", *sorted(p.name for p in (REPO / "configs").glob("*.yaml"))]


def test_repo_params_load() -> None:
    repo = REPO
    assert load_section(repo / "params.yaml", "data", DataConfig).root == "data/sample"
    load_section(repo / "params.yaml", "labels", LabelsConfig)
    folds = load_section(repo / "params.yaml", "folds", FoldsConfig)
    assert folds.ids == [0, 1] and folds.k == 2  # the documented K = 2 of the embedded sample
    for config in sorted((repo / "configs").glob("full-*.yaml")):  # and K = 5 on the full data
        assert load_section(config, "folds", FoldsConfig).ids == [0, 1, 2, 3, 4], config
    assert FoldsConfig(ids=[0, 1, 2]).k == 3


@pytest.mark.parametrize(
    "section,cls,raw,msg",
    [
        ("folds", FoldsConfig, {"ids": [0, 1], "bins": 3}, "unknown key(s) in 'folds': bins"),
        ("folds", FoldsConfig, {"ids": ["a", 1]}, "folds.ids[0] must be an integer, got 'a'"),
        ("folds", FoldsConfig, {"ids": [0]}, "folds.ids must be 0, 1, ..., K-1 with K >= 2"),
        ("folds", FoldsConfig, {"ids": [0, 2]}, "folds.ids must be 0, 1, ..., K-1 with K >= 2"),
        ("data", DataConfig, {"layout": "auto"}, "missing key data.root"),
        ("data", DataConfig, {"root": "x", "on_error": "ignore"}, "data.on_error must be one of ['error', 'drop']"),
        ("labels", LabelsConfig, {"flagged_weight": 2.0}, "labels.flagged_weight must be in [0.0, 1.0]"),
    ],
)
def test_bad_sections(section: str, cls: type, raw: dict, msg: str) -> None:
    with pytest.raises(ConfigError) as ei:
        from_dict(cls, raw, section)
    assert msg in str(ei.value)


def test_missing_section_and_file(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"missing key 'folds'"):
        load_section(p, "folds", FoldsConfig)
    with pytest.raises(ConfigError, match="params file not found"):
        load_section(tmp_path / "nope.yaml", "folds", FoldsConfig)


@pytest.mark.parametrize("config", SHIPPED)
def test_every_shipped_config_loads(config: str) -> None:
    """params.yaml, and each configs/*.yaml merged into it as ``fetalbio params-merge`` does:
    every section and every variant (with its family's keys only) loads."""
    params = read_params(REPO / "params.yaml")
    if config != "params.yaml":
        params = deep_merge(params, read_params(REPO / "configs" / config))
    for section, cls in (("data", DataConfig), ("labels", LabelsConfig), ("folds", FoldsConfig), ("evaluate", EvaluateConfig), ("final", FinalConfig)):
        from_dict(cls, params[section], section)
    common = from_dict(TrainConfig, params["train"], "train")
    assert set(params["variant_names"]) <= set(params["variants"])
    for name, raw in params["variants"].items():
        merged_train_config(common, variant_config(name, raw or {}, f"variants.{name}"), f"variants.{name}")


@pytest.mark.parametrize(
    "variant,key,value,owner",
    [
        ("hm_unet", "crop", {"span": 1.5}, "the refine family (hm_unet is a landmark variant)"),
        ("hm_unet", "postprocess", {"threshold": 0.4}, "the segmentation and refine families (hm_unet is a landmark variant)"),
        ("hm_unet", "mask_source", "landmarks", "the segmentation family (hm_unet is a landmark variant)"),
        ("seg_unet", "codec", {"sigma": 3.0}, "the landmark family (seg_unet is a segmentation variant)"),
        ("seg_unet", "geometric_prior", 1.0, "the landmark family (seg_unet is a segmentation variant)"),
        ("seg_unet", "crop", {}, "the refine family (seg_unet is a segmentation variant)"),
        ("refine", "mask_source", "sonographer", "the segmentation family (refine is a refine variant)"),
        ("refine", "codec", {}, "the landmark family (refine is a refine variant)"),
    ],
)
def test_misplaced_variant_key_is_refused(variant: str, key: str, value: object, owner: str) -> None:
    raw = {"arch": {}, key: value}
    with pytest.raises(ConfigError) as ei:
        variant_config(variant, raw, f"variants.{variant}")
    assert str(ei.value) == f"variants.{variant}.{key}: `{key}` belongs to {owner}"
    with pytest.raises(ConfigError, match="unknown key"):  # a typo is refused as before
        variant_config(variant, {"crpo": {}}, f"variants.{variant}")


def test_family_keys_and_stored_configs() -> None:
    """Every family-only key is a field; a model file's ``variant_cfg`` (every key, other
    families' at their defaults) loads, but not with another family's key off its default."""
    fields = {f.name for f in dataclasses.fields(VariantConfig)}
    assert set(FAMILY_KEYS) < fields and {f for owners in FAMILY_KEYS.values() for f in owners} == {s.family for s in VARIANTS.values()}
    stored = dataclasses.asdict(VariantConfig(codec={"sigma": 2.0}))
    assert variant_config("hm_unet", stored, "m.pt: coarse variant_cfg", stored=True).codec == {"sigma": 2.0}
    for name in ("seg_unet", "refine"):
        variant_config(name, dataclasses.asdict(VariantConfig()), "m.pt: coarse variant_cfg", stored=True)
    with pytest.raises(ConfigError, match="variant_cfg.codec: `codec` belongs to the landmark family"):
        variant_config("seg_unet", stored, "m.pt: coarse variant_cfg", stored=True)
    from fetalbio.model_file import load_stage  # the loader of every model file (torch and ONNX form)

    st = {"role": "coarse", "variant": "hm_unet", "variant_cfg": {**dataclasses.asdict(VariantConfig()), "crop": {"span": 2.0}},
          "train_cfg": {}, "state_dicts": [{}], "calibration": {}}
    with pytest.raises(ConfigError, match=r"m.pt: coarse variant_cfg.crop: `crop` belongs to the refine family \(hm_unet is a landmark variant\)"):
        load_stage(Path("m.pt"), st, "cpu")
