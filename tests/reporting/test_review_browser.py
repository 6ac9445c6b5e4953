"""The review page in a real browser (headless Chromium from the system packages, driven by
Playwright): predict on sample images -> the page -> correct by dragging (the mm values follow
the geometry) -> accept and reject by keyboard -> reload (the state is kept) -> undo -> export
corrections.csv -> ``corrections-to-source`` -> ingest -> the label audit: the corrected row is
in the cleaned labels with the corrected points, the rejected one is a recorded drop."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fetalbio import POINT_COLUMNS
from fetalbio.config import DataConfig, LabelsConfig
from fetalbio.metrics.biometry import ramanujan_hc

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "pretrained" / "fetalbio-hc18.pt"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
NOTE = "not a biometry plane, cerebellum visible"


def sample_images(n: int) -> tuple[list[Path], Path]:
    """The first ``n`` sample images of the landmark source (the largest ``images/`` folder under
    data/sample) and its reference CSV (pixel sizes)."""
    found = [p for p in (REPO / "data" / "sample").rglob("*_HC.png") if p.parent.name == "images"]
    folders = sorted({p.parent for p in found}, key=lambda d: (-sum(p.parent == d for p in found), str(d)))
    return sorted(p for p in found if p.parent == folders[0])[:n], folders[0].parent / "hc18_reference.csv"


def _run(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "fetalbio.cli", *args], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _points(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(4, 2)


def _same_points(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """The same four points, whatever their order (the audit puts them in canonical order)."""
    def ordered(p: np.ndarray) -> np.ndarray:
        return p[np.lexsort((p[:, 1], p[:, 0]))]

    return bool(np.allclose(ordered(a), ordered(b), atol=tol))


def _drag(page, selector: str, dx: int, dy: int) -> None:
    box = page.locator(selector).bounding_box()
    x, y = round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] / 2)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=3)
    page.mouse.move(x + dx, y + dy, steps=3)
    page.mouse.up()


def _state_points(page, i: int) -> np.ndarray:
    name = page.locator(f"#card-{i}").get_attribute("data-name")
    return _points(page.evaluate("n => window.fetalbioReview.state().items[n].pts", name))


def _image_scale(page, i: int) -> np.ndarray:
    """Image pixels per CSS pixel of card ``i``'s drawing (x, y)."""
    return np.array(page.evaluate("s => { const m = document.querySelector(s).getScreenCTM(); return [1 / m.a, 1 / m.d]; }", f"#card-{i} svg.layer g.img"))


def _correct_by_dragging(page, i: int, row: pd.Series) -> np.ndarray:
    """Drag card ``i``'s OFD axis handle, then one BPD caliper; each time the page's HC is the
    perimeter of what was dragged. Returns the corrected points."""
    page.keyboard.press("e")
    assert "editing" in page.locator(f"#card-{i}").get_attribute("class")
    px = float(row["pixel_size_mm"])
    pts = _points(row[list(POINT_COLUMNS)])
    a, b = np.linalg.norm(pts[1] - pts[0]) / 2, np.linalg.norm(pts[3] - pts[2]) / 2
    u = (pts[1] - pts[0]) / (2 * a)
    move = np.round(40 * u).astype(int)  # outward along the OFD, in CSS pixels
    _drag(page, f'#card-{i} [data-h="a"]', int(move[0]), int(move[1]))  # the ellipse's OFD axis: a grows by the drag along it
    a_new = a + float(np.dot(move * _image_scale(page, i), u))
    hc_page = float(page.locator(f"#card-{i}").get_attribute("data-hc-mm"))
    assert hc_page == pytest.approx(float(ramanujan_hc(2 * a_new * px, 2 * b * px)), rel=1e-6)
    assert abs(hc_page - float(row["hc_mm"])) > 1.0  # a visible change
    before = _state_points(page, i)
    _drag(page, f'#card-{i} [data-h="p2"]', -15, 12)  # one BPD caliper moves by the drag
    expect = before.copy()
    expect[2] += np.array([-15, 12]) * _image_scale(page, i)
    got = _state_points(page, i)
    assert np.allclose(got, expect, atol=1e-6)
    hc_expect = float(ramanujan_hc(np.linalg.norm(expect[1] - expect[0]) * px, np.linalg.norm(expect[3] - expect[2]) * px))
    assert float(page.locator(f"#card-{i}").get_attribute("data-hc-mm")) == pytest.approx(hc_expect, rel=1e-6)
    assert f"HC {hc_expect:.1f} mm" in page.locator(f"#card-{i} .values").inner_text()
    return got


def _review(page, preds: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Card 0 accepted by keyboard, card 1 corrected by dragging and accepted, card 2 rejected
    with a note; returns the card names and card 1's corrected points."""
    names = [page.locator(f"#card-{i}").get_attribute("data-name") for i in range(3)]
    page.keyboard.press("f")  # the full image, not the thumbnail
    assert page.locator("#lightbox").is_visible()
    assert page.evaluate("document.querySelector('#lightbox img').naturalWidth") == int(page.locator("#card-0 .view").get_attribute("data-w"))
    page.keyboard.press("Escape")
    assert not page.locator("#lightbox").is_visible()
    page.keyboard.press("a")  # accept card 0, on to card 1
    corrected = _correct_by_dragging(page, 1, preds.loc[names[1]])
    page.keyboard.press("a")  # accept the corrected card 1: corrected; on to card 2
    page.keyboard.press("n")
    page.keyboard.type(NOTE)
    page.keyboard.press("Escape")
    page.keyboard.press("r")  # reject card 2
    assert [page.locator(f"#card-{i}").get_attribute("data-review") for i in range(3)] == ["accepted", "corrected", "rejected"]
    return names, corrected


def _in_browser(report: Path, preds: pd.DataFrame, out_csv: Path) -> tuple[list[str], np.ndarray]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"request {r.url}") if not r.url.startswith(("file:", "data:", "blob:")) else None)
            page.goto(report.as_uri())
            names, corrected = _review(page, preds)
            hc_before = page.locator("#card-1").get_attribute("data-hc-mm")
            page.reload()
            assert [page.locator(f"#card-{i}").get_attribute("data-review") for i in range(3)] == ["accepted", "corrected", "rejected"]
            assert page.locator("#card-1").get_attribute("data-hc-mm") == hc_before
            assert page.locator("#card-2 .note").input_value() == NOTE
            assert "current" in page.locator("#card-2").get_attribute("class")
            page.keyboard.press("a")  # accept card 2 ...
            assert page.locator("#card-2").get_attribute("data-review") == "accepted"
            page.keyboard.press("u")  # ... and undo it
            assert page.locator("#card-2").get_attribute("data-review") == "rejected"
            with page.expect_download() as dl:
                page.click("#export")
            assert dl.value.suggested_filename == "corrections.csv"
            dl.value.save_as(out_csv)
            assert not errors, errors
        finally:
            browser.close()
    return names, corrected


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's chromium package)")
def test_review_in_the_browser_becomes_labels(tmp_path: Path) -> None:
    from fetalbio.data.ingest import ingest
    from fetalbio.data.labels import audit

    images, spacing = sample_images(3)
    folder = tmp_path / "scans"
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder / p.name)
    report, preds_csv = tmp_path / "review.html", tmp_path / "preds.csv"
    _run(["predict", "--model", str(MODEL), "--images", str(folder), "--spacing", str(spacing), "--out", str(preds_csv),
          "--report", str(report), "--no-progress"])
    preds = pd.read_csv(preds_csv).set_index("image_name")
    assert (preds["flag"] != "failed").all()
    corrections = tmp_path / "corrections.csv"
    names, corrected = _in_browser(report, preds, corrections)

    exported = pd.read_csv(corrections, keep_default_na=False).set_index("image_name")
    assert list(exported["review"][names]) == ["accepted", "corrected", "rejected"] and exported.loc[names[2], "note"] == NOTE
    cols = [f"corrected_{c}" for c in POINT_COLUMNS]
    assert np.allclose(_points(exported.loc[names[1], cols].astype(float)), corrected, atol=1e-3)
    assert np.allclose(_points(exported.loc[names[0], cols].astype(float)), _points(preds.loc[names[0], list(POINT_COLUMNS)]), atol=1e-3)

    source = tmp_path / "reviewed"
    _run(["corrections-to-source", str(corrections), "--images", str(folder), "--out", str(source)])
    result = ingest(DataConfig(root=str(source)), tmp_path / "ingested")
    clean = audit(result.table, tmp_path / "ingested", LabelsConfig(), seed=0).clean.set_index("image_name")
    assert set(clean.index) == {names[0], names[1]}
    assert _same_points(_points(clean.loc[names[1], list(POINT_COLUMNS)]), corrected, tol=2e-3)
    assert _same_points(_points(clean.loc[names[0], list(POINT_COLUMNS)]), _points(preds.loc[names[0], list(POINT_COLUMNS)]), tol=2e-3)
    assert clean.loc[names[1], "mask_path"]  # the corrected ellipse, filled
    drop = result.dropped.set_index("image_name").loc[names[2]]
    assert NOTE in drop["reason"]
