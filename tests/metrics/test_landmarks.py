"""Landmark metrics against hand-computed examples."""

import math

import numpy as np
import pytest

from fetalbio.metrics import ced_curve, match_pairs, mre, nme, per_landmark, radial_errors, sdr

# OFD from (0,0) to (10,0), BPD from (5,-3) to (5,3)
REF = np.array([[[0.0, 0.0], [10.0, 0.0], [5.0, -3.0], [5.0, 3.0]]])


def test_swapped_endpoints_inside_each_diameter_give_zero_error():
    pred = REF[:, [1, 0, 3, 2]]  # both pairs reversed
    np.testing.assert_array_equal(match_pairs(pred, REF), REF)
    np.testing.assert_allclose(radial_errors(pred, REF)["px"], 0.0)
    # without matching: |(10,0)-(0,0)| = 10 for the OFD points, |(5,3)-(5,-3)| = 6 for the BPD
    np.testing.assert_allclose(radial_errors(pred, REF, match=False)["px"], [[10, 10, 6, 6]])


def test_only_the_pair_that_gains_is_swapped():
    pred = REF[:, [1, 0, 2, 3]].copy()
    pred[0, 2] += [0.0, 1.0]  # BPD in order, 1 px off
    out = match_pairs(pred, REF)
    np.testing.assert_array_equal(out[0, :2], REF[0, :2])
    np.testing.assert_array_equal(out[0, 2:], pred[0, 2:])


def test_cross_diameter_swap_is_not_undone():
    pred = REF[:, [2, 3, 0, 1]]  # BPD predicted as OFD and vice versa
    err = radial_errors(pred, REF)["px"]
    # e.g. |(5,-3)-(0,0)| = sqrt(25 + 9) = sqrt(34); swapping inside the pair gives sqrt(34) too
    np.testing.assert_allclose(err, [[math.sqrt(34)] * 4])


def test_radial_errors_px_and_mm_with_unknown_spacing():
    pred = np.concatenate([REF, REF]).copy()
    pred[0, 0] = [3.0, 4.0]  # |(3,4)| = 5
    pred[0, 3] = [5.0, 5.0]  # |(0,2)| = 2
    out = radial_errors(pred, np.concatenate([REF, REF]), spacing_mm=np.array([0.5, np.nan]))
    np.testing.assert_allclose(out["px"], [[5, 0, 0, 2], [0, 0, 0, 0]])
    np.testing.assert_allclose(out["mm"][0], [2.5, 0, 0, 1.0])  # x 0.5 mm/px
    assert np.isnan(out["mm"][1]).all()
    assert radial_errors(pred, np.concatenate([REF, REF]))["mm"] is None


def test_mre_mean_over_finite_entries():
    assert mre(np.array([[5.0, 0.0, 0.0, 2.0]])) == pytest.approx(1.75)  # 7 / 4
    assert mre(np.array([[5.0, 0.0, np.nan, 2.0]])) == pytest.approx(7 / 3)
    assert math.isnan(mre(np.full((2, 4), np.nan)))


def test_sdr_inclusive_thresholds_and_failed_points_in_denominator():
    e = np.array([[2.0, 2.5, 3.0, 4.0], [0.5, 5.0, np.nan, 2.4]])
    out = sdr(e)
    # 8 points, 1 NaN (not detected):  <=2: {2.0, 0.5}; <=2.5: +{2.5, 2.4}; <=3: +{3.0}; <=4: +{4.0}
    assert out["sdr_2mm"] == pytest.approx(2 / 8)
    assert out["sdr_2.5mm"] == pytest.approx(4 / 8)
    assert out["sdr_3mm"] == pytest.approx(5 / 8)
    assert out["sdr_4mm"] == pytest.approx(6 / 8)
    assert out["n"] == 8 and out["n_failed"] == 1
    assert sdr(np.array([[2.0001, 0, 0, 0]]), thresholds_mm=(2,))["sdr_2mm"] == pytest.approx(3 / 4)


def test_sdr_exact_threshold_after_arithmetic_and_nan_prediction():
    pred = np.concatenate([REF, REF]).copy()
    pred[0] += [0.6, 0.8]  # every point 1.0 px off -> 2.5 mm at 2.5 mm/px
    pred[1] = np.nan  # failed image
    err = radial_errors(pred, np.concatenate([REF, REF]), spacing_mm=np.array([2.5, 2.5]))["mm"]
    assert np.isnan(err[1]).all()
    out = sdr(err, thresholds_mm=(2, 2.5))
    assert out["sdr_2mm"] == 0.0
    assert out["sdr_2.5mm"] == pytest.approx(4 / 8)  # 4 detected at exactly 2.5, 4 failed
    assert out["n_failed"] == 4


def test_per_landmark():
    e = np.array([[5.0, 0.0, 0.0, 2.0], [1.0, np.nan, 2.0, 2.0]])
    out = per_landmark(e, unit="mm")
    assert set(out) == {"ofd_1", "ofd_2", "bpd_1", "bpd_2"}
    assert out["ofd_1"]["mre_mm"] == pytest.approx(3.0)  # (5 + 1) / 2
    assert out["ofd_1"]["max_mm"] == 5.0
    assert out["ofd_2"] == {"mre_mm": 0.0, "median_mm": 0.0, "max_mm": 0.0, "n": 2, "n_failed": 1}
    assert out["bpd_2"]["median_mm"] == 2.0


def test_nme_normalises_by_reference_ofd():
    e = np.array([[5.0, 0.0, 0.0, 2.0], [2.0, 2.0, 2.0, 2.0]])
    # row 0 / 10 -> [.5, 0, 0, .2]; row 1 / 20 -> [.1] * 4; mean = (0.7 + 0.4) / 8
    assert nme(e, np.array([10.0, 20.0])) == pytest.approx(1.1 / 8)
    # an unknown OFD drops that image from the mean
    assert nme(e, np.array([10.0, np.nan])) == pytest.approx(0.7 / 4)


def test_ced_curve():
    df = ced_curve(np.array([0.0, 0.5, 1.0, np.nan]), max_mm=1.0, step=0.5)
    assert list(df.columns) == ["threshold_mm", "fraction"]
    np.testing.assert_allclose(df["threshold_mm"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(df["fraction"], [1 / 4, 2 / 4, 3 / 4])  # NaN never detected
    full = ced_curve(np.array([0.3]))
    assert len(full) == 101 and full["threshold_mm"].iloc[-1] == 10.0
    assert full["threshold_mm"].iloc[3] == 0.3 and full["fraction"].iloc[3] == 1.0
    assert full["fraction"].iloc[2] == 0.0
