"""Params validation: unknown, missing and mistyped keys are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetalbio.config import ConfigError, DataConfig, FoldsConfig, LabelsConfig, from_dict, load_section


def test_repo_params_load() -> None:
    repo = Path(__file__).resolve().parents[1]
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
