"""The committed model (pretrained/fetalbio-hc18.pt) loads safely and measures sample heads."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from stage_cli import app  # the stage scripts and the fetalbio command in one app
from typer.testing import CliRunner

from fetalbio.model_file import load_model

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "pretrained" / "fetalbio-hc18.pt"
SAMPLE = REPO / "data" / "sample"
NAMES = ["000_HC.png", "006_HC.png", "010_2HC.png", "092_HC.png"]


def test_pretrained_model_is_self_describing() -> None:
    m = load_model(MODEL)  # weights_only=True inside
    card = (REPO / "pretrained" / "MODEL_CARD.md").read_text(encoding="utf-8")
    final = json.loads((REPO / "results" / "full-cpu-whole" / "metrics" / "final.json").read_text(encoding="utf-8"))
    assert m.method == final["variant"] and f"`{m.method}`" in card and [st.role for st in m.stages] == ["coarse", "refine"]  # the two-stage method
    assert m.input_size == tuple(final["input_size"])
    assert f"{final['cross_validated']['HC MAE mm']:.2f}" in card  # the card quotes the pipeline's number
    assert "Not a medical device" in card


def test_pretrained_model_measures_sample_heads(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    images = [str(SAMPLE / "images" / n) for n in NAMES]
    res = CliRunner().invoke(app, ["predict", "--no-progress", "--model", str(MODEL), "--images", *images,
                                   "--spacing", str(SAMPLE / "hc18_reference.csv"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    pred = pd.read_csv(out).set_index("image_name")
    ref = pd.read_csv(SAMPLE / "hc18_reference.csv").set_index("image_name")
    assert list(pred.index) == NAMES and (pred["flag"] != "failed").all()
    for n in NAMES:  # a loose sanity bound (these images were among its training rows): 10 % or 6 mm
        assert abs(pred.loc[n, "hc_mm"] - ref.loc[n, "hc_mm"]) <= max(0.1 * ref.loc[n, "hc_mm"], 6.0), n
