"""Label audit: canonical order, renaming, and recall on planted corruptions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fetalbio import POINT_COLUMNS
from fetalbio.config import DataConfig, LabelsConfig
from fetalbio.data.ingest import ingest
from fetalbio.data.labels import audit, draw_audit_picture
from fetalbio.data.synthetic import make_challenge_dataset
from fetalbio.geometry.points import canonicalize, canonicalize_batch


def test_canonicalize_renames_and_orders() -> None:
    # source "ofd" pair is the short one and its endpoints are right-to-left
    pts = np.array([[60.0, 20], [60, 80], [100, 50], [20, 50]])
    res = canonicalize(pts)
    assert res.swapped_diameters
    np.testing.assert_array_equal(res.points, [[20, 50], [100, 50], [60, 20], [60, 80]])
    assert res.reordered_ofd and not res.reordered_bpd
    again = canonicalize(res.points)
    np.testing.assert_array_equal(again.points, res.points)
    assert not (again.swapped_diameters or again.reordered_ofd or again.reordered_bpd)


def test_canonical_order_after_horizontal_flip() -> None:
    pts = np.array([[20.0, 40], [100, 60], [55, 10], [65, 90]])
    flipped = pts.copy()
    flipped[:, 0] = 120 - flipped[:, 0]
    out = canonicalize_batch(flipped[None])[0]
    d = out[1] - out[0]
    assert out[0, 0] < out[1, 0] and out[2] @ np.array([-d[1], d[0]]) < out[3] @ np.array([-d[1], d[0]])
    # same set of points, just reordered
    assert sorted(map(tuple, out)) == sorted(map(tuple, flipped))
    with pytest.raises(ValueError, match=r"\(N, 4, 2\)"):
        canonicalize_batch(pts)


@pytest.mark.parametrize("tilt_deg", [-8.0, -2.0, 0.0, 2.0, 8.0])
def test_near_vertical_bpd_keeps_its_order(tilt_deg: float) -> None:
    """A horizontal OFD with a near-vertical BPD: bpd_1 is the upper endpoint whichever way the
    BPD leans (ordering the BPD by x would swap its labels between -2 and +2 degrees)."""
    t = np.radians(tilt_deg)
    top, bottom = np.array([50 + 30 * np.sin(t), 50 - 30 * np.cos(t)]), np.array([50 - 30 * np.sin(t), 50 + 30 * np.cos(t)])
    for bpd in ([top, bottom], [bottom, top]):
        out = canonicalize(np.array([[90.0, 50], [10, 50], *bpd])).points
        np.testing.assert_allclose(out, [[10, 50], [90, 50], top, bottom])
    # the rule turns with the head: rotate everything by 90 degrees, bpd_1 follows
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    pts = np.array([[10.0, 50], [90, 50], top, bottom]) @ rot.T
    out = canonicalize(pts).points
    d = out[1] - out[0]
    assert out[2] @ np.array([-d[1], d[0]]) < out[3] @ np.array([-d[1], d[0]])


def test_bpd_parallel_to_ofd_falls_back_to_the_x_rule() -> None:
    out = canonicalize(np.array([[0.0, 0], [100, 0], [70, 0], [30, 0]])).points
    np.testing.assert_array_equal(out, [[0, 0], [100, 0], [30, 0], [70, 0]])


def _ingested(tmp_path: Path, n_subjects: int = 40, seed: int = 5) -> tuple[pd.DataFrame, Path]:
    root = tmp_path / "ds"
    make_challenge_dataset(root, n_subjects=n_subjects, images_per_subject=(1,), seed=seed)
    res = ingest(DataConfig(root=str(root)), tmp_path / "ing")
    return res.table, tmp_path / "ing"


def test_clean_synthetic_rows_left_alone(tmp_path: Path) -> None:
    table, d = _ingested(tmp_path)
    res = audit(table, d, LabelsConfig(), seed=0)
    assert res.counts["renamed_ofd_bpd"] == len(table)  # synthetic columns are swapped like the real data
    assert res.counts["flagged_any_label_reason"] == 0
    assert (res.clean["weight"] == 1.0).all()
    ofd = np.hypot(res.clean.ofd_2_x - res.clean.ofd_1_x, res.clean.ofd_2_y - res.clean.ofd_1_y)
    bpd = np.hypot(res.clean.bpd_2_x - res.clean.bpd_1_x, res.clean.bpd_2_y - res.clean.bpd_1_y)
    assert (ofd >= bpd).all()


def test_planted_corruptions_are_found(tmp_path: Path) -> None:
    table, d = _ingested(tmp_path, n_subjects=50)
    rng = np.random.default_rng(1)
    corrupt = table.copy()
    idx = rng.permutation(len(table))
    swaps, far, shuffled = idx[:5], idx[5:10], idx[10:15]
    for i in swaps:  # a point exchanged between the two diameters
        a, b = ["ofd_1_x", "ofd_1_y"], ["bpd_1_x", "bpd_1_y"]
        corrupt.loc[i, a + b] = corrupt.loc[i, b + a].to_numpy()
    for i in far:  # one point far from the head
        corrupt.loc[i, "bpd_2_x"] = float(np.clip(corrupt.loc[i, "bpd_2_x"] + 60, 0, 199))
        corrupt.loc[i, "bpd_2_y"] = float(np.clip(corrupt.loc[i, "bpd_2_y"] + 45, 0, 139))
    for i in shuffled:  # endpoint order only: must be reordered, not flagged
        corrupt.loc[i, ["ofd_1_x", "ofd_1_y", "ofd_2_x", "ofd_2_y"]] = corrupt.loc[i, ["ofd_2_x", "ofd_2_y", "ofd_1_x", "ofd_1_y"]].to_numpy()
    res = audit(corrupt, d, LabelsConfig(), seed=0)
    flagged = res.report["flags"].str.contains("angle_off|centre_off|ratio_off|mahalanobis|off_skull")
    planted = np.zeros(len(table), bool)
    planted[np.r_[swaps, far]] = True
    recall = flagged[planted].mean()
    false_pos = flagged[~planted].sum()
    assert recall == 1.0, res.report.loc[planted & ~flagged, ["image_name", "flags"]]
    assert false_pos <= 1
    assert not flagged[shuffled].any()
    # shuffled endpoints come back in canonical order: identical to the untouched clean points
    clean_ref = audit(table, d, LabelsConfig(), seed=0).report
    np.testing.assert_allclose(res.report.loc[shuffled, list(POINT_COLUMNS)], clean_ref.loc[shuffled, list(POINT_COLUMNS)])
    assert (res.report.loc[planted, "action"] == "weighted").all()


@pytest.mark.parametrize("policy,n_clean,weighted", [("drop", 47, 0), ("keep", 50, 0), ("weight", 50, 3)])
def test_policies(tmp_path: Path, policy: str, n_clean: int, weighted: int) -> None:
    table, d = _ingested(tmp_path, n_subjects=50)
    bad = table.copy()
    for i in range(3):
        bad.loc[i, ["bpd_1_x", "bpd_1_y"]] = [1.0, 1.0]
    res = audit(bad, d, dataclasses.replace(LabelsConfig(), policy=policy, flagged_weight=0.25), seed=0)
    assert len(res.clean) == n_clean and len(res.report) == 50
    assert res.counts["rows_weighted"] == weighted
    if policy == "weight":
        assert sorted(res.clean["weight"].unique()) == [0.25, 1.0]
    if policy == "drop":
        assert set(res.report.loc[res.report.action == "dropped", "image_name"]) == set(bad.image_name[:3])


def test_near_duplicates_flagged(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_challenge_dataset(root, n_subjects=12, images_per_subject=(1,), seed=2)
    import shutil

    shutil.copy(root / "images" / "000_HC.png", root / "images" / "000_2HC.png")
    shutil.copy(root / "masks" / "000_HC.png", root / "masks" / "000_2HC.png")
    lm = pd.read_csv(root / "landmarks.csv")
    row = lm.iloc[[0]].assign(image_name="000_2HC.png")
    pd.concat([lm, row]).to_csv(root / "landmarks.csv", index=False)
    ref = pd.read_csv(root / "hc18_reference.csv")
    pd.concat([ref, ref.iloc[[0]].assign(image_name="000_2HC.png")]).to_csv(root / "hc18_reference.csv", index=False)
    res = ingest(DataConfig(root=str(root)), tmp_path / "ing")
    rep = audit(res.table, tmp_path / "ing", LabelsConfig(), seed=0).report.set_index("image_name")
    assert rep.loc["000_2HC.png", "near_duplicate_of"] == "000_HC.png"
    assert rep.loc["000_HC.png", "near_duplicate_of"] == ""
    rep2 = audit(res.table, tmp_path / "ing", dataclasses.replace(LabelsConfig(), near_duplicates="drop"), seed=0)
    assert "000_2HC.png" not in set(rep2.clean["image_name"])


def test_audit_picture_written(tmp_path: Path) -> None:
    table, d = _ingested(tmp_path, n_subjects=15)
    table.loc[0, ["bpd_1_x", "bpd_1_y"]] = [1.0, 1.0]
    res = audit(table, d, LabelsConfig(), seed=0)
    flagged = res.report[res.report["flags"].str.len() > 0]
    n = draw_audit_picture(res.report, d, tmp_path / "a.png", 4)
    assert n == min(4, len(flagged)) and n >= 1  # the most severe flagged rows, at most the number asked for
    img = cv2.imread(str(tmp_path / "a.png"))
    assert img is not None and abs(img.shape[1] - round(4.2 * min(4, n) * 80)) <= 2  # one 4.2-inch panel per drawn row, at 80 dpi
    # the BPD of the flagged rows is drawn (cyan), over the grayscale images
    cyan = (img[:, :, 0] > 200) & (img[:, :, 1] > 200) & (img[:, :, 2] < 80)
    assert cyan.any()
    none = audit(table.drop(index=0).reset_index(drop=True), d, LabelsConfig(), seed=0).report
    none = none.assign(flags="")
    assert draw_audit_picture(none, d, tmp_path / "b.png", 4) == 0  # nothing flagged: nothing drawn, a note instead
