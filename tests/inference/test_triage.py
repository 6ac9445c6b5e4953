"""Triage: nesting, the interval's coverage, the flag's reasons, plausibility, GA range, and the
review page in a real headless browser."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fetalbio.inference.predictor import GA_HC_RANGE_MM, ga_and_note
from fetalbio.triage import FEATURES, Triage, nested_triage

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))
from not_a_head import make_not_a_head  # noqa: E402

MODEL = REPO / "pretrained" / "fetalbio-hc18.pt"


def _synthetic(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Signals where one of them (stage_disagreement) drives the error scale."""
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({c: rng.normal(size=n) for c in FEATURES})
    f["ring_vs_outside"] = rng.normal(2.0, 0.5, size=n)
    scale = np.exp(0.8 * f["stage_disagreement"].to_numpy())
    err = np.abs(rng.normal(0.0, scale))
    return f, err, rng.integers(0, 5, size=n)


def test_the_uncertainty_ranks_the_errors_and_the_interval_covers_90_percent() -> None:
    f, err, folds = _synthetic()
    tri = nested_triage(f, err, np.full(len(err), 200.0), folds, np.ones(len(err), bool))
    from scipy.stats import spearmanr

    assert spearmanr(tri["uncertainty"], err).statistic > 0.4
    covered = err <= tri["hc_half_width_mm"].to_numpy()
    assert 0.86 <= covered.mean() <= 0.94
    flagged = tri["flag"] == "uncertain"
    assert 0.03 < flagged.mean() <= 0.12
    assert all("stage_disagreement" in r or "weak skull" in r for r in tri.loc[flagged, "reason"])


def test_the_conformal_factor_is_set_on_cross_fitted_uncertainties() -> None:
    """With ``groups``, each group's ratio |error| / uncertainty comes from a ridge fitted on the
    other groups; the factor is their split-conformal 90 % quantile. Thirteen signals, twelve of
    them noise, on 150 rows: the in-sample fit is optimistic, so the cross-fitted factor is wider."""
    from sklearn.linear_model import Ridge

    f, err, groups = _synthetic(150, seed=3)
    tri_in, tri_cf = Triage.fit(f, err), Triage.fit(f, err, groups=groups)
    assert tri_cf.coef == tri_in.coef and tri_cf.intercept == tri_in.intercept  # the same combiner
    Z = np.nan_to_num((f[tri_cf.features].to_numpy() - tri_cf.mean) / tri_cf.scale)
    y = np.log(err + 0.2)
    u = np.empty(len(err))
    for g in range(5):
        u[groups == g] = np.exp(Ridge(alpha=1.0).fit(Z[groups != g], y[groups != g]).predict(Z[groups == g]))
    ratio = np.sort(err / u)
    assert tri_cf.conformal_factor == pytest.approx(ratio[math.ceil((len(ratio) + 1) * 0.9) - 1])
    assert tri_cf.conformal_factor > tri_in.conformal_factor


def test_without_a_head_size_in_mm_there_is_no_uncertainty_and_no_interval() -> None:
    """No pixel size: ``log_hc_mm`` is missing, so the combiner (fitted with it) gives no
    uncertainty; such a row is `uncertain` only by the outline rule, never by an imputed size."""
    f, err, _ = _synthetic()
    tri = Triage.fit(f, err)
    rows = f.iloc[:40].copy()
    sized = tri.assess(rows, np.full(40, 200.0), np.ones(40, bool))
    rows["log_hc_mm"] = np.nan
    unsized = tri.assess(rows, np.full(40, np.nan), np.ones(40, bool))
    assert sized["uncertainty"].notna().all() and unsized["uncertainty"].isna().all() and unsized["hc_half_width_mm"].isna().all()
    weak = rows["ring_vs_outside"].to_numpy() < tri.weak_ring_below
    assert list(unsized["flag"]) == ["uncertain" if w else "ok" for w in weak]
    assert (sized["flag"] == "uncertain").sum() >= (unsized["flag"] == "uncertain").sum()


def test_fold_k_is_assessed_by_a_combiner_that_never_saw_it() -> None:
    f, err, folds = _synthetic()
    base = nested_triage(f, err, np.full(len(err), 200.0), folds, np.ones(len(err), bool))
    err2 = err.copy()
    err2[folds == 0] *= 50  # fold 0's errors change: fold 0's own assessment must not
    again = nested_triage(f, err2, np.full(len(err), 200.0), folds, np.ones(len(err), bool))
    pd.testing.assert_frame_equal(base[folds == 0], again[folds == 0])
    assert not base[folds == 1]["uncertainty"].equals(again[folds == 1]["uncertainty"])


def test_an_implausible_picture_fails_with_the_signal_named_and_the_combiner_round_trips() -> None:
    f, err, _ = _synthetic()
    f["dark_frac"] = np.random.default_rng(1).uniform(0.1, 0.6, len(f))
    comb = Triage.from_dict(Triage.fit(f, err).as_dict())
    odd = f.iloc[[0]].copy()
    odd["dark_frac"] = 0.0
    verdict = comb.assess(odd, np.array([200.0]), np.array([True])).iloc[0]
    assert verdict["flag"] == "failed"
    assert verdict["reason"].startswith("not like fetal-head ultrasound: too little black surround for an ultrasound scan sector (dark_frac 0 outside")
    weak = f.iloc[[0]].copy()
    weak["ring_vs_outside"] = comb.weak_ring_below - 0.1
    assert comb.assess(weak, np.array([200.0]), np.array([True])).iloc[0]["reason"].startswith("weak skull outline")
    assert comb.assess(f.iloc[[0]], np.array([200.0]), np.array([False])).iloc[0]["flag"] == "failed"


@pytest.mark.parametrize("hc,expect", [(50.0, None), (99.9, None), (100.0, True), (250.0, True), (360.0, True), (420.0, None), (math.nan, None)])
def test_gestational_age_only_where_hadlock_holds(hc: float, expect) -> None:
    ga, note = ga_and_note(hc)
    if expect:
        assert 14 <= ga <= 43 and note == ""
    else:
        assert math.isnan(ga) and note
        if math.isfinite(hc):
            assert f"outside Hadlock's {GA_HC_RANGE_MM[0]:.0f}-{GA_HC_RANGE_MM[1]:.0f} mm" in note


def _predict(tmp_path: Path, images: list[Path], extra: list[str]) -> pd.DataFrame:
    out = tmp_path / "preds.csv"
    args = [sys.executable, "-m", "fetalbio.cli", "predict", "--model", str(MODEL), "--images", *map(str, images), "--pixel-size", "0.15",
            "--out", str(out), "--no-progress", *extra]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return pd.read_csv(out)


def test_pictures_that_are_not_a_fetal_head_are_never_ok(tmp_path: Path) -> None:
    from fetalbio.model_file import read_model_file

    assert "triage" in read_model_file(MODEL), "the shipped model carries its triage combiner"
    paths = []
    for name, img in make_not_a_head().items():
        paths.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(paths[-1]), img)
    preds = _predict(tmp_path, paths, [])
    bad = preds[preds["flag"] == "ok"]
    assert bad.empty, bad[["image_name", "hc_mm", "uncertainty", "reason"]].to_string()
    assert (preds.loc[preds["flag"] == "failed", "hc_mm"].isna()).all()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not Path("/.ci-requires-chromium").exists(), reason="Chromium not installed (.ci/run installs it)")
def test_review_page_loads_in_a_headless_browser_with_one_card_per_image(tmp_path: Path) -> None:
    sample = sorted((REPO / "data/sample/images").iterdir())[:3]
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((540, 800), np.uint8))
    report = tmp_path / "review.html"
    preds = _predict(tmp_path, [*sample, blank], ["--report", str(report)])
    page = report.read_text()
    assert "http://" not in page and "https://" not in page  # self-contained
    # failed and uncertain cards come first
    flags = re.findall(r'data-flag="(\w+)"', page)
    order = {"failed": 0, "uncertain": 1, "ok": 2}
    assert [order[f] for f in flags] == sorted(order[f] for f in flags) and len(flags) == len(preds)
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert f'data-cards="{len(preds)}"' in dom, dom[:500]
    assert f'data-images-ok="{len(preds)}"' in dom  # every overlay decoded


def test_the_interval_factor_is_set_per_band_of_predicted_hc() -> None:
    """Errors heavier-tailed for large heads at the same typical size: one factor would
    under-cover them; the band factors cover every band close to 90 % out of fold."""
    rng = np.random.default_rng(3)
    n = 1500
    f = pd.DataFrame({c: rng.normal(size=n) for c in FEATURES})
    f["ring_vs_outside"] = rng.normal(2.0, 0.5, size=n)
    hc = rng.uniform(60.0, 340.0, n)
    f["log_hc_mm"] = np.log(hc)
    noise = np.where(hc > 250, rng.standard_t(2, n), rng.normal(size=n))  # same scale, heavier tail for large heads
    err = np.abs(noise)
    folds = rng.integers(0, 5, n)
    tri = nested_triage(f, err, hc, folds, np.ones(n, bool))
    covered = err <= tri["hc_half_width_mm"].to_numpy()
    band = np.searchsorted([100.0, 150.0, 200.0, 250.0], hc, side="right")
    per_band = [covered[band == b].mean() for b in range(5)]
    assert all(0.85 <= c <= 0.95 for c in per_band), per_band
    fitted = Triage.fit(f, err)
    assert fitted.band_factors[-1] > fitted.band_factors[0]  # the heavy-tailed band gets the wider interval
    old = {k: v for k, v in fitted.as_dict().items() if k not in ("band_edges_mm", "band_factors")}  # a model file from before the bands
    again = Triage.from_dict(old)
    assert again.band_factors == [] and np.all(again.factor(np.array([80.0, 300.0])) == fitted.conformal_factor)
