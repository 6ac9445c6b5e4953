"""End to end: `dvc repro` on the embedded sample in a temporary copy of the project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_project import dvc_env as _env
from dvc_project import make_project
from dvc_project import run as _run


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


VARIANTS = ("hm_unet", "coord_regression", "seg_unet")
TRAIN_STAGES = [f"train@{v}" for v in VARIANTS] + ["train_refine"]  # each trains every fold of folds.ids in turn
EVAL_STAGES = [f"{stage}@{v}" for v in VARIANTS for stage in ("refine", "evaluate")]  # evaluate scores a variant alone and refined


@pytest.mark.slow
def test_dvc_repro_end_to_end(project: Path) -> None:
    out = _run(["dvc", "repro"], project).stdout
    for stage in ("ingest", "clean_labels", "build_folds", *TRAIN_STAGES, *EVAL_STAGES, "compare", "final"):
        assert f"Running stage '{stage}'" in out, stage
    table = pd.read_csv(project / "data/ingested/table.csv")
    assert len(table) == 56 and table["source"].value_counts().to_dict() == {"fetal-head": 48, "hc18-late": 8}
    assert not table.loc[table["source"] == "hc18-late", "has_landmarks"].any()  # masks-only rows
    clean = pd.read_csv(project / "data/clean/labels.csv")
    late = clean["source"] == "hc18-late"
    assert (clean.loc[late, "weight"] == 0).all() and late.sum() == 8  # kept (masks, HC) but never landmark labels
    folds = pd.read_csv(project / "data/folds.csv", dtype={"subject_id": str})
    assert set(folds["image_name"]) == set(clean["image_name"])
    assert (folds.groupby("subject_id")["fold"].nunique() == 1).all()
    assert (project / "plots/label_audit.png").stat().st_size > 10_000
    for m in ("ingest", "label_audit", "folds", "compare", *(f"variants/{v}{r}" for v in VARIANTS for r in ("", "_refined"))):
        assert (project / f"metrics/{m}.json").is_file()
    # every image is predicted exactly once, by the model that did not train on it
    oof = pd.concat([pd.read_csv(p) for p in sorted((project / "models/seg_unet").glob("fold*/oof.csv"))])
    assert sorted(oof["image_name"]) == sorted(clean["image_name"])
    fold_of = dict(zip(folds["image_name"], folds["fold"]))
    assert all(fold_of[n] == f for n, f in zip(oof["image_name"], oof["fold"]))
    # the refined predictions of a fold come from that fold's coarse ellipses and refinement network
    for f in (0, 1):
        refined = pd.read_csv(project / f"models/hm_unet_refined/fold{f}/oof.csv")
        coarse = pd.read_csv(project / f"models/hm_unet/fold{f}/oof.csv")
        assert list(refined["image_name"]) == list(coarse["image_name"]) and (refined["fold"] == f).all()
        assert yaml.safe_load((project / f"models/refine/fold{f}/summary.json").read_text())["fold"] == f
    compare_md = (project / "metrics/compare.md").read_text()
    for v in VARIANTS:
        assert f"| {v} |" in compare_md and f"| {v}_refined |" in compare_md
    for png in ("ced", "bland_altman", "by_gestation", "worst_cases"):
        assert (project / f"plots/compare/{png}.png").stat().st_size > 5_000
    # every variant is scored on the rows it can be: landmarks on trusted landmark rows only, HC on all
    for v in VARIANTS:
        m = yaml.safe_load((project / f"metrics/variants/{v}.json").read_text())
        assert m["n_scored"]["landmarks_vs_clean_labels"] == int(((clean["weight"] > 0) & ~late).sum())
        assert m["n_scored"]["hc_vs_sonographer"] == len(clean)
        assert set(m["hc_by_source"]) == {"fetal-head", "hc18-late"} and m["hc_by_source"]["hc18-late"]["n"] == 8
    assert "## HC by gestation" in compare_md
    # the landmark variants trained on landmark rows only; segmentation and refinement on every mask
    assert yaml.safe_load((project / "models/hm_unet/fold0/summary.json").read_text())["n_train"] + \
        yaml.safe_load((project / "models/hm_unet/fold0/summary.json").read_text())["n_inner_val"] < \
        yaml.safe_load((project / "models/seg_unet/fold0/summary.json").read_text())["n_train"] + \
        yaml.safe_load((project / "models/seg_unet/fold0/summary.json").read_text())["n_inner_val"]
    # the exported model measures new images, and its card carries the pipeline's numbers
    final = yaml.safe_load((project / "metrics/final.json").read_text())
    assert final["variant"] in [f"{v}{r}" for v in VARIANTS for r in ("", "_refined")] and final["n_models"] == 1
    card = (project / "reports/model_card.md").read_text()
    assert f"`{final['variant']}`" in card and "Not a medical device" in card and "Trained on heads of HC" in card
    imgs = sorted((project / "data/sample/images").iterdir())[:2]
    _run(["fetalbio", "predict", "--model", "release/model.pt", "--images", str(imgs[0]), str(imgs[1]),
          "--spacing", "data/sample/hc18_reference.csv", "--out", "preds.csv", "--no-progress"], project)
    preds = pd.read_csv(project / "preds.csv")
    assert list(preds["image_name"]) == [p.name for p in imgs] and preds["flag"].isin(["ok", "uncertain", "failed"]).all()

    again = _run(["dvc", "repro"], project).stdout
    assert "Running stage" not in again
    assert "up to date" in again.lower()


@pytest.mark.slow
def test_one_variant_param_invalidates_only_that_variant(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["variants"]["coord_regression"]["loss_cfg"]["scale"] = [48, 32]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run(["dvc", "status"], project).stdout
    changed = {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith(("\t", " "))}
    # `final` reads every variant's params (which variant it exports depends on the comparison)
    assert changed == {"train@coord_regression", "final"}, status


@pytest.mark.slow
def test_bad_params_fail_with_clear_message(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["labels"]["policy"] = "discard"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "stages/clean_labels.py", "--params", "params.yaml"], cwd=project, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 1
    assert "labels.policy must be one of ['drop', 'keep', 'weight'], got 'discard'" in proc.stderr
