"""Does the model's uncertainty rank its errors? Risk–coverage, AURC and Spearman correlation.

Cases with a non-finite uncertainty or error cannot be ranked / averaged and are excluded;
their count is reported (``n_dropped`` in ``DataFrame.attrs`` for :func:`risk_coverage`,
``n_missing`` for :func:`uncertainty_error_correlation`). Score failed predictions separately
(e.g. ``n_failed`` of the error metrics) — they are not hidden by these curves.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def _finite_pairs(u: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    uu = np.asarray(u, dtype=np.float64).reshape(-1)
    ee = np.asarray(e, dtype=np.float64).reshape(-1)
    if uu.shape != ee.shape:
        raise ValueError(f"uncertainty {uu.shape} and error {ee.shape} differ in shape")
    ok = np.isfinite(uu) & np.isfinite(ee)
    return uu[ok], ee[ok], int((~ok).sum())


def risk_coverage(uncertainty: np.ndarray, error: np.ndarray) -> pd.DataFrame:
    """Risk–coverage curve of selective prediction.

    Cases are sorted by increasing uncertainty (stable sort: ties keep input order); at
    coverage ``k / N`` (k = 1..N) the risk is the mean error of the ``k`` most certain cases.
    A well-ranked uncertainty gives a risk that increases with coverage.

    Returns a DataFrame with columns ``coverage`` and ``risk`` (N rows, empty if no finite
    pair); ``df.attrs`` holds ``n`` (pairs used) and ``n_dropped`` (non-finite pairs).
    """
    u, e, n_dropped = _finite_pairs(uncertainty, error)
    order = np.argsort(u, kind="stable")
    n = e.size
    k = np.arange(1, n + 1, dtype=np.float64)
    risk = np.cumsum(e[order]) / k if n else np.empty(0)
    df = pd.DataFrame({"coverage": k / n if n else np.empty(0), "risk": risk})
    df.attrs.update({"n": int(n), "n_dropped": n_dropped})
    return df


def aurc(uncertainty: np.ndarray, error: np.ndarray) -> float:
    """Area under the risk–coverage curve (trapezoid rule over coverage 1/N .. 1).

    Lower is better. NaN when fewer than 2 finite pairs.
    """
    rc = risk_coverage(uncertainty, error)
    if len(rc) < 2:
        return float("nan")
    return float(np.trapezoid(rc["risk"].to_numpy(), rc["coverage"].to_numpy()))


def uncertainty_error_correlation(u: np.ndarray, e: np.ndarray) -> dict[str, float]:
    """Spearman rank correlation between uncertainty and error over finite pairs.

    Returns ``spearman_rho``, ``p_value``, ``n`` (pairs used), ``n_missing`` (dropped).
    ``rho`` and ``p`` are NaN when n < 3 or when either input is constant.
    """
    uu, ee, n_missing = _finite_pairs(u, e)
    rho = p = float("nan")
    if uu.size >= 3 and np.ptp(uu) > 0 and np.ptp(ee) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from scipy import stats  # here: importing scipy.stats costs every command ~0.4 s

            res = stats.spearmanr(uu, ee)
        rho, p = float(res.statistic), float(res.pvalue)
    return {"spearman_rho": rho, "p_value": p, "n": int(uu.size), "n_missing": n_missing}
