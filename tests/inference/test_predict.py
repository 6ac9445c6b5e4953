"""``fetalbio predict`` and the model file through the real CLI (tiny untrained networks)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fetalbio.cli import app
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.inference.predictor import PREDICT_COLUMNS
from fetalbio.metrics.biometry import ga_weeks_hadlock, ramanujan_hc
from fetalbio.model_file import StageWeights, load_model, model_payload, save_model
from fetalbio.tasks import build_task

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
runner = CliRunner()
TCFG = TrainConfig(input_width=64, input_height=64, device="cpu")
NAMES = ["000_HC.png", "006_HC.png", "010_2HC.png"]


def _model_file(path: Path, variant: str, arch: dict, threshold: float | None = None, calibration: dict | None = None) -> Path:
    torch.manual_seed(0)
    vcfg = VariantConfig(arch=arch)
    task = build_task(variant, vcfg, TCFG)
    save_model(path, model_payload(variant, [StageWeights("coarse", variant, vcfg, TCFG, [task.model.state_dict()], calibration or {})], {"test": True}, threshold, 0.95))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("predict")
    imgs = d / "images"
    imgs.mkdir()
    for n in NAMES:
        shutil.copy(SAMPLE / "images" / n, imgs / n)
    return {
        "dir": d,
        "images": imgs,
        "landmark": _model_file(d / "lm.pt", "hm_unet", {"base_width": 4, "depth": 2}),
        "seg": _model_file(d / "seg.pt", "seg_unet", {"base_width": 4, "depth": 2}, calibration={"edge_offset_px": 1.4, "edge_offset_n": 3}),
    }


def _run(args: list[str], code: int = 0):
    res = runner.invoke(app, ["predict", "--no-progress", *args])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res


def test_csv_schema_mm_columns_and_overlays(files, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    _run(["--model", str(files["landmark"]), "--images", str(files["images"]), "--spacing", str(SAMPLE / "hc18_reference.csv"),
          "--out", str(out), "--overlays", str(tmp_path / "ov")])
    df = pd.read_csv(out)
    assert list(df.columns) == PREDICT_COLUMNS
    assert list(df["image_name"]) == NAMES and set(df["flag"]) <= {"ok", "uncertain", "failed"}
    ok = df[df["flag"] != "failed"]
    assert len(ok) == 3
    ref = pd.read_csv(SAMPLE / "hc18_reference.csv").set_index("image_name")
    for r in ok.itertuples(index=False):
        px = ref.loc[r.image_name, "pixel_size_mm"]
        assert r.pixel_size_mm == pytest.approx(px)
        pts = np.array([[r.ofd_1_x, r.ofd_1_y], [r.ofd_2_x, r.ofd_2_y], [r.bpd_1_x, r.bpd_1_y], [r.bpd_2_x, r.bpd_2_y]])
        ofd, bpd = np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[3] - pts[2])
        assert ofd >= bpd - 1e-6  # OFD = the longer diameter
        assert r.ofd_mm == pytest.approx(ofd * px, rel=1e-4) and r.bpd_mm == pytest.approx(bpd * px, rel=1e-4)
        assert r.hc_mm == pytest.approx(float(ramanujan_hc(r.ofd_mm, r.bpd_mm)), rel=1e-4)
        if 100.0 <= r.hc_mm <= 360.0:  # Hadlock's range; outside it no GA, and a note why
            assert r.ga_weeks == pytest.approx(float(ga_weeks_hadlock(r.hc_mm)), rel=1e-4)
        else:
            assert math.isnan(r.ga_weeks) and "outside Hadlock" in r.ga_note
    for n in NAMES:
        ov = cv2.imread(str(tmp_path / "ov" / n))
        src = cv2.imread(str(files["images"] / n), cv2.IMREAD_GRAYSCALE)
        assert ov is not None and ov.shape[:2] == src.shape and ov.ndim == 3


def test_pixel_size_option_and_images_without_spacing(files, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    files_args = [str(files["images"] / n) for n in NAMES]
    _run(["--model", str(files["landmark"]), "--images", files_args[0], *files_args[1:], "--pixel-size", "0.1", "--out", str(out)])
    df = pd.read_csv(out)
    assert list(df["image_name"]) == NAMES and (df["pixel_size_mm"] == 0.1).all()
    spacing = tmp_path / "spacing.csv"
    spacing.write_text("\ufeffimage_name; pixel_size_mm\n000_HC.png; 0.2\n", encoding="utf-8")
    _run(["--model", str(files["landmark"]), "--images", str(files["images"]), "--spacing", str(spacing), "--out", str(out)])
    df = pd.read_csv(out).set_index("image_name")
    assert df.loc["000_HC.png", "pixel_size_mm"] == 0.2 and np.isfinite(df.loc["000_HC.png", "hc_mm"])
    assert df.loc[["006_HC.png", "010_2HC.png"], ["bpd_mm", "ofd_mm", "hc_mm", "ga_weeks"]].isna().all().all()
    assert df.loc[["006_HC.png", "010_2HC.png"], "ofd_1_x"].notna().all()  # pixels are still measured


def test_corrupt_and_empty_images_are_failed_rows_not_a_crash(files, tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    shutil.copy(files["images"] / NAMES[0], d / NAMES[0])
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (d / "empty.png").write_bytes(b"")
    out = tmp_path / "p.csv"
    res = _run(["--model", str(files["landmark"]), "--images", str(d), "--out", str(out), "--pixel-size", "0.1"])
    df = pd.read_csv(out).set_index("image_name")
    assert len(df) == 3
    assert df.loc["corrupt.png", "flag"] == "failed" and "not a decodable image" in df.loc["corrupt.png", "reason"]
    assert df.loc["empty.png", "flag"] == "failed" and "empty file" in df.loc["empty.png", "reason"]
    assert df.loc[NAMES[0], "flag"] != "failed"
    assert "warning: corrupt.png: failed" in res.output and "2 failed" in res.output


def test_segmentation_model_writes_a_mask_per_image(files, tmp_path: Path) -> None:
    _run(["--model", str(files["seg"]), "--images", str(files["images"]), "--out", str(tmp_path / "p.csv"), "--masks", str(tmp_path / "m")])
    for n in NAMES:
        m = cv2.imread(str(tmp_path / "m" / n), cv2.IMREAD_GRAYSCALE)
        assert m is not None and set(np.unique(m)) <= {0, 255}
    assert load_model(files["seg"]).tasks[0].edge_offset_px == 1.4  # calibration travels in the file


def test_missing_model_and_bad_arguments_give_clear_errors(files, tmp_path: Path) -> None:
    res = _run(["--model", str(tmp_path / "nope.pt"), "--images", str(files["images"]), "--out", str(tmp_path / "p.csv")], code=1)
    assert "model file not found" in res.output
    res = _run(["--model", str(files["landmark"]), "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.csv")], code=1)
    assert "no such file or folder" in res.output
    res = _run(["--model", str(files["landmark"]), "--images", str(files["images"]), "--out", str(tmp_path / "p.csv"), "--pixel-size", "-1"], code=1)
    assert "--pixel-size" in res.output


class _NotWeights:
    pass


def test_files_that_are_not_model_files_are_refused(files, tmp_path: Path) -> None:
    plain = tmp_path / "state_dict.pt"
    torch.save(build_task("hm_unet", VariantConfig(arch={"base_width": 4, "depth": 2}), TCFG).model.state_dict(), plain)
    res = _run(["--model", str(plain), "--images", str(files["images"]), "--out", str(tmp_path / "p.csv")], code=1)
    assert "not a fetalbio model file" in res.output
    pickled = tmp_path / "object.pt"
    torch.save({"format": "fetalbio-model", "payload": _NotWeights()}, pickled)
    res = _run(["--model", str(pickled), "--images", str(files["images"]), "--out", str(tmp_path / "p.csv")], code=1)
    assert "not a loadable fetalbio model file" in res.output  # weights_only=True refused the object


def test_model_file_round_trip_gives_the_same_outputs(files) -> None:
    torch.manual_seed(0)
    task = build_task("hm_unet", VariantConfig(arch={"base_width": 4, "depth": 2}), TCFG)
    loaded = load_model(files["landmark"])
    x = torch.randn(2, 1, 64, 64)
    task.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.tasks[0].model(x), task.model(x), rtol=0, atol=0)
    assert loaded.input_size == (64, 64) and loaded.variant == "hm_unet"


def test_ga_is_hadlock_and_monotone_in_hc() -> None:
    hc = np.linspace(50, 380, 200)
    ga = ga_weeks_hadlock(hc)
    assert np.all(np.diff(ga) > 0)
    assert float(ga_weeks_hadlock(175.0)) == pytest.approx(8.96 + 0.540 * 17.5 + 0.0003 * 17.5**3)
    assert float(ga_weeks_hadlock(346.0)) == pytest.approx(40.07, abs=0.01)  # Hadlock's table: 34.6 cm at 40 weeks
    assert math.isnan(float(ga_weeks_hadlock(float("nan")))) and math.isnan(float(ga_weeks_hadlock(0.0)))


def test_flag_rules_degenerate_outside_and_uncertain(files) -> None:
    from fetalbio.inference.predictor import MIN_DIAMETER_PX, Predictor
    from fetalbio.tasks.base import ImagePrediction

    pred = Predictor(load_model(files["landmark"]))
    pred.model.uncertainty_threshold_px = 5.0
    good = np.array([[100.0, 200.0], [300.0, 200.0], [200.0, 130.0], [200.0, 270.0]])
    unc = np.full(4, 1.0)
    assert pred.flag(ImagePrediction(good, unc), (400, 300)) == ("ok", "")
    flag, reason = pred.flag(ImagePrediction(good, np.full(4, 6.0)), (400, 300))
    assert flag == "uncertain" and "uncertainty" in reason
    flag, reason = pred.flag(ImagePrediction(good, unc), (250, 300))  # OFD end beyond x = 249.5
    assert flag == "uncertain" and "1 point(s) outside the 250x300 image" == reason
    collapsed = good.copy()
    collapsed[3] = collapsed[2] + [0.0, MIN_DIAMETER_PX / 2]
    flag, reason = pred.flag(ImagePrediction(collapsed, unc), (400, 300))
    assert flag == "failed" and reason.startswith("degenerate")
    nan = good.copy()
    nan[0, 0] = np.nan
    assert pred.flag(ImagePrediction(nan, unc), (400, 300)) == ("failed", "non-finite point")
    assert pred.flag(ImagePrediction(good, unc, status="failed", reason="poor_fit"), (400, 300)) == ("failed", "poor_fit")


@pytest.mark.parametrize("kind", ["landmark", "seg"])
def test_predictor_channels_last_forward_equals_the_model(files, kind: str) -> None:
    """The predictor's channels-last inference copies compute what the loaded networks compute,
    and leave the loaded networks as they were."""
    from fetalbio.inference.predictor import Predictor

    loaded = load_model(files[kind])
    pred = Predictor(loaded)
    x = torch.randn(2, 1, *reversed(loaded.input_size))
    with torch.no_grad():
        ref = loaded.tasks[0].model(x)
    out = pred.forward(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert all(p.is_contiguous() for p in loaded.tasks[0].model.parameters())


def test_masks_follow_what_the_method_gives(files, tmp_path: Path) -> None:
    """`--masks` asks the variant registry what a method gives: a landmark model has no mask (the
    option is refused with a warning), a landmark model refined by the second stage has one."""
    res = _run(["--model", str(files["landmark"]), "--images", str(files["images"]), "--out", str(tmp_path / "a.csv"), "--masks", str(tmp_path / "ma")])
    assert "--masks ignored: hm_unet is a landmark model" in res.output
    torch.manual_seed(0)
    arch = {"base_width": 4, "depth": 2}
    stages = [StageWeights("coarse" if v == "hm_unet" else "refine", v, VariantConfig(arch=arch), TCFG, [build_task(v, VariantConfig(arch=arch), TCFG).model.state_dict()],
                           {} if v == "hm_unet" else {"edge_offset_px": 0.5}) for v in ("hm_unet", "refine")]
    two = tmp_path / "hm_refined.pt"
    save_model(two, model_payload("hm_unet_refined", stages, {"test": True}, None, 0.95))
    res = _run(["--model", str(two), "--images", str(files["images"]), "--out", str(tmp_path / "b.csv"), "--masks", str(tmp_path / "mb")])
    assert "--masks ignored" not in res.output and len(pd.read_csv(tmp_path / "b.csv")) == len(NAMES)
