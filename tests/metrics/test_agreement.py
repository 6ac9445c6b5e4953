"""Bland–Altman (diff = a - b) and the paired Wilcoxon test."""

import math

import numpy as np
import pytest

from fetalbio.metrics import bland_altman, bland_altman_points, wilcoxon_paired


def test_bland_altman_hand():
    out = bland_altman(np.array([1.0, 2, 3, 4]), np.array([2.0, 2, 5, 5]))
    # d = a - b = [-1, 0, -2, -1]: mean -1; sum sq dev = 0 + 1 + 1 + 0 = 2; sd = sqrt(2/3)
    sd = math.sqrt(2 / 3)
    assert out["mean_diff"] == pytest.approx(-1.0)
    assert out["sd_diff"] == pytest.approx(sd)
    assert out["loa_low"] == pytest.approx(-1 - 1.96 * sd)  # -2.6003
    assert out["loa_high"] == pytest.approx(-1 + 1.96 * sd)  # 0.6003
    assert out["n"] == 4 and out["n_missing"] == 0


def test_bland_altman_planted_bias_sign():
    rng = np.random.default_rng(0)
    a = rng.normal(170.0, 20.0, 300)
    b = a + 2.0 + rng.normal(0.0, 0.1, 300)  # b measures 2 more: diff = a - b ~ -2
    a[5] = np.nan
    out = bland_altman(a, b)
    assert out["mean_diff"] == pytest.approx(-2.0, abs=0.03)
    assert out["sd_diff"] == pytest.approx(0.1, abs=0.02)
    assert out["loa_low"] < -2.0 < out["loa_high"]
    assert out["n"] == 299 and out["n_missing"] == 1


def test_bland_altman_points():
    df = bland_altman_points(np.array([1.0, 3.0, np.nan]), np.array([3.0, 3.0, 1.0]))
    np.testing.assert_allclose(df["mean"], [2.0, 3.0, np.nan])
    np.testing.assert_allclose(df["diff"], [-2.0, 0.0, np.nan])


def test_wilcoxon_hand_exact():
    out = wilcoxon_paired(np.array([2.0, 4, 6, 8, 10]), np.array([1.0, 2, 3, 4, 5]))
    # d = [1..5] all > 0: W = min(R+, R-) = 0; exact two-sided p = 2 / 2^5 = 0.0625
    assert out["statistic"] == 0.0
    assert out["p_value"] == pytest.approx(0.0625)
    assert out["median_diff"] == 3.0 and out["n"] == 5


def test_wilcoxon_clearly_different_and_identical():
    rng = np.random.default_rng(1)
    a = rng.gamma(2.0, 1.0, 40)
    b = a + 1.0 + rng.normal(0, 0.1, 40)
    b[0] = np.nan
    diff = wilcoxon_paired(a, b)
    assert diff["p_value"] < 0.01 and diff["n"] == 39 and diff["n_missing"] == 1
    assert diff["median_diff"] == pytest.approx(-1.0, abs=0.1)
    same = wilcoxon_paired(a, a.copy())
    assert same["p_value"] == 1.0 and same["statistic"] == 0.0 and same["median_diff"] == 0.0
    empty = wilcoxon_paired(np.array([np.nan]), np.array([1.0]))
    assert empty["n"] == 0 and math.isnan(empty["p_value"])
