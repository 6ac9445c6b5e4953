"""Bad-input catalogue, each case through the real ``fetalbio`` CLI on a small copy of data/sample.

Every case ends in one of: a clear message (file, line, column where that applies) and exit code
1; a row recorded in ``reports/ingest_drops.csv`` with its reason (``data.on_error: drop``); or a
recorded conversion (16-bit, colour) that is not an error. The table in README.md
("Bad input: what happens") lists the cases with these test names.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fetalbio import POINT_COLUMNS
from fetalbio.cli import app
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.inference.model_file import model_payload, save_model
from fetalbio.tasks import build_task

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
NAMES = ["000_HC.png", "006_HC.png", "010_2HC.png"]  # 800x540 each
runner = CliRunner()


# ---------------------------------------------------------------------------------------- helpers
def _invoke(args: list[str], code: int) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res.output


def _params(tmp_path: Path, edit=None, name: str = "params.yaml") -> Path:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    if edit is not None:
        edit(p)
    out = tmp_path / name
    out.write_text(yaml.safe_dump(p))
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A three-image challenge-layout copy of data/sample (images, masks, landmarks, spacing)."""
    r = tmp_path / "data"
    (r / "images").mkdir(parents=True)
    (r / "masks").mkdir()
    for n in NAMES:
        shutil.copy(SAMPLE / "images" / n, r / "images" / n)
        shutil.copy(SAMPLE / "masks" / n, r / "masks" / n)
    for csv in ("landmarks.csv", "hc18_reference.csv"):
        df = pd.read_csv(SAMPLE / csv, dtype=str)
        df[df["image_name"].isin(NAMES)].to_csv(r / csv, index=False)
    return r


def _ingest(tmp_path: Path, root: Path, code: int = 0, on_error: str = "error", tag: str = "out") -> tuple[str, Path]:
    """Run ``fetalbio ingest`` on ``root``; (output, folder with table.csv, drops.csv, ingest.json)."""
    def edit(p):
        p["data"]["root"] = str(root)
        p["data"]["on_error"] = on_error

    out = tmp_path / tag
    params = _params(tmp_path, edit, f"params-{tag}.yaml")
    output = _invoke(["ingest", "--params", params, "--out-dir", out / "ingested", "--drops", out / "drops.csv",
                      "--metrics", out / "ingest.json"], code)
    return output, out


def _edit_landmarks(root: Path, fn) -> None:
    lm = pd.read_csv(root / "landmarks.csv", dtype=str)
    fn(lm)
    lm.to_csv(root / "landmarks.csv", index=False)


def _set_cell(root: Path, name: str, col: str, value: str) -> None:
    _edit_landmarks(root, lambda lm: lm.__setitem__(col, lm[col].where(lm["image_name"] != name, value)))


# --------------------------------------------------------------------------- broken image files
def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _zero(p: Path) -> None:
    p.write_bytes(b"")


IMAGE_BREAKS = [(_truncate, "not a decodable image (corrupt or unsupported format)"), (_zero, "empty file (0 bytes)")]


@pytest.mark.parametrize("breaker,reason", IMAGE_BREAKS, ids=["truncated_png", "zero_byte"])
def test_broken_image_stops_ingest_naming_line_and_column(root: Path, tmp_path: Path, breaker, reason: str) -> None:
    breaker(root / "images" / NAMES[1])
    out, folder = _ingest(tmp_path, root, code=1)
    assert f"landmarks.csv line 3, column image_name [{NAMES[1]}]" in out and reason in out
    assert "data.on_error: drop" in out  # the message says how to go on
    assert not (folder / "ingested").exists()


@pytest.mark.parametrize("breaker,reason", IMAGE_BREAKS, ids=["truncated_png", "zero_byte"])
def test_broken_image_dropped_and_recorded(root: Path, tmp_path: Path, breaker, reason: str) -> None:
    breaker(root / "images" / NAMES[1])
    out, folder = _ingest(tmp_path, root, on_error="drop")
    drops = pd.read_csv(folder / "drops.csv")
    assert len(drops) == 1
    d = drops.iloc[0]
    assert (d["file"], d["line"], d["column"], d["image_name"]) == ("landmarks.csv", 3, "image_name", NAMES[1])
    assert reason in d["reason"]
    table = pd.read_csv(folder / "ingested" / "table.csv")
    assert list(table["image_name"]) == [NAMES[0], NAMES[2]]
    assert "1 issue(s) recorded" in out


# ---------------------------------------------------------------- conversions (not an error)
def _to_16bit(p: Path) -> None:
    g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(p), g.astype(np.uint16) * 257)


def _to_rgb(p: Path) -> None:
    g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(p), cv2.merge([g, g, g]))


@pytest.mark.parametrize("convert,tag,counter", [(_to_16bit, "16bit_to_8bit", "converted_16bit"), (_to_rgb, "rgb_to_gray", "converted_colour")],
                         ids=["png_16bit", "png_rgb"])
def test_16bit_and_rgb_png_converted_and_recorded(root: Path, tmp_path: Path, convert, tag: str, counter: str) -> None:
    original = cv2.imread(str(root / "images" / NAMES[0]), cv2.IMREAD_GRAYSCALE)
    convert(root / "images" / NAMES[0])
    _, folder = _ingest(tmp_path, root)
    table = pd.read_csv(folder / "ingested" / "table.csv", keep_default_na=False).set_index("image_name")
    assert table.loc[NAMES[0], "conversions"] == tag
    assert (table.loc[NAMES[1:], "conversions"] == "").all()
    counts = yaml.safe_load((folder / "ingest.json").read_text())
    assert counts[counter] == 1 and counts["rows_kept"] == 3 and counts["issues"] == 0
    stored = cv2.imread(str(folder / "ingested" / table.loc[NAMES[0], "image_path"]), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint8 and stored.ndim == 2
    np.testing.assert_array_equal(stored, original)  # x*257/257 and gray->BGR->gray are lossless


# ---------------------------------------------------------------------- landmarks CSV formats
def _bom(text: str) -> str:
    return "\ufeff" + text


def _spaces(text: str) -> str:
    return "\n".join(" , ".join(f"  {c} " for c in line.split(",")) for line in text.splitlines()) + "\n"


def _semicolons(text: str) -> str:
    return text.replace(",", ";")


@pytest.mark.parametrize("reformat", [_bom, _spaces, _semicolons], ids=["utf8_bom", "extra_spaces", "semicolons"])
def test_landmarks_csv_variants_give_the_same_table(root: Path, tmp_path: Path, reformat) -> None:
    _, clean = _ingest(tmp_path, root, tag="clean")
    text = (root / "landmarks.csv").read_text(encoding="utf-8")
    (root / "landmarks.csv").write_text(reformat(text), encoding="utf-8")
    _, folder = _ingest(tmp_path, root, tag="variant")
    a = pd.read_csv(clean / "ingested" / "table.csv", dtype=str, keep_default_na=False)
    b = pd.read_csv(folder / "ingested" / "table.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(a, b)
    assert len(b) == 3


# ------------------------------------------------------------------------ bad coordinates
@pytest.mark.parametrize("col,value,reason", [("bpd_1_y", "NaN", "missing (NaN) coordinate"), ("ofd_2_x", "-3", "coordinate -3 outside the image (valid -0.5..799.5)")],
                         ids=["nan", "negative"])
def test_bad_coordinate_names_line_and_column(root: Path, tmp_path: Path, col: str, value: str, reason: str) -> None:
    _set_cell(root, NAMES[2], col, value)
    out, _ = _ingest(tmp_path, root, code=1)
    assert f"landmarks.csv line 4, column {col} [{NAMES[2]}]: {reason}" in out
    out, folder = _ingest(tmp_path, root, on_error="drop", tag="drop")
    drops = pd.read_csv(folder / "drops.csv")
    assert drops[["line", "column", "image_name"]].values.tolist() == [[4, col, NAMES[2]]] and reason in drops["reason"].iloc[0]


# ------------------------------------------------------------------------- unsafe image names
def test_image_name_with_dotdot_refused(root: Path, tmp_path: Path) -> None:
    shutil.copy(root / "images" / NAMES[0], tmp_path / "outside.png")
    _edit_landmarks(root, lambda lm: lm.__setitem__("image_name", lm["image_name"].replace(NAMES[0], "../../outside.png")))
    out, _ = _ingest(tmp_path, root, code=1)
    assert "landmarks.csv line 2, column image_name [../../outside.png]" in out and "escapes the data root ('..')" in out


def test_symlink_outside_data_root_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / NAMES[0]
    outside.parent.mkdir()
    shutil.move(root / "images" / NAMES[0], outside)
    os.symlink(outside, root / "images" / NAMES[0])
    out, _ = _ingest(tmp_path, root, code=1)
    assert f"landmarks.csv line 2, column image_name [{NAMES[0]}]" in out and "resolves outside the data root (symlink?)" in out
    _, folder = _ingest(tmp_path, root, on_error="drop", tag="drop")
    assert pd.read_csv(folder / "drops.csv")["image_name"].tolist() == [NAMES[0]]


# ---------------------------------------------------------------------------------- params
def test_unknown_variant_on_the_command_line(tmp_path: Path) -> None:
    out = _invoke(["train", "--params", _params(tmp_path), "--variant", "nope", "--fold", "0", "--out-dir", tmp_path / "m"], 1)
    assert "unknown variant 'nope'; valid: " in out and "hm_unet" in out


@pytest.mark.parametrize("command", ["compare", "final"])
def test_unknown_variant_listed_in_params(tmp_path: Path, command: str) -> None:
    p = _params(tmp_path, lambda d: d["landmark_variants"].append("nope"))
    out = _invoke([command, "--params", p, "--metrics-dir", tmp_path / "none"], 1)  # refused before any file is read
    assert f"{p}: landmark_variants: unknown variant 'nope'; valid: " in out


def test_negative_epochs(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: d["train"].__setitem__("epochs", -2))
    out = _invoke(["train", "--params", p, "--variant", "hm_unet", "--fold", "0", "--out-dir", tmp_path / "m"], 1)
    assert "train.epochs must be >= 1, got -2" in out


def test_missing_params_key(root: Path, tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: d["data"].pop("root"))
    out = _invoke(["ingest", "--params", p, "--out-dir", tmp_path / "ing"], 1)
    assert f"{p}: missing key data.root" in out


# ------------------------------------------------------------------ predict: images and models
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    tcfg = TrainConfig(input_width=64, input_height=64, device="cpu")
    vcfg = VariantConfig(arch={"base_width": 4, "depth": 2})
    task = build_task("hm_unet", vcfg, tcfg)
    path = tmp_path_factory.mktemp("model") / "lm.pt"
    save_model(path, model_payload("hm_unet", vcfg, tcfg, [task.model.state_dict()], {}, None, 0.95, {"test": True}))
    return path


def test_image_smaller_than_network_input_is_letterboxed(tiny_model: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    g = cv2.imread(str(SAMPLE / "images" / NAMES[0]), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(small), cv2.resize(g, (40, 30), interpolation=cv2.INTER_AREA))  # 40x30 < 64x64 input
    out = tmp_path / "p.csv"
    _invoke(["predict", "--no-progress", "--model", tiny_model, "--images", small, "--out", out, "--pixel-size", "1.0"], 0)
    row = pd.read_csv(out).iloc[0]
    assert row["image_name"] == "small.png"
    pts = np.array([row[c] for c in POINT_COLUMNS], dtype=float)
    assert np.isfinite(pts).all()  # upsampled by the letterbox, mapped back to 40x30 pixels
    # an untrained network's points may collapse: then the row says so instead of reporting a head
    assert row["flag"] in ("ok", "uncertain") or str(row["reason"]).startswith("degenerate")
    assert np.isfinite(row["hc_mm"]) == (row["flag"] != "failed")


class _NotWeights:
    pass


def _plain_list(p: Path) -> None:
    torch.save([1, 2, 3], p)


def _object(p: Path) -> None:
    torch.save(_NotWeights(), p)


def _random_bytes(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _truncated_model(p: Path) -> None:
    torch.save({"format": "fetalbio-model", "w": torch.zeros(1000)}, p)
    with open(p, "r+b") as fh:
        fh.truncate(500)


@pytest.mark.parametrize("make,msg", [
    (_plain_list, "not a fetalbio model file (no 'format: fetalbio-model')"),
    (_object, "not a loadable fetalbio model file (it pickles a Python object ("),
    (_random_bytes, "not a loadable fetalbio model file (not a torch.save file, or a truncated one"),
    (_truncated_model, "not a loadable fetalbio model file (not a torch.save file, or a truncated one"),
], ids=["plain_list", "pickled_object", "random_bytes", "truncated"])
def test_model_file_that_is_not_a_state_dict_is_refused(tmp_path: Path, make, msg: str) -> None:
    model = tmp_path / "bad.pt"
    make(model)
    out = _invoke(["predict", "--no-progress", "--model", model, "--images", SAMPLE / "images" / NAMES[0], "--out", tmp_path / "p.csv"], 1)
    assert f"error: {model}: {msg}" in out
    assert "weights_only=False" not in out  # never suggests the unsafe load
    assert not (tmp_path / "p.csv").exists()
