"""``corrections-to-source``: a reviewed corrections.csv becomes a data source that ingest reads
(the browser end of it: tests/reporting/test_review_browser.py)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fetalbio import POINT_COLUMNS
from fetalbio.cli import app
from fetalbio.config import DataConfig, LabelsConfig
from fetalbio.data.corrections import CORRECTED_POINT_COLUMNS, ELLIPSE_COLUMNS, CorrectionsError, corrections_to_source
from fetalbio.data.ingest import ingest
from fetalbio.data.labels import audit
from fetalbio.data.synthetic import make_challenge_dataset
from fetalbio.geometry.ellipse import ellipse_from_points
from fetalbio.reporting.review import page_data


def _corrections_row(name: str, pts: np.ndarray | None, review: str, note: str = "", corrected: np.ndarray | None = None, ellipse: bool = True) -> dict:
    """A row as the review page exports it: predict's columns (``pts``), then the review's."""
    nan8 = [math.nan] * 8
    row = {"image_name": name, **dict(zip(POINT_COLUMNS, nan8 if pts is None else pts.reshape(-1))), "hc_mm": math.nan,
           "flag": "ok" if pts is not None else "failed", "reason": "", "pixel_size_mm": 0.15, "review": review, "note": note, "run_id": "abc"}
    shown = corrected if corrected is not None else (pts if review in ("accepted", "corrected") else None)
    row.update(dict(zip(CORRECTED_POINT_COLUMNS, nan8 if shown is None else shown.reshape(-1))))
    e = ellipse_from_points(shown) if shown is not None and ellipse else None
    row.update(dict(zip(ELLIPSE_COLUMNS, [math.nan] * 5 if e is None else [e.cx, e.cy, e.a, e.b, math.degrees(e.theta)])))
    return row


@pytest.fixture
def reviewed(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """Seven synthetic images reviewed every way (see the names)."""
    root = tmp_path / "synth"
    lm = make_challenge_dataset(root, n_subjects=7, images_per_subject=(1,), seed=5).set_index("image_name")
    pts = {n: lm.loc[n, list(POINT_COLUMNS)].to_numpy(float).reshape(4, 2) for n in lm.index}
    n = sorted(pts)
    moved = pts[n[1]].copy()
    moved[0] += (-6.0, 2.5)  # a dragged caliper
    outside = pts[n[5]].copy()
    outside[1] = (250.0, 10.0)  # beyond the 200 px wide image
    rows = [_corrections_row(n[0], pts[n[0]], "accepted"),
            _corrections_row(n[1], pts[n[1]], "corrected", corrected=moved),
            _corrections_row(n[2], pts[n[2]], "rejected", note="twins, wrong head"),
            _corrections_row(n[3], pts[n[3]], ""),
            {**_corrections_row(n[4], pts[n[4]], "accepted", ellipse=False), **dict.fromkeys(CORRECTED_POINT_COLUMNS, math.nan)},
            _corrections_row(n[5], pts[n[5]], "corrected", corrected=outside),
            _corrections_row(n[6], None, "accepted")]
    csv = tmp_path / "corrections.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, root / "images", pd.DataFrame(rows).set_index("image_name")


def test_the_page_exports_every_column_the_source_needs() -> None:
    data = page_data([{"image_name": "a.png", "pixel_size_mm": 0.1}], ["image_name", "pixel_size_mm"])
    assert {"review", "note", *CORRECTED_POINT_COLUMNS, *ELLIPSE_COLUMNS} <= set(data["correction_columns"])


def test_corrections_become_a_source_ingest_reads(reviewed, tmp_path: Path) -> None:
    csv, images, rows = reviewed
    names = list(rows.index)
    out = tmp_path / "reviewed"
    counts = corrections_to_source(csv, images, out)
    assert counts == {"rows": 7, "labels": 3, "accepted": 2, "corrected": 1, "rejected": 1, "points_outside_image": 1,
                      "accepted_without_points": 1, "not_reviewed": 1}
    lm = pd.read_csv(out / "landmarks.csv").set_index("image_name")
    assert list(lm.index) == [names[0], names[1], names[4]]
    assert np.allclose(lm.loc[names[1], list(POINT_COLUMNS)], rows.loc[names[1], CORRECTED_POINT_COLUMNS], atol=1e-3)
    assert np.allclose(lm.loc[names[4], list(POINT_COLUMNS)], rows.loc[names[4], list(POINT_COLUMNS)], atol=1e-3)  # predict's points
    ref = pd.read_csv(out / "hc18_reference.csv")
    assert ref["hc_mm"].isna().all() and (ref["pixel_size_mm"] == 0.15).all()
    rej = pd.read_csv(out / "rejected.csv", keep_default_na=False).set_index("image_name")
    assert rej.loc[names[2], "reason"] == "twins, wrong head" and "outside the 200x140 image" in rej.loc[names[5], "reason"]
    mask = cv2.imread(str(out / "masks" / names[1]), cv2.IMREAD_GRAYSCALE)
    r = rows.loc[names[1]]
    assert set(np.unique(mask)) == {0, 255} and mask.shape == (140, 200)
    assert (mask > 0).sum() == pytest.approx(math.pi * r["ellipse_a_px"] * r["ellipse_b_px"], rel=0.03)

    result = ingest(DataConfig(root=str(out)), tmp_path / "ingested")
    assert set(result.table["image_name"]) == {names[0], names[1], names[4]} and result.table["mask_path"].all()
    reasons = result.dropped.set_index("image_name")["reason"]
    assert "twins, wrong head" in reasons[names[2]] and "not usable as a landmark label" in reasons[names[5]]
    clean = audit(result.table, tmp_path / "ingested", LabelsConfig(), seed=0).clean.set_index("image_name")
    got = clean.loc[names[1], list(POINT_COLUMNS)].to_numpy(float).reshape(4, 2)
    want = rows.loc[names[1], CORRECTED_POINT_COLUMNS].to_numpy(float).reshape(4, 2)
    assert sorted(map(tuple, got.round(2))) == sorted(map(tuple, want.round(2)))  # canonical order aside, the corrected points


def test_refusals_name_the_problem(reviewed, tmp_path: Path) -> None:
    csv, images, rows = reviewed
    out = tmp_path / "reviewed"
    corrections_to_source(csv, images, out)
    with pytest.raises(CorrectionsError, match="exists and is not empty"):
        corrections_to_source(csv, images, out)
    assert corrections_to_source(csv, images, out, overwrite=True)["labels"] == 3
    bad = tmp_path / "bad.csv"
    rows.assign(review=["accepted", "ok", "", "", "", "", ""]).to_csv(bad)
    with pytest.raises(CorrectionsError, match=r"line 3, column review \[.*\]: 'ok' is not one of accepted, corrected, rejected"):
        corrections_to_source(bad, images, tmp_path / "o1")
    rows.drop(columns=["note"]).to_csv(bad)
    with pytest.raises(CorrectionsError, match="missing columns note"):
        corrections_to_source(bad, images, tmp_path / "o2")
    with pytest.raises(CorrectionsError, match="not found in"):
        corrections_to_source(csv, tmp_path / "elsewhere", tmp_path / "o3")


def test_command_says_what_it_wrote(reviewed, tmp_path: Path) -> None:
    csv, images, _ = reviewed
    runner = CliRunner()
    res = runner.invoke(app, ["corrections-to-source", str(csv), "--images", str(images), "--out", str(tmp_path / "src")])
    assert res.exit_code == 0, res.output
    assert "3 labels (2 accepted, 1 corrected), 1 rejected, 1 not reviewed" in res.output
    assert "1 reviewed image(s) have a caliper outside the image" in res.output and "data.sources" in res.output
    res = runner.invoke(app, ["corrections-to-source", str(csv), "--images", str(images), "--out", str(tmp_path / "src")])
    assert res.exit_code == 1 and "error:" in res.output and "--overwrite" in res.output
