"""The review page's content without a browser (the browser workflow: test_review_browser.py) and
the burned-in overlay of ``predict --overlays``."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest

from fetalbio import POINT_COLUMNS
from fetalbio.inference.predictor import GA_HC_RANGE_MM, Measured, draw_overlay, measurement_row, overlay_lines
from fetalbio.metrics.biometry import HADLOCK_1984_HC_CM, ga_weeks_hadlock
from fetalbio.reporting.review import CardImage, pixel_text, plain_reason, review_html, run_id
from fetalbio.tasks.base import ImagePrediction

PTS = np.array([[100.0, 150.0], [300.0, 150.0], [200.0, 80.0], [200.0, 220.0]])


def _row(name: str = "a.png", flag: str = "ok", reason: str = "", hc: float = 150.0, ga: float = math.nan, **extra) -> dict:
    row = {"image_name": name, **dict(zip(POINT_COLUMNS, PTS.reshape(-1))), "bpd_mm": 40.0, "ofd_mm": 55.0, "hc_mm": hc,
           "hc_mm_low": hc - 5, "hc_mm_high": hc + 5, "uncertainty": 2.0, "ga_weeks": ga,
           "ga_note": "" if math.isfinite(ga) else f"HC {hc:.0f} mm outside Hadlock's 100-360 mm", "flag": flag, "reason": reason,
           "pixel_size_mm": 0.1}
    if flag == "failed":
        row.update({c: math.nan for c in (*POINT_COLUMNS, "bpd_mm", "ofd_mm", "hc_mm", "hc_mm_low", "hc_mm_high", "uncertainty")})
    return {**row, **extra}


def _image(w: int = 400, h: int = 300, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)  # noise: the hardest case for JPEG


@pytest.mark.parametrize("reason,words", [
    ("weak skull outline: ring_vs_outside 0.022 < 0.76", "skull outline is faint"),
    ("not like fetal-head ultrasound: bright_frac 0.0315 outside [-0.00255, 0.0281]", "the share of near-white pixels is too high"),
    ("not like fetal-head ultrasound: mostly black: too little image content (dark_frac 1 outside [0.0238, 0.661])", "(mostly black: too little image content)"),
    ("expected |HC error| 3.1 mm > 2.5 mm, mostly from stage_disagreement", "two stages disagree on the head's size"),
    ("2 point(s) outside the 800x540 image", "cut off by the image border"),
    ("degenerate: diameter 1.2 px < 4.0 px", "collapsed"),
    ("unreadable: x.png: empty file (0 bytes)", "could not be read"),
    ("poor_fit", "not elliptical enough"),
    ("refined fit failed (too_small)", "too small to be a head"),
])
def test_reasons_are_sentences(reason: str, words: str) -> None:
    text = plain_reason(reason)
    assert words in text and text.endswith(".") and "ring_vs_outside" not in text and "bright_frac" not in text


def test_page_is_self_contained_with_readable_cards() -> None:
    cards = [(_row("ok.png", ga=20.1, hc=170.0), _image()),
             (_row("weak.png", "uncertain", "weak skull outline: ring_vs_outside 0.022 < 0.76", hc=60.0), _image(seed=1)),
             (_row("bad.png", "failed", "not like fetal-head ultrasound: bright_frac 0.0315 outside [-0.00255, 0.0281]"), _image(seed=2)),
             (_row("gone.png", "failed", "unreadable: gone.png: file not found"), None)]
    page = review_html(cards)
    assert not re.search(r"https?://|//cdn|<link|src=\"(?!data:)", page)  # nothing fetched
    assert re.findall(r'data-flag="(\w+)"', page) == ["failed", "failed", "uncertain", "ok"]
    assert "90 % interval 165.0–175.0 mm" in page and "GA 20.1 weeks (Hadlock 1984, from HC)" in page
    assert "no GA: HC 60 mm is outside the 100–360 mm range of Hadlock&#x27;s 1984 chart" in page
    visible = re.sub(r"<script.*?</script>|data:[^\"]+", "", page, flags=re.S)
    assert not re.search(r"\bnan\b", visible, re.I)
    assert "The skull outline is faint" in page and "<details><summary>details</summary><code>weak skull outline: ring_vs_outside 0.022 &lt; 0.76" in page
    assert page.count('<svg class="layer" viewBox=') == 3 and "unreadable image" in page  # + the lightbox's
    assert "head ellipse (HC)" in page and "OFD" in page and "BPD" in page  # the legend
    data = json.loads(re.search(r'<script type="application/json" id="fb-data">(.*?)</script>', page, re.S).group(1))
    assert data["hadlock_hc_cm"] == list(HADLOCK_1984_HC_CM) and data["ga_hc_range_mm"] == list(GA_HC_RANGE_MM)
    assert [r["image_name"] for r in data["rows"]] == ["bad.png", "gone.png", "weak.png", "ok.png"]
    assert data["rows"][0]["ofd_1_x"] is None  # a failed row: no ellipse to draw
    assert data["run_id"] == run_id([dict(r) for r, _ in cards]) != run_id([_row("ok.png", ga=20.2)])
    # the page's Hadlock constants give the Python's GA
    c0, c1, c3 = data["hadlock_hc_cm"]
    assert c0 + c1 * 17.0 + c3 * 17.0**3 == pytest.approx(float(ga_weeks_hadlock(170.0)))


def test_images_are_jpegs_within_200_kb_each() -> None:
    for size in [(800, 540), (2400, 1800)]:
        im = CardImage.of(_image(*size))
        thumb, full = (base64.b64decode(u.split(",", 1)[1]) for u in (im.thumb, im.full))
        assert im.thumb.startswith("data:image/jpeg;base64,") and thumb[:2] == b"\xff\xd8"
        assert len(thumb) + len(full) <= 200_000
        assert (im.width, im.height) == size


def test_pixel_size_and_its_source_on_the_card() -> None:
    assert pixel_text(_row(pixel_size_source="csv")) == "pixel size 0.1 mm (from the --spacing CSV)"
    assert pixel_text(_row()) == "pixel size 0.1 mm"  # an older predict: no source column
    assert pixel_text(_row(pixel_size_mm=math.nan, pixel_size_source="none", pixel_size_note="no --spacing row")) == \
        "no pixel size: values in pixels only (no --spacing row)"


def _measured(flag: str, reason: str = "", px: float = 0.1) -> Measured:
    return Measured("a.png", np.zeros((300, 400), np.uint8), ImagePrediction(PTS.copy(), np.full(4, 1.0)), px, flag, reason)


def test_a_failed_row_carries_no_points_and_its_overlay_draws_nothing() -> None:
    m = _measured("failed", "not like fetal-head ultrasound: bright_frac 0.0315 outside [-0.00255, 0.0281]")
    row = measurement_row(m)
    assert all(math.isnan(row[c]) for c in POINT_COLUMNS) and math.isnan(row["hc_mm"])
    ov = draw_overlay(m.image, m.prediction, row)
    text_rows = sum(1 for _ in overlay_lines(m.prediction, row)) * 60
    assert not ov[text_rows:].any()  # below the text: the black image, no ellipse, no diameters
    assert not any("no pixel size" in t for t in overlay_lines(m.prediction, row))


def test_overlay_text_never_says_nan_and_names_the_chart() -> None:
    ok = _measured("ok")
    row = measurement_row(ok)
    assert math.isnan(row["ga_weeks"])  # HC ~ 54 mm: outside Hadlock's range
    lines = overlay_lines(ok.prediction, row)
    assert not any("nan" in t.lower() for t in lines) and any(t.endswith("no GA") for t in lines)
    big = Measured("b.png", ok.image, ImagePrediction(PTS * 1.0, np.full(4, 1.0)), 0.35, "ok", "")
    lines = overlay_lines(big.prediction, measurement_row(big))
    assert any("wk (Hadlock)" in t for t in lines)
    no_px = measurement_row(_measured("ok", px=math.nan))
    assert any("(no pixel size)" in t for t in overlay_lines(ok.prediction, no_px))
