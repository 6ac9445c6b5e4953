"""Agreement between two measurement methods: Bland–Altman and the paired Wilcoxon test.

Sign convention: **diff = a - b** throughout. With ``b = a + 2`` the mean difference is -2.
Only pairs where both values are finite are used; the dropped pairs are counted in
``n_missing``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired inputs differ in shape: {x.shape} vs {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok], int((~ok).sum())


def bland_altman(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Bland–Altman statistics of ``diff = a - b``.

    Returns ``mean_diff``, ``sd_diff`` (ddof=1), ``loa_low`` / ``loa_high``
    (``mean_diff -/+ 1.96 sd_diff``, the 95 % limits of agreement), ``n`` (finite pairs used)
    and ``n_missing`` (pairs dropped because a value is NaN). SD and limits are NaN for n < 2.
    """
    x, y, n_missing = _paired(a, b)
    d = x - y
    mean = float(d.mean()) if d.size else float("nan")
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return {"mean_diff": mean, "sd_diff": sd, "loa_low": mean - 1.96 * sd, "loa_high": mean + 1.96 * sd, "n": int(d.size), "n_missing": n_missing}


def bland_altman_points(a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """Per-pair ``mean = (a + b) / 2`` and ``diff = a - b`` for a Bland–Altman plot.

    One row per input pair, in input order (NaN where either value is missing), so the frame
    can be joined back to the cases it came from.
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired inputs differ in shape: {x.shape} vs {y.shape}")
    return pd.DataFrame({"mean": (x + y) / 2.0, "diff": x - y})


def wilcoxon_paired(err_a: np.ndarray, err_b: np.ndarray) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test of ``err_a - err_b`` (e.g. two models' errors).

    Uses :func:`scipy.stats.wilcoxon` on the pairs where both errors are finite (zero
    differences dropped, scipy's default ``zero_method="wilcox"``). When every difference is
    zero the samples are identical: ``statistic = 0``, ``p_value = 1.0`` (no crash). With no
    finite pair both are NaN.

    Returns ``statistic``, ``p_value``, ``n`` (finite pairs), ``n_missing``, ``median_diff``
    (median of ``err_a - err_b``).
    """
    x, y, n_missing = _paired(err_a, err_b)
    d = x - y
    out = {
        "statistic": float("nan"),
        "p_value": float("nan"),
        "n": int(d.size),
        "n_missing": n_missing,
        "median_diff": float(np.median(d)) if d.size else float("nan"),
    }
    if d.size == 0:
        return out
    if np.all(d == 0):
        out["statistic"], out["p_value"] = 0.0, 1.0
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small-sample / ties notices
        from scipy import stats  # here: importing scipy.stats costs every command ~0.4 s

        res = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    out["statistic"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out
