"""per_image_table + evaluate on a hand-made table with hand-computed metrics."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fetalbio import POINT_COLUMNS, POINT_NAMES, UNC_COLUMNS
from fetalbio.geometry.ellipse import Ellipse, ellipse_from_points, ellipse_to_mask
from fetalbio.io import read_oof_folds
from fetalbio.metrics.biometry import errors_by_tilt
from fetalbio.reporting.evaluate import _mask_axes_px, evaluate, per_image_table

OOF_COLUMNS = ["image_name", "fold", *POINT_COLUMNS, *UNC_COLUMNS, "status", "reason", "mask_path", "fit_residual_px"]
# ofd horizontal (80 px), bpd vertical (60 px), canonical order
REF = np.array([[20.0, 50.0], [100.0, 50.0], [60.0, 20.0], [60.0, 80.0]])
SIZE = (130, 100)  # (W, H) of the images
SDR_T = [0.25, 0.35, 0.5]


def hc(ofd: float, bpd: float) -> float:
    """Ramanujan II perimeter from full axes (written out here, independent of the package)."""
    a, b = ofd / 2, bpd / 2
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def _tables(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path, Path]:
    """Six held-out images:

    a, b  perfect predictions (b has a sonographer mask)
    c     every point shifted by +1 px in x          (4 errors of 1 px, HC unchanged)
    d     ofd_2 shifted by +1 px in x                 (one error of 1 px, OFD 81 px)
    e     failed prediction (NaN, reason no_ellipse)
    f     untrusted label (weight 0), prediction shifted by 10 px: out of landmark metrics
    """
    images_root, model_dir = tmp_path / "ing", tmp_path / "model"
    spacing = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4, "e": 0.1, "f": 0.1}
    fold = {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2, "f": 2}
    preds = {k: REF.copy() for k in spacing}
    preds["c"][:, 0] += 1.0
    preds["d"][1, 0] += 1.0
    preds["e"][:] = np.nan
    preds["f"][:, 0] += 10.0
    (images_root / "masks").mkdir(parents=True)
    sono = ellipse_to_mask(ellipse_from_points(REF), SIZE)
    cv2.imwrite(str(images_root / "masks" / "b.png"), sono * 255)
    clean, oof = [], []
    for k, s in spacing.items():
        name = f"{k}.png"
        clean.append({"image_name": name, "image_path": f"images/{name}", "subject_id": k, **dict(zip(POINT_COLUMNS, REF.reshape(-1))),
                      "pixel_size_mm": s, "hc_mm": hc(80 * s, 60 * s), "mask_path": "masks/b.png" if k == "b" else "",
                      "weight": 0.0 if k == "f" else 1.0})
        failed = k == "e"
        oof.append({"image_name": name, "fold": fold[k], **dict(zip(POINT_COLUMNS, preds[k].reshape(-1))),
                    **dict(zip(UNC_COLUMNS, [np.nan if failed else 0.5] * 4)), "status": "failed" if failed else "ok",
                    "reason": "no_ellipse" if failed else "", "mask_path": "", "fit_residual_px": np.nan})
    return pd.DataFrame(clean), pd.DataFrame(oof, columns=OOF_COLUMNS), images_root, model_dir


def test_per_image_errors(tmp_path: Path) -> None:
    clean, oof, root, model = _tables(tmp_path)
    pi = per_image_table(clean, oof, root, model).set_index("image_name")
    assert len(pi) == 6
    err = {k: pi.loc[f"{k}.png", [f"err_{p}_px" for p in POINT_NAMES]].to_numpy(dtype=float) for k in "abcdef"}
    np.testing.assert_allclose(err["a"], 0, atol=1e-12)
    np.testing.assert_allclose(err["b"], 0, atol=1e-12)
    np.testing.assert_allclose(err["c"], 1, atol=1e-12)
    np.testing.assert_allclose(err["d"], [0, 1, 0, 0], atol=1e-12)
    assert np.isnan(err["e"]).all()
    np.testing.assert_allclose(err["f"], 10, atol=1e-12)
    assert pi.loc["c.png", "err_ofd_1_mm"] == pytest.approx(0.3)
    assert pi.loc["d.png", "err_ofd_2_mm"] == pytest.approx(0.4)
    assert list(pi["label_trusted"]) == [True] * 5 + [False]
    # HC vs the reference (sonographer) HC: zero for perfect and translated predictions
    for k in "abcf":
        assert pi.loc[f"{k}.png", "hc_abs_err_mm"] == pytest.approx(0, abs=1e-9), k
    d3 = hc(81 * 0.4, 60 * 0.4) - hc(80 * 0.4, 60 * 0.4)
    assert pi.loc["d.png", "hc_err_mm"] == pytest.approx(d3, rel=1e-9) and d3 > 0
    assert pi.loc["d.png", "pred_ofd_mm"] == pytest.approx(32.4) and pi.loc["d.png", "pred_bpd_mm"] == pytest.approx(24.0)
    assert pi.loc["d.png", "label_ofd_mm"] == pytest.approx(32.0)
    assert np.isnan(pi.loc["e.png", "pred_hc_mm"]) and np.isnan(pi.loc["e.png", "hc_err_mm"])
    assert pi.loc["e.png", "status"] == "failed" and pi.loc["e.png", "reason"] == "no_ellipse"
    assert pi.loc["a.png", "reason"] == ""
    # the sonographer mask: its ellipse axes (mm) and the Dice of the (perfect) predicted ellipse
    assert pi.loc["b.png", "ref_ofd_mm"] == pytest.approx(80 * 0.2, abs=0.05)
    assert pi.loc["b.png", "ref_bpd_mm"] == pytest.approx(60 * 0.2, abs=0.05)
    # the reference axes are the reference's own: their perimeter is the reference HC
    assert hc(pi.loc["b.png", "ref_ofd_mm"], pi.loc["b.png", "ref_bpd_mm"]) == pytest.approx(pi.loc["b.png", "ref_hc_mm"], rel=1e-6)
    assert pi.loc["b.png", "ellipse_dice"] == pytest.approx(1.0)
    assert pi["ellipse_dice"].drop("b.png").isna().all()
    assert pi["mask_dice"].isna().all()


def test_evaluate_summary(tmp_path: Path) -> None:
    clean, oof, root, model = _tables(tmp_path)
    ev = evaluate(per_image_table(clean, oof, root, model), "landmark", SDR_T)
    s = ev.summary
    assert s["family"] == "landmark" and s["n_images"] == 6
    assert s["n_failed"] == 1 and s["failure_reasons"] == {"no_ellipse": 1}
    lm = s["landmarks_vs_clean_labels"]
    assert lm["n_images"] == 5  # f is untrusted
    # finite trusted errors: a, b 8 x 0; c 4 x 1; d [0, 1, 0, 0] -> 5 px over 16 points
    assert lm["mre_px"] == pytest.approx(5 / 16, abs=1e-5)
    assert lm["mre_mm"] == pytest.approx((4 * 0.3 + 0.4) / 16, abs=1e-5)
    # SDR over all 20 trusted points, the 4 failed ones count as misses
    assert lm["sdr_0.25mm"] == pytest.approx(11 / 20) and lm["sdr_0.35mm"] == pytest.approx(15 / 20) and lm["sdr_0.5mm"] == pytest.approx(16 / 20)
    assert lm["n"] == 20 and lm["n_failed"] == 4
    assert lm["nme_ofd"] == pytest.approx(5 / 16 / 80, abs=1e-5)
    assert lm["per_landmark_mre_mm"] == pytest.approx({"ofd_1": 0.075, "ofd_2": 0.175, "bpd_1": 0.075, "bpd_2": 0.075}, abs=1e-5)
    d3 = hc(81 * 0.4, 60 * 0.4) - hc(80 * 0.4, 60 * 0.4)
    sono = s["measurements_vs_sonographer"]["hc"]
    assert sono["n"] == 6 and sono["n_failed"] == 1
    assert sono["mae"] == pytest.approx(d3 / 5, abs=1e-5) and sono["bias"] == pytest.approx(d3 / 5, abs=1e-5)
    labels = s["measurements_vs_clean_labels"]
    assert labels["hc"]["mae"] == pytest.approx(d3 / 4, abs=1e-5) and labels["hc"]["n_failed"] == 1
    assert labels["ofd"]["mae"] == pytest.approx(0.4 / 4, abs=1e-5) and labels["bpd"]["mae"] == pytest.approx(0, abs=1e-9)
    assert s["segmentation"]["ellipse_dice"] == pytest.approx(1.0)
    folds = s["over_folds"]["mre_mm"]
    assert folds["n_folds"] == 2 and folds["mean"] == pytest.approx((0 + (0.3 + 0.1) / 2) / 2, abs=1e-5)
    # plot data
    # failed "e" has no HC: it has no Bland-Altman point (per_image lists it as failed)
    assert list(ev.bland_altman["image_name"]) == [n for n in oof["image_name"] if n != "e.png"]
    assert np.isfinite(ev.bland_altman[["mean_mm", "diff_mm"]].to_numpy()).all()
    assert ev.ced["fraction"].iloc[-1] == pytest.approx(16 / 20)
    assert ev.per_image is not None and len(ev.per_image) == 6


def test_evaluate_segmentation_mask_metrics(tmp_path: Path) -> None:
    clean, oof, root, model = _tables(tmp_path)
    # b's predicted mask equals the sonographer mask
    (model / "fold0" / "masks").mkdir(parents=True)
    cv2.imwrite(str(model / "fold0" / "masks" / "b.png"), ellipse_to_mask(ellipse_from_points(REF), SIZE) * 255)
    oof.loc[oof["image_name"] == "b.png", "mask_path"] = "fold0/masks/b.png"
    pi = per_image_table(clean, oof, root, model).set_index("image_name")
    assert pi.loc["b.png", "mask_dice"] == pytest.approx(1.0) and pi.loc["b.png", "mask_iou"] == pytest.approx(1.0)
    assert pi.loc["b.png", "mask_hd95_mm"] == pytest.approx(0.0, abs=1e-9)
    seg = evaluate(pi.reset_index(), "segmentation", SDR_T).summary["segmentation"]
    assert seg["mask_dice"] == pytest.approx(1.0) and seg["mask_iou"] == pytest.approx(1.0)


def test_per_image_table_refuses_unknown_predictions(tmp_path: Path) -> None:
    clean, oof, root, model = _tables(tmp_path)
    with pytest.raises(ValueError, match="not in the cleaned table"):
        per_image_table(clean.iloc[1:], oof, root, model)


def test_read_oof_concatenates_folds(tmp_path: Path) -> None:
    _, oof, _, model = _tables(tmp_path)
    oof.loc[oof["image_name"] == "c.png", "mask_path"] = "masks/c.png"
    for f, part in oof.groupby("fold"):
        (model / f"fold{f}").mkdir(parents=True)
        part.to_csv(model / f"fold{f}" / "oof.csv", index=False)
    got = read_oof_folds(model)
    assert sorted(got["image_name"]) == sorted(oof["image_name"])
    assert got.set_index("image_name").loc["c.png", "mask_path"] == "fold1/masks/c.png"
    assert (got.set_index("image_name").drop("c.png")["mask_path"] == "").all()
    # the same image predicted in two folds is an error
    oof.iloc[:1].assign(fold=2).to_csv(model / "fold2" / "oof.csv", index=False)
    with pytest.raises(ValueError, match="two folds"):
        read_oof_folds(model)
    with pytest.raises(FileNotFoundError):
        read_oof_folds(tmp_path / "empty")


@pytest.mark.parametrize(("theta_deg", "tilt_deg"), [(0.0, 0.0), (20.0, 20.0), (90.0, 90.0), (135.0, 45.0), (170.0, 10.0)])
def test_mask_axes_report_the_head_tilt(theta_deg: float, tilt_deg: float) -> None:
    e = Ellipse(200.0, 160.0, 90.0, 60.0, math.radians(theta_deg))
    major, minor, tilt = _mask_axes_px(ellipse_to_mask(e, (400, 320)))
    assert major == pytest.approx(180.0, abs=2.0) and minor == pytest.approx(120.0, abs=2.0)
    assert tilt == pytest.approx(tilt_deg, abs=1.0)
    assert all(math.isnan(v) for v in _mask_axes_px(np.zeros((20, 20), np.uint8)))


def test_errors_by_tilt_by_hand() -> None:
    pred = np.array([101.0, 99.0, 150.0, np.nan, 203.0, 300.0, 90.0])
    ref = np.array([100.0, 100.0, 150.0, 100.0, 200.0, np.nan, 100.0])
    tilt = np.array([0.0, 29.9, 30.0, 45.0, 90.0, 10.0, np.nan])  # last two: no reference / no tilt
    bins = errors_by_tilt(pred, ref, tilt)
    assert [(b["tilt_low_deg"], b["tilt_high_deg"], b["n"], b["n_failed"]) for b in bins] == [(0, 30, 2, 0), (30, 60, 2, 1), (60, 90, 1, 0)]
    assert bins[0]["mae"] == pytest.approx(1.0) and bins[0]["bias"] == pytest.approx(0.0)
    assert bins[1]["mae"] == pytest.approx(0.0)
    assert bins[2]["mae"] == pytest.approx(3.0) and bins[2]["bias"] == pytest.approx(3.0)
    assert all(math.isnan(b["mae"]) and b["n"] == 0 for b in errors_by_tilt(pred[:0], ref[:0], tilt[:0]))


def test_by_gestation_groups_by_source_bin_and_large_heads() -> None:
    from fetalbio.reporting.evaluate import by_gestation, hc_bin

    ref = np.array([80.0, 120.0, 180.0, 220.0, 260.0, 320.0, 330.0, np.nan])
    err = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, np.nan, 1.0])  # 330 mm: failed; the last has no reference
    pi = pd.DataFrame({"ref_hc_mm": ref, "hc_err_mm": err, "hc_abs_err_mm": np.abs(err),
                       "source": ["early"] * 3 + ["late"] * 5, "hc_mm_low": ref + err - 2.5, "hc_mm_high": ref + err + 2.5,
                       "flag": ["ok"] * 8, "flag_reason": [""] * 6 + ["not like fetal-head ultrasound: x (dark_frac 1 outside [0, 0.5])", ""]})
    assert list(hc_bin(ref)) == ["<100", "100-150", "150-200", "200-250", "250-300", ">300", ">300", ""]
    g = by_gestation(pi).set_index(["group", "value"])
    assert g.loc[("all", "all"), "n"] == 7  # the row without a reference is left out
    assert g.loc[("source", "late"), "n"] == 4 and g.loc[("source", "late"), "n_failed"] == 1
    assert g.loc[("source", "late"), "mae_mm"] == pytest.approx((3 + 1 + 2) / 3) and g.loc[("source", "late"), "bias_mm"] == pytest.approx(4 / 3)
    assert g.loc[("hc_bin", ">300"), "n"] == 2 and g.loc[("hc_bin", ">300"), "n_refused"] == 1
    assert g.loc[("hc_range", ">=200"), "mae_mm"] == pytest.approx(2.0) and g.loc[("hc_range", ">=200"), "n"] == 4
    assert g.loc[("hc_bin", "200-250"), "interval_coverage"] == 0.0  # |error| 3 mm: the reference lies outside HC +- 2.5 mm
    assert g.loc[("hc_bin", "150-200"), "interval_coverage"] == 1.0  # |error| 0.5 mm: inside
