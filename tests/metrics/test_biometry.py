"""Biometry from landmarks and measurement-error statistics."""

import math

import numpy as np
import pytest
from scipy.special import ellipe

from fetalbio.metrics import biometry_mm, diameters_px, measurement_errors, ramanujan_hc


def test_diameters_px():
    pts = np.array([[[0.0, 0.0], [6.0, 8.0], [1.0, 1.0], [4.0, 5.0]]])
    ofd, bpd = diameters_px(pts)
    np.testing.assert_allclose(ofd, [10.0])  # |(6, 8)| = 10
    np.testing.assert_allclose(bpd, [5.0])  # |(3, 4)| = 5


def test_ramanujan_hc_hand_and_exact():
    assert ramanujan_hc(10.0, 10.0) == pytest.approx(10 * math.pi)  # circle: pi * d
    # a = 5, b = 3: h = (2/8)^2 = 0.0625; P = 8 pi (1 + 0.1875 / (10 + sqrt(3.8125)))
    #   = 8 pi (1 + 0.1875 / 11.95256) = 8 pi * 1.0156869 = 25.52698
    assert ramanujan_hc(10.0, 6.0) == pytest.approx(25.52698, abs=1e-4)
    # exact perimeter 4 a E(e^2), e^2 = 1 - b^2/a^2 = 16/25
    assert ramanujan_hc(10.0, 6.0) == pytest.approx(4 * 5 * ellipe(16 / 25), rel=1e-7)
    out = ramanujan_hc(np.array([10.0, 0.0, np.nan]), np.array([6.0, 0.0, 1.0]))
    assert out.shape == (3,) and out[1] == 0.0 and np.isnan(out[2])


def test_biometry_mm():
    pts = np.array([[[0.0, 0.0], [10.0, 0.0], [5.0, -3.0], [5.0, 3.0]]] * 2)
    df = biometry_mm(pts, np.array([0.5, np.nan]))
    assert list(df.columns) == ["bpd_mm", "ofd_mm", "hc_mm"]
    # 10 px and 6 px at 0.5 mm/px -> 5 and 3 mm; HC half of the 10 x 6 perimeter above
    assert df.loc[0, "ofd_mm"] == pytest.approx(5.0)
    assert df.loc[0, "bpd_mm"] == pytest.approx(3.0)
    assert df.loc[0, "hc_mm"] == pytest.approx(25.52698 / 2, abs=1e-4)
    assert df.loc[1].isna().all()


def test_measurement_errors_hand_and_failed_counted():
    pred = np.array([102.0, 98.0, 105.0, np.nan, 50.0])
    ref = np.array([100.0, 100.0, 100.0, 100.0, np.nan])
    out = measurement_errors(pred, ref)
    # scored d = [2, -2, 5]: mae 9/3 = 3, median |d| = 2, bias 5/3,
    # sd: deviations [1/3, -11/3, 10/3] -> (1 + 121 + 100)/9 / 2 = 12.333 -> 3.5119
    assert out["mae"] == pytest.approx(3.0)
    assert out["median_ae"] == pytest.approx(2.0)
    assert out["bias"] == pytest.approx(5 / 3)
    assert out["sd"] == pytest.approx(math.sqrt(222 / 18))
    assert out["pct_error_mean"] == pytest.approx(3.0)  # (2 + 2 + 5) / 100 * 100 / 3
    assert (out["n"], out["n_failed"], out["n_missing"]) == (4, 1, 1)


def test_measurement_errors_all_failed():
    out = measurement_errors(np.array([np.nan, np.nan]), np.array([1.0, 2.0]))
    assert math.isnan(out["mae"]) and out["n"] == 2 and out["n_failed"] == 2
