"""Bad input through the real CLI: a clear message and exit code 1, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from stage_cli import app  # the stage scripts and the fetalbio command in one app
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _params(tmp_path: Path, edit) -> Path:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(p)
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(p))
    return out


def _fail(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    return res.output


def test_help_lists_every_user_command_and_every_stage_script_has_help() -> None:
    import re

    from stage_cli import STAGES, stage_module

    from fetalbio.cli import app as user_app

    res = runner.invoke(user_app, ["--help"], terminal_width=200)
    assert res.exit_code == 0
    # each command as a whole word at the start of its help row ("compare" inside "compare-runs" does not count)
    listed = set(re.findall(r"^\W*([a-z][a-z-]*)\s{2,}", res.output, re.M))
    for cmd in ("refine", "params-merge", "predict", "bench", "export", "compare-runs", "corrections-to-source", "summary"):
        assert cmd in listed, (cmd, sorted(listed))
    assert not {"ingest", "train", "evaluate", "final"} & listed  # DVC stages are scripts under stages/, not user commands
    for name in STAGES:
        res = runner.invoke(stage_module(name).app, ["--help"], terminal_width=200)
        assert res.exit_code == 0 and "--params" in res.output, (name, res.output)


def test_unknown_variant(tmp_path: Path) -> None:
    out = _fail(["train", "--variant", "hm_unett", "--fold", "0", "--out-dir", str(tmp_path / "m")])
    assert "unknown variant 'hm_unett'" in out and "hm_unet" in out


def test_negative_epochs(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: d["train"].__setitem__("epochs", -3))
    out = _fail(["train", "--params", str(p), "--variant", "hm_unet", "--fold", "0", "--out-dir", str(tmp_path / "m")])
    assert "train.epochs must be >= 1, got -3" in out


def test_missing_variant_section(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: d["variants"].pop("hm_unet"))
    out = _fail(["train", "--params", str(p), "--variant", "hm_unet", "--fold", "0", "--out-dir", str(tmp_path / "m")])
    assert "missing key 'variants.hm_unet'" in out


def test_unknown_arch_option(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: d["variants"]["hm_unet"]["arch"].__setitem__("widht", 3))
    out = _fail(["train", "--params", str(p), "--variant", "hm_unet", "--fold", "0", "--labels", str(tmp_path / "none.csv"), "--out-dir", str(tmp_path / "m")])
    assert "variants.hm_unet" in out and "widht" in out  # refused before any data is read


def test_misplaced_variant_key(tmp_path: Path) -> None:  # params.yaml as `dvc exp run -S variants.hm_unet.crop.span=2` leaves it
    p = _params(tmp_path, lambda d: d["variants"]["hm_unet"].__setitem__("crop", {"span": 2.0}))
    out = _fail(["train", "--params", str(p), "--variant", "hm_unet", "--fold", "0", "--labels", str(tmp_path / "none.csv"), "--out-dir", str(tmp_path / "m")])
    assert "variants.hm_unet.crop: `crop` belongs to the refine family (hm_unet is a landmark variant)" in out


def test_bad_data_root(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: d["data"].__setitem__("root", str(tmp_path / "nowhere")))
    out = _fail(["ingest", "--params", str(p), "--out-dir", str(tmp_path / "ing")])
    assert "data root is not a directory" in out


def test_evaluate_without_predictions(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    out = _fail(["evaluate", "--variant", "hm_unet", "--labels", str(table), "--models-dir", str(tmp_path / "none"),
                 "--metrics-dir", str(tmp_path / "m"), "--plots-dir", str(tmp_path / "p")])
    assert "no fold*/oof.csv under" in out


@pytest.mark.parametrize("override,msg", [({"trian": {"epochs": 1}}, "override key 'trian' does not exist"), ({"train": {"epohcs": 1}}, "override key 'train.epohcs'")])
def test_params_merge_refuses_typos(tmp_path: Path, override: dict, msg: str) -> None:
    p = _params(tmp_path, lambda d: None)
    o = tmp_path / "o.yaml"
    o.write_text(yaml.safe_dump(override))
    assert msg in _fail(["params-merge", str(o), "--params", str(p)])


def test_params_merge_adds_optional_train_keys(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: None)
    o = tmp_path / "o.yaml"
    o.write_text(yaml.safe_dump({"train": {"schedule": "cosine_restarts", "restart_epochs": 3}}))
    res = runner.invoke(app, ["params-merge", str(o), "--params", str(p)])
    assert res.exit_code == 0, res.output
    merged = yaml.safe_load(p.read_text())
    assert merged["train"]["schedule"] == "cosine_restarts" and merged["train"]["restart_epochs"] == 3


def test_params_merge_applies_writeups_config(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: None)
    res = runner.invoke(app, ["params-merge", str(REPO / "configs/full-cpu-writeups.yaml"), "--params", str(p)])
    assert res.exit_code == 0, res.output
    merged = yaml.safe_load(p.read_text())
    assert merged["variant_names"] == ["hm_unet", "multihead_unet", "hybrid_hourglass", "attention_fpn", "vit_landmark",
                                       "coord_alexnet", "coord_resnet18", "coord_resnet34", "coord_efficientnet"]
    assert merged["train"]["epochs"] == 15 and merged["train"]["cpu_threads"] == 1
    assert merged["variants"]["hm_unet"]["arch"]["base_width"] == 16  # the paired reference at full-cpu size
    assert merged["data"]["root"] == "../shared/data/fetal-head" and merged["data"]["sources"] == {"fetal-head": ".", "hc18-late": None}


def test_params_merge_applies_full_config(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: None)
    res = runner.invoke(app, ["params-merge", str(REPO / "configs/full-cpu.yaml"), "--params", str(p)])
    assert res.exit_code == 0, res.output
    merged = yaml.safe_load(p.read_text())
    assert merged["data"]["root"] == "../shared/data/fetal-head" and merged["data"]["sources"] == {"fetal-head": ".", "hc18-late": None}
    assert merged["data"]["on_error"] == "error"  # untouched keys kept
    assert merged["variants"]["hm_unet"]["arch"]["base_width"] == 16
