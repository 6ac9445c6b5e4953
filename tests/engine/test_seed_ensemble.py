"""Seed ensembles (``variants.<name>.seeds``): each member is exactly the one-seed training, the
held-out predictions decode the members' averaged outputs, and ``final`` exports every member."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fold_files import fold_stage, fold_weights

from fetalbio import POINT_COLUMNS
from fetalbio.config import ConfigError, TrainConfig, VariantConfig, from_dict
from fetalbio.data.folds import assign_folds
from fetalbio.engine.dataset import BiometryDataset
from fetalbio.engine.run import train_fold
from fetalbio.engine.train import predict
from fetalbio.inference.export import export_final, gather_folds
from fetalbio.model_file import load_model, read_model_file
from fetalbio.reporting.model_card import model_card
from fetalbio.tasks import build_task

HELD = 1
SEED = 42
OTHER = 7
TCFG = TrainConfig(input_width=64, input_height=64, batch_size=4, epochs=2, patience=2, device="cpu", cpu_threads=1, progress=False, amp=False)


@pytest.fixture(scope="module")
def runs(synth_clean, tiny_arch, tmp_path_factory) -> dict[str, Any]:
    clean, d = synth_clean
    folds = assign_folds(clean, k=3, size_bins=1, seed=0)
    base = tmp_path_factory.mktemp("seed_ensemble")
    out: dict[str, Any] = {"clean": clean, "folds": folds, "table_dir": d, "base": base}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)  # dvclive looks for a DVC/Git repo from the working directory
        for key, variant, seeds, top_seed in [
            ("single_a", "hm_unet", [], SEED),
            ("single_b", "hm_unet", [], OTHER),
            ("ens", "hm_unet", [SEED, OTHER], 0),  # the top-level seed is not used when seeds are given
            ("seg_ens", "seg_unet", [SEED, OTHER], 0),
        ]:
            vcfg = VariantConfig(arch=tiny_arch("unet"), seeds=seeds)
            out_dir = base / "models" / f"{key}" / f"fold{HELD}"
            summary = train_fold(clean, folds, d, variant, vcfg, TCFG, HELD, top_seed, out_dir, resume_dir=base / ".resume" / key)
            out[key] = {"dir": out_dir, "summary": summary, "vcfg": vcfg, "variant": variant}
    return out


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_member_is_the_one_seed_training(runs) -> None:
    ens = runs["ens"]["dir"]
    # one fold file holds every member, in seed order
    assert sorted(p.name for p in ens.glob("*.pt")) == ["model.pt"]
    raw = read_model_file(ens / "model.pt")
    assert len(raw["stages"][0]["state_dicts"]) == 2 and raw["provenance"]["member_seeds"] == [SEED, OTHER]
    assert _same(fold_weights(ens / "model.pt", 0), fold_weights(runs["single_a"]["dir"] / "model.pt"))
    assert _same(fold_weights(ens / "model.pt", 1), fold_weights(runs["single_b"]["dir"] / "model.pt"))
    assert not _same(fold_weights(ens / "model.pt", 0), fold_weights(ens / "model.pt", 1))
    assert len(fold_stage(runs["single_a"]["dir"] / "model.pt")["state_dicts"]) == 1


def test_summary_logs_and_resume_files(runs) -> None:
    r = runs["ens"]
    s = json.loads((r["dir"] / "summary.json").read_text())
    single = runs["single_a"]["summary"]
    assert s["member_seeds"] == [SEED, OTHER]
    assert [m["seed"] for m in s["members"]] == [SEED, OTHER]
    assert s["best_epoch"] == single["best_epoch"] == s["members"][0]["best_epoch"]
    assert s["members"][1]["best_epoch"] == runs["single_b"]["summary"]["best_epoch"]
    assert s["members"][1]["n_train"] == runs["single_b"]["summary"]["n_train"]
    assert "member_seeds" not in single and "members" not in single
    assert (r["dir"] / "dvclive" / "metrics.json").is_file() and (r["dir"] / f"dvclive_seed{OTHER}" / "metrics.json").is_file()
    assert not (runs["base"] / ".resume" / "ens").exists(), "resume files are removed once the fold is written"


class Killed(RuntimeError):
    """Stands for SIGKILL after an epoch's resume file was written."""


def test_a_kill_in_the_second_member_resumes_both(runs, monkeypatch) -> None:
    """Killed after the second member's first epoch, the rerun takes the first member from its
    (finished) resume file, continues the second, and ends with the uninterrupted run's files."""
    from fetalbio.engine import run as run_mod

    r = runs["ens"]
    base = runs["base"]
    monkeypatch.chdir(base)
    out, resume = base / "models" / "killed" / f"fold{HELD}", base / ".resume" / "killed"
    real_fit = run_mod.fit
    calls: list[int] = []

    def fit(*args, **kwargs):
        calls.append(1)
        log = args[7]

        def dying_log(epoch: int, row: dict) -> None:
            log(epoch, row)
            if kill and len(calls) == 2 and epoch == 0:
                raise Killed("killed after the second member's first epoch")

        return real_fit(*args[:7], dying_log, *args[8:], **kwargs)

    monkeypatch.setattr(run_mod, "fit", fit)
    args = (runs["clean"], runs["folds"], runs["table_dir"], "hm_unet", r["vcfg"], TCFG, HELD, 0, out)
    kill = True
    with pytest.raises(Killed):
        train_fold(*args, resume_dir=resume)
    assert (resume / f"seed{SEED}" / "resume.pt").is_file() and (resume / f"seed{OTHER}" / "resume.pt").is_file()
    assert not (out / "oof.csv").exists()
    kill, calls[:] = False, []
    summary = train_fold(*args, resume_dir=resume)
    # the first member came back finished from its file, the second continued after its first epoch
    assert [m["resumed_from_epoch"] for m in summary["members"]] == [TCFG.epochs, 1]
    assert not resume.exists()
    assert (out / "oof.csv").read_bytes() == (r["dir"] / "oof.csv").read_bytes()
    for i in range(2):
        assert _same(fold_weights(out / "model.pt", i), fold_weights(r["dir"] / "model.pt", i))


def _held(runs) -> pd.DataFrame:
    table = runs["clean"].merge(runs["folds"][["image_name", "fold"]], on="image_name")
    return table[table["fold"] == HELD].reset_index(drop=True)


def _oof_points(path: Path, names: list[str]) -> np.ndarray:
    oof = pd.read_csv(path, dtype={"image_name": str}).set_index("image_name")
    return oof.loc[names, list(POINT_COLUMNS)].to_numpy(dtype=float)


def test_held_out_predictions_decode_the_averaged_outputs(runs) -> None:
    r, held, d = runs["ens"], _held(runs), runs["table_dir"]
    tasks = []
    for i in range(2):
        t = build_task("hm_unet", r["vcfg"], TCFG)
        t.model.load_state_dict(fold_weights(r["dir"] / "model.pt", i))
        tasks.append(t)
    ds = BiometryDataset(held, d, tasks[0], TCFG, train=False, with_targets=False)
    preds = predict(tasks[0], ds, TCFG, torch.device("cpu"), models=[t.model for t in tasks])
    names = list(held["image_name"])
    got = _oof_points(r["dir"] / "oof.csv", names)
    np.testing.assert_allclose(np.stack([p.points.reshape(-1) for p in preds]), got, rtol=1e-5, atol=1e-4)
    # and that is neither member alone
    for single in ("single_a", "single_b"):
        assert np.abs(got - _oof_points(runs[single]["dir"] / "oof.csv", names)).max() > 1e-3


def test_segmentation_members_share_the_calibration(runs) -> None:
    r = runs["seg_ens"]
    stage = fold_stage(r["dir"] / "model.pt")
    assert len(stage["state_dicts"]) == 2 and stage["calibration"] == r["summary"]["calibration"]
    assert stage["calibration"]["edge_offset_n"] > 0
    # exported from the folds, the fold's calibration counts once, not once per member
    sds, gathered = gather_folds([r["dir"] / "model.pt"])
    assert len(sds) == 2 and gathered == stage["calibration"]
    oof = pd.read_csv(r["dir"] / "oof.csv", dtype={"image_name": str, "mask_path": str})
    assert len(oof) == len(_held(runs)) and len(list((r["dir"] / "masks").glob("*.png"))) == len(oof)


@pytest.mark.parametrize("source, n_networks", [("refit", 2), ("folds", 2)])
def test_final_exports_every_member(runs, tmp_path: Path, monkeypatch, source: str, n_networks: int) -> None:
    monkeypatch.chdir(runs["base"])
    r = runs["ens"]
    models_dir = runs["base"] / "models"
    # export_final reads models/<variant>/fold*/: give it the ensemble's folder under the variant's name
    (tmp_path / "models" / "hm_unet").mkdir(parents=True)
    (tmp_path / "models" / "hm_unet" / f"fold{HELD}").symlink_to(models_dir / "ens" / f"fold{HELD}")
    out = tmp_path / "model.pt"
    summary = export_final(runs["clean"], runs["table_dir"], tmp_path / "models", {"table": []}, "hm_unet", r["vcfg"], TCFG, 0,
                           source, 0.95, "synthetic", out)
    assert summary["n_models"] == n_networks
    loaded = load_model(out)
    assert len(loaded.tasks) == n_networks
    weights = [t.model.state_dict() for t in loaded.tasks]
    if source == "folds":  # the fold's members, as trained
        assert _same(weights[0], fold_weights(r["dir"] / "model.pt", 0)) and _same(weights[1], fold_weights(r["dir"] / "model.pt", 1))
        assert summary["train"]["fold_member_best_epochs"] == [[m["best_epoch"] for m in r["summary"]["members"]]]
        assert "a seed ensemble per fold (seeds 42, 7)" in model_card(summary, {"n_images": 16}, "synthetic", 16)
    else:  # one refit per seed, on all rows: not the fold members
        assert summary["train"]["member_seeds"] == [SEED, OTHER] and len(summary["train"]["members"]) == 2
        assert "train_seconds" not in json.dumps(summary["train"]), "final.json must not change from rerun to rerun"
        assert not _same(weights[0], weights[1])
        assert not _same(weights[0], fold_weights(r["dir"] / "model.pt"))
        card = model_card(summary, {"n_images": 16}, "synthetic", 16)
        assert f"Seed ensemble, refit once per seed ({SEED}, {OTHER})" in card


def test_the_resume_key_does_not_depend_on_the_seeds_list(tiny_arch) -> None:
    """A one-network run keeps the key it had before ``seeds`` existed; adding a seed to an
    ensemble keeps the existing members' resume files usable."""
    from fetalbio.engine.run import resume_key

    rows = pd.DataFrame({"image_name": ["a.png"], "weight": [1.0]})
    keys = {resume_key("hm_unet", VariantConfig(arch=tiny_arch("unet"), seeds=seeds), TCFG, SEED, HELD, rows, rows)
            for seeds in ([], [SEED], [SEED, OTHER], [SEED, OTHER, 3])}
    assert len(keys) == 1
    assert resume_key("hm_unet", VariantConfig(arch=tiny_arch("unet")), TCFG, OTHER, HELD, rows, rows) not in keys


@pytest.mark.parametrize("seeds, message", [
    ([1, 1], "must not repeat"),
    ([-1], "non-negative"),
    ([True], "must be an integer"),
    ("3", "must be a list"),
])
def test_bad_seeds_are_refused(seeds, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(VariantConfig, {"seeds": seeds}, "variants.hm_unet")
