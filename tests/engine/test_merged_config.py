"""merged_train_config: a variant's ``train:`` mapping overrides the common ``train`` section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from fetalbio.config import AugmentConfig, ConfigError, TrainConfig, VariantConfig, from_dict, merged_train_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def common() -> TrainConfig:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    base = from_dict(TrainConfig, params["train"], "train")
    # augment values that differ from the dataclass defaults, so a shallow (non-nested) merge
    # that falls back to defaults is visible
    odd = AugmentConfig(rotate_deg=7.0, scale=0.3, shift=0.02, hflip=0.25, brightness_contrast=0.1, gamma=0.05, speckle=0.3, elastic=True)
    assert all(getattr(odd, f.name) != f.default for f in dataclasses.fields(AugmentConfig))
    return dataclasses.replace(base, epochs=9, augment=odd)


def test_no_override_returns_common(common: TrainConfig) -> None:
    assert merged_train_config(common, VariantConfig(), "variants.hm_unet") == common


def test_override_with_nested_augment_merge(common: TrainConfig) -> None:
    v = VariantConfig(train={"epochs": 3, "augment": {"hflip": 0.0}})
    merged = merged_train_config(common, v, "variants.hm_unet")
    assert isinstance(merged, TrainConfig)
    assert merged.epochs == 3 and common.epochs != 3
    assert merged.augment.hflip == 0.0 and common.augment.hflip != 0.0
    # every other augment key survives the nested merge
    for f in dataclasses.fields(common.augment):
        if f.name != "hflip":
            assert getattr(merged.augment, f.name) == getattr(common.augment, f.name), f.name
    # every other top-level key is the common one
    for f in dataclasses.fields(common):
        if f.name not in ("epochs", "augment"):
            assert getattr(merged, f.name) == getattr(common, f.name), f.name
    # the common config is not modified
    assert common.epochs != 3 and common.augment.hflip != 0.0


def test_override_is_validated(common: TrainConfig) -> None:
    merged = merged_train_config(common, VariantConfig(train={"lr": 1, "input_width": 64}), "variants.x")
    assert merged.lr == 1.0 and isinstance(merged.lr, float) and merged.input_width == 64
    with pytest.raises(ConfigError, match="multiple of 32"):
        merged_train_config(common, VariantConfig(train={"input_width": 100}), "variants.x")
    with pytest.raises(ConfigError):
        merged_train_config(common, VariantConfig(train={"device": "tpu"}), "variants.x")


def test_unknown_key_is_rejected_naming_the_variant_section(common: TrainConfig) -> None:
    with pytest.raises(ConfigError) as exc:
        merged_train_config(common, VariantConfig(train={"epochz": 3}), "variants.hm_unet")
    msg = str(exc.value)
    assert "variants.hm_unet.train" in msg and "epochz" in msg
    assert "epochs" in msg  # lists the valid keys


def test_unknown_nested_augment_key_names_the_variant_section(common: TrainConfig) -> None:
    with pytest.raises(ConfigError) as exc:
        merged_train_config(common, VariantConfig(train={"augment": {"hflipp": 0.0}}), "variants.hm_unet")
    assert "hflipp" in str(exc.value)
    assert "variants.hm_unet.train" in str(exc.value)
