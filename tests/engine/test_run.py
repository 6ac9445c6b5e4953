"""train_fold end to end on a small synthetic table (CPU, tiny networks, 2 epochs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from fold_files import fold_weights

from fetalbio import POINT_COLUMNS
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.folds import assign_folds
from fetalbio.engine import run as run_mod
from fetalbio.engine.dataset import BiometryDataset
from fetalbio.engine.run import PREDICTION_COLUMNS, inner_split, table_hash, train_fold
from fetalbio.engine.train import predict
from fetalbio.geometry.points import canonicalize_batch
from fetalbio.model_file import read_model_file
from fetalbio.tasks import build_task

HELD = 1
SEED = 42
TCFG = TrainConfig(input_width=64, input_height=64, batch_size=4, epochs=2, patience=2, device="cpu", cpu_threads=1, progress=False, amp=False)


class _Spy:
    """Records the tables every BiometryDataset of train_fold is built from."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, table, table_dir, task, tcfg, train, seed=0, with_targets=True):
        self.calls.append({"names": list(table["image_name"]), "subjects": set(table["subject_id"]), "train": train, "with_targets": with_targets})
        return BiometryDataset(table, table_dir, task, tcfg, train, seed=seed, with_targets=with_targets)


@pytest.fixture(scope="module")
def runs(synth_clean, tiny_arch, tmp_path_factory) -> dict[str, Any]:
    clean, d = synth_clean
    folds = assign_folds(clean, k=3, size_bins=1, seed=0)
    base = tmp_path_factory.mktemp("train_fold")
    out: dict[str, Any] = {"clean": clean, "folds": folds, "table_dir": d}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)  # dvclive looks for a DVC/Git repo from the working directory
        for key, variant, model in [("lm_a", "hm_unet", "unet"), ("lm_b", "hm_unet", "unet"), ("seg", "seg_unet", "unet")]:
            spy = _Spy()
            mp.setattr(run_mod, "BiometryDataset", spy)
            vcfg = VariantConfig(arch=tiny_arch(model))
            summary = train_fold(clean, folds, d, variant, vcfg, TCFG, HELD, SEED, base / key)
            out[key] = {"dir": base / key, "summary": summary, "calls": spy.calls, "vcfg": vcfg, "variant": variant}
    return out


def _held(runs) -> pd.DataFrame:
    f = runs["folds"]
    return f[f["fold"] == HELD]


@pytest.mark.parametrize("key", ["lm_a", "seg"])
def test_outputs_written(runs, key: str) -> None:
    r = runs[key]
    d: Path = r["dir"]
    for name in ("model.pt", "oof.csv", "summary.json"):
        assert (d / name).is_file(), name
    assert (d / "dvclive").is_dir() and (d / "dvclive" / "metrics.json").is_file()
    logged = json.loads((d / "dvclive" / "metrics.json").read_text())
    assert {"train_loss", "val_score", "lr"} <= set(logged)
    assert not list(d.glob(".*.tmp")), "temporary checkpoint left behind"
    on_disk = json.loads((d / "summary.json").read_text())
    assert on_disk["fold"] == HELD and on_disk["variant"] == r["variant"] and on_disk["device"] == "cpu"
    assert on_disk["epochs_run"] == 2 and 1 <= on_disk["best_epoch"] <= 2
    assert on_disk["inner_val_score_kind"] == ("mre_px" if key != "seg" else "one_minus_dice")


@pytest.mark.parametrize("key", ["lm_a", "seg"])
def test_oof_is_exactly_the_held_out_fold(runs, key: str) -> None:
    r = runs[key]
    oof = pd.read_csv(r["dir"] / "oof.csv", dtype={"image_name": str, "reason": str, "mask_path": str})
    assert list(oof.columns) == PREDICTION_COLUMNS
    held = _held(runs)
    assert sorted(oof["image_name"]) == sorted(held["image_name"])
    assert not oof["image_name"].duplicated().any()
    assert (oof["fold"] == HELD).all()
    ok = oof["status"] == "ok"
    assert set(oof["status"]) <= {"ok", "failed"}
    assert np.isfinite(oof.loc[ok, list(POINT_COLUMNS)].to_numpy()).all()
    assert r["summary"]["n_failed_heldout"] == int((~ok).sum())
    # points are canonical (the clean_labels rule: OFD point 1 leftmost, BPD point 1 on the
    # OFD normal's negative side) and OFD >= BPD
    p = oof.loc[ok, list(POINT_COLUMNS)].to_numpy().reshape(-1, 4, 2)
    np.testing.assert_array_equal(canonicalize_batch(p), p)
    assert (p[:, 0, 0] <= p[:, 1, 0]).all()
    assert (np.linalg.norm(p[:, 1] - p[:, 0], axis=1) >= np.linalg.norm(p[:, 3] - p[:, 2], axis=1) - 1e-9).all()


def test_held_out_images_are_never_trained_on(runs) -> None:
    clean, folds = runs["clean"], runs["folds"]
    held = set(_held(runs)["image_name"])
    held_subjects = set(_held(runs)["subject_id"])
    for key in ("lm_a", "seg"):
        r = runs[key]
        s = r["summary"]
        assert s["n_heldout"] == len(held)
        # every clean row is usable here (weight 1, mask present): train + inner-val = the other folds
        assert s["n_train"] + s["n_inner_val"] + s["n_heldout"] == len(clean)
        assert s["n_inner_val"] >= 1 and s["n_train"] > s["n_inner_val"]
        fit_sets = [c for c in r["calls"] if c["with_targets"]]
        pred_sets = [c for c in r["calls"] if not c["with_targets"]]
        assert len(fit_sets) == 2 and sum(c["train"] for c in fit_sets) == 1
        train_c = next(c for c in fit_sets if c["train"])
        val_c = next(c for c in fit_sets if not c["train"])
        assert len(train_c["names"]) == s["n_train"] and len(val_c["names"]) == s["n_inner_val"]
        assert not held & set(train_c["names"]) and not held & set(val_c["names"])
        assert not held_subjects & train_c["subjects"] and not held_subjects & val_c["subjects"]
        assert not train_c["subjects"] & val_c["subjects"], "inner split must be subject-grouped"
        assert set(train_c["names"]) | set(val_c["names"]) == set(folds.loc[folds["fold"] != HELD, "image_name"])
        assert len(pred_sets) == 1 and set(pred_sets[0]["names"]) == held


def test_checkpoint_records_training_rows_and_reproduces_the_predictions(runs) -> None:
    r = runs["lm_a"]
    clean, folds, d = runs["clean"], runs["folds"], runs["table_dir"]
    raw = read_model_file(r["dir"] / "model.pt")
    cfg = raw["provenance"]
    assert raw["stages"][0]["variant"] == "hm_unet" and cfg["fold"] == HELD and cfg["member_seeds"] == [SEED]
    assert cfg["best_epochs"] == [r["summary"]["best_epoch"]]
    # the recorded training-data hash is that of the inner-train split of the other folds
    table = clean.merge(folds[["image_name", "fold"]], on="image_name")
    tr, _ = inner_split(table[table["fold"] != HELD], TCFG.inner_val_frac, SEED + HELD)
    assert cfg["training_data_hash"] == [table_hash(tr[["image_name", *POINT_COLUMNS, "weight"]])]
    assert not set(tr["image_name"]) & set(_held(runs)["image_name"])
    # the saved weights are the ones that produced oof.csv
    task = build_task("hm_unet", r["vcfg"], TCFG)
    task.model.load_state_dict(raw["stages"][0]["state_dicts"][0])
    held = table[table["fold"] == HELD].reset_index(drop=True)
    preds = predict(task, BiometryDataset(held, d, task, TCFG, train=False, with_targets=False), TCFG, torch.device("cpu"))
    oof = pd.read_csv(r["dir"] / "oof.csv", dtype={"image_name": str}).set_index("image_name")
    for name, p in zip(held["image_name"], preds):
        np.testing.assert_allclose(p.points.reshape(-1), oof.loc[name, list(POINT_COLUMNS)].to_numpy(dtype=float), rtol=1e-5, atol=1e-4)


def test_segmentation_writes_one_original_size_mask_per_held_out_image(runs) -> None:
    r = runs["seg"]
    clean = runs["clean"].set_index("image_name")
    oof = pd.read_csv(r["dir"] / "oof.csv", dtype={"image_name": str, "mask_path": str})
    masks = sorted((r["dir"] / "masks").glob("*.png"))
    assert len(masks) == len(oof) == len(_held(runs))
    for _, row in oof.iterrows():
        assert row["mask_path"] == f"masks/{Path(row['image_name']).with_suffix('.png').name}"
        m = cv2.imread(str(r["dir"] / row["mask_path"]), cv2.IMREAD_GRAYSCALE)
        assert m is not None
        assert m.shape == (int(clean.loc[row["image_name"], "height"]), int(clean.loc[row["image_name"], "width"]))
        assert set(np.unique(m)) <= {0, 255}
        if row["status"] == "ok":
            assert np.isfinite(row["fit_residual_px"])


def test_landmark_oof_has_no_mask_paths(runs) -> None:
    oof = pd.read_csv(runs["lm_a"]["dir"] / "oof.csv", dtype={"mask_path": str}, keep_default_na=False)
    assert (oof["mask_path"] == "").all()
    assert not (runs["lm_a"]["dir"] / "masks").exists()


def test_cpu_training_is_deterministic(runs) -> None:
    a, b = runs["lm_a"], runs["lm_b"]
    assert (a["dir"] / "oof.csv").read_bytes() == (b["dir"] / "oof.csv").read_bytes()
    sa, sb = dict(a["summary"]), dict(b["summary"])
    for k in ("train_seconds", "train_images_per_s"):
        sa.pop(k), sb.pop(k)
    assert sa == sb
    wa = fold_weights(a["dir"] / "model.pt")
    wb = fold_weights(b["dir"] / "model.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_fold_rejects_bad_fold_tables(runs, tiny_arch, tmp_path: Path) -> None:
    clean, folds, d = runs["clean"], runs["folds"], runs["table_dir"]
    vcfg = VariantConfig(arch=tiny_arch("unet"))
    with pytest.raises(ValueError, match="fold 7 does not exist"):
        train_fold(clean, folds, d, "hm_unet", vcfg, TCFG, 7, SEED, tmp_path / "x")
    with pytest.raises(ValueError, match="no fold"):
        train_fold(clean, folds.iloc[1:], d, "hm_unet", vcfg, TCFG, HELD, SEED, tmp_path / "y")
    with pytest.raises(KeyError, match="unknown variant"):
        train_fold(clean, folds, d, "no_such_variant", vcfg, TCFG, HELD, SEED, tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("key", ["lm_a", "seg"])
def test_saved_weights_are_the_best_inner_val_epoch(runs, key: str) -> None:
    r = runs[key]
    clean, folds, d = runs["clean"], runs["folds"], runs["table_dir"]
    task = build_task(r["variant"], r["vcfg"], TCFG)
    task.model.load_state_dict(fold_weights(r["dir"] / "model.pt"))
    table = clean.merge(folds[["image_name", "fold"]], on="image_name")
    _, va = inner_split(table[table["fold"] != HELD], TCFG.inner_val_frac, SEED + HELD)
    val_ds = BiometryDataset(va, d, task, TCFG, train=False)
    score = task.score_fn(val_ds)(predict(task, val_ds, TCFG, torch.device("cpu")))
    assert score == pytest.approx(r["summary"]["best_inner_val_score"], rel=1e-6, abs=1e-9)
    history = json.loads((r["dir"] / "dvclive" / "metrics.json").read_text())
    assert r["summary"]["best_inner_val_score"] <= history["val_score"] + 1e-9  # last logged epoch is never better
