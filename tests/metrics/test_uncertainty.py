"""Risk–coverage, AURC and uncertainty/error correlation."""

import math

import numpy as np
import pytest

from fetalbio.metrics import aurc, risk_coverage, uncertainty_error_correlation


def test_risk_coverage_hand():
    df = risk_coverage(np.array([0.1, 0.3, 0.2]), np.array([1.0, 3.0, 2.0]))
    # sorted by u: errors [1, 2, 3] -> running means [1, 1.5, 2]
    np.testing.assert_allclose(df["coverage"], [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(df["risk"], [1.0, 1.5, 2.0])
    # trapezoid: 1/3 * ((1 + 1.5)/2 + (1.5 + 2)/2) = 1/3 * 3 = 1
    assert aurc(np.array([0.1, 0.3, 0.2]), np.array([1.0, 3.0, 2.0])) == pytest.approx(1.0)
    # reversed ranking: errors [3, 2, 1] -> risks [3, 2.5, 2]; 1/3 * (2.75 + 2.25) = 5/3
    assert aurc(-np.array([0.1, 0.3, 0.2]), np.array([1.0, 3.0, 2.0])) == pytest.approx(5 / 3)


def test_perfect_ranking_monotone_and_better_than_reversed():
    rng = np.random.default_rng(0)
    e = rng.gamma(2.0, 1.0, 200)
    u = e * 3.0 + 1.0  # perfectly ranked
    risk = risk_coverage(u, e)["risk"].to_numpy()
    assert np.all(np.diff(risk) >= -1e-12)
    assert aurc(u, e) < aurc(-u, e)
    assert risk[-1] == pytest.approx(e.mean())


def test_non_finite_pairs_dropped_and_counted():
    df = risk_coverage(np.array([0.1, np.nan, 0.2]), np.array([1.0, 5.0, np.nan]))
    assert len(df) == 1 and df.attrs == {"n": 1, "n_dropped": 2}
    assert math.isnan(aurc(np.array([0.1]), np.array([1.0])))


def test_spearman():
    # ranks u = [1,2,3,4], e = [1,3,2,4]: d = [0,1,-1,0], rho = 1 - 6*2/(4*15) = 0.8
    out = uncertainty_error_correlation(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4]))
    assert out["spearman_rho"] == pytest.approx(0.8) and out["n"] == 4
    u = np.arange(10.0)
    assert uncertainty_error_correlation(u, 2 * u + 1)["spearman_rho"] == pytest.approx(1.0)
    assert uncertainty_error_correlation(u, -u)["spearman_rho"] == pytest.approx(-1.0)
    const = uncertainty_error_correlation(u, np.ones(10))
    assert math.isnan(const["spearman_rho"]) and const["n"] == 10
    nan = uncertainty_error_correlation(np.array([1.0, np.nan, 2, 3]), np.array([1.0, 1, 2, 3]))
    assert nan["n"] == 3 and nan["n_missing"] == 1
