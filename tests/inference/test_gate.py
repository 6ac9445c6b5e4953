"""The plausibility gate refuses no real head: fitted on the heads of some subjects of both
sample sources (early heads with landmarks, later-gestation heads with masks only), it lets
every held-out real head through when the head is measured where the sonographer drew it, and
still refuses pictures that are not fetal-head ultrasound."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fetalbio.geometry.ellipse import fit_ellipse
from fetalbio.geometry.masks import boundary_points
from fetalbio.io import read_gray8
from fetalbio.triage import PLAUSIBILITY, Triage, triage_features

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def _sample_signals() -> pd.DataFrame:
    """Signals of every sample image with its reference ellipse as the prediction."""
    rows = []
    for src, folder in (("fetal-head", SAMPLE), ("hc18-late", SAMPLE / "hc18-late")):
        ref = pd.read_csv(folder / "hc18_reference.csv")
        for name, hc in zip(ref["image_name"], ref["hc_mm"]):
            img = read_gray8(folder / "images" / name).pixels
            mask = read_gray8(folder / "masks" / name).pixels > 127
            e = fit_ellipse(boundary_points(mask))
            rows.append({"image_name": name, "source": src, "subject": name.split("_")[0],
                         **triage_features(img, e, None, 1.0, 2.0, float(hc))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def signals() -> pd.DataFrame:
    return _sample_signals()


def test_no_real_head_of_either_source_is_refused_out_of_fold(signals: pd.DataFrame) -> None:
    assert set(signals["source"]) == {"fetal-head", "hc18-late"}
    subjects = sorted(signals["subject"].unique())
    fold = signals["subject"].map({s: i % 4 for i, s in enumerate(subjects)}).to_numpy()  # 4 subject-grouped folds
    err = np.random.default_rng(0).gamma(2.0, 0.8, len(signals))
    refused = []
    for k in range(4):
        gate = Triage.fit(signals[fold != k].reset_index(drop=True), err[fold != k])
        for _, row in signals[fold == k].iterrows():
            if why := gate.implausible(row):
                refused.append((row["image_name"], why))
    assert refused == []


def test_pictures_that_are_not_ultrasound_are_refused_with_the_reason_in_words(signals: pd.DataFrame) -> None:
    gate = Triage.fit(signals, np.full(len(signals), 1.5))
    assert set(gate.ranges) == set(PLAUSIBILITY)
    rng = np.random.default_rng(1)
    photo = np.clip(rng.normal(140, 40, (540, 800)), 0, 255).astype(np.uint8)  # no black scan-sector surround
    white = np.full((540, 800), 255, np.uint8)
    cv2.ellipse(white, ((400, 270), (300, 220), 0), 0, 3)  # a drawn outline on a white page
    for img in (photo, white):
        f = pd.Series(triage_features(img, fit_ellipse(boundary_points(np.pad(np.ones((220, 300), bool), ((160, 160), (250, 250))))), None, 1.0, 2.0, 200.0))
        why = gate.implausible(f)
        assert why.startswith("not like fetal-head ultrasound: ") and "(" in why, why
        words = why.split(": ", 1)[1].split(" (")[0]
        assert words and not any(s in words for s in PLAUSIBILITY)  # the words are words, the signal's name follows in brackets
    assert math.isfinite(gate.ranges["dark_frac"][0]) and gate.ranges["dark_frac"][0] > 0  # a picture with no dark surround stays out
