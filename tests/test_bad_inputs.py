"""Bad-input catalogue, each case through the real ``fetalbio`` CLI on a small copy of data/sample.

Every case ends in one of: a clear message (file, line, column where that applies) and exit code
1; a row recorded in ``reports/ingest_drops.csv`` with its reason (``data.on_error: drop``); or a
recorded conversion (16-bit, colour) that is not an error. The table in docs/data.md
("Bad input: what happens") lists the cases with these test names.
"""

from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from stage_cli import app  # the stage scripts and the fetalbio command in one app
from typer.testing import CliRunner

from fetalbio import POINT_COLUMNS
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import Letterbox
from fetalbio.model_file import StageWeights, model_payload, save_model
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
    """Run ``python stages/ingest.py`` on ``root``; (output, folder with table.csv, drops.csv, ingest.json)."""
    def edit(p):
        p["data"]["root"] = str(root)
        p["data"]["sources"] = {}  # one source: the root itself
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
    _, folder = _ingest(tmp_path, root, on_error="drop", tag="drop")
    drops = pd.read_csv(folder / "drops.csv")
    assert drops[["line", "column", "image_name"]].values.tolist() == [[2, "image_name", "../../outside.png"]]
    assert "escapes the data root" in drops["reason"].iloc[0]


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
    p = _params(tmp_path, lambda d: d["variant_names"].append("nope"))
    out = _invoke([command, "--params", p, "--metrics-dir", tmp_path / "none"], 1)  # refused before any file is read
    assert f"{p}: variant_names: unknown variant 'nope'; valid: " in out and "refine" not in out.split("valid:")[1]


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d.__setitem__("landmark_variants", ["hm_unet"]), "landmark_variants is gone; list every variant in one `variant_names` list"),
    (lambda d: d["variant_names"].append("refine"), "variant_names: unknown variant 'refine'"),
    (lambda d: d["variant_names"].append("hm_unet"), "variant_names: ['hm_unet'] listed twice"),
])
def test_bad_variant_names(tmp_path: Path, edit, msg: str) -> None:
    p = _params(tmp_path, edit)
    out = _invoke(["compare", "--params", p, "--metrics-dir", tmp_path / "none"], 1)
    assert msg in out


def test_negative_epochs(tmp_path: Path) -> None:
    p = _params(tmp_path, lambda d: d["train"].__setitem__("epochs", -2))
    out = _invoke(["train", "--params", p, "--variant", "hm_unet", "--fold", "0", "--out-dir", tmp_path / "m"], 1)
    assert "train.epochs must be >= 1, got -2" in out


@pytest.mark.parametrize("seeds, msg", [
    ([42, 42], "variants.hm_unet: seeds must not repeat a seed, got [42, 42]"),
    ([1, "x"], "variants.hm_unet.seeds[1] must be an integer, got 'x'"),
])
def test_bad_seed_ensemble(tmp_path: Path, seeds: list, msg: str) -> None:
    p = _params(tmp_path, lambda d: d["variants"]["hm_unet"].__setitem__("seeds", seeds))
    out = _invoke(["train", "--params", p, "--variant", "hm_unet", "--fold", "0", "--out-dir", tmp_path / "m"], 1)
    assert msg in out and not (tmp_path / "m").exists()


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
    save_model(path, model_payload("hm_unet", [StageWeights("coarse", "hm_unet", vcfg, tcfg, [task.model.state_dict()], {})], {"test": True}, None, 0.95))
    return path


def test_image_smaller_than_network_input_is_letterboxed(tiny_model: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    g = cv2.imread(str(SAMPLE / "images" / NAMES[0]), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(small), cv2.resize(g, (40, 30), interpolation=cv2.INTER_AREA))  # 40x30 < 64x64 input
    out = tmp_path / "p.csv"
    _invoke(["predict", "--no-progress", "--model", tiny_model, "--images", small, "--out", out, "--pixel-size", "1.0"], 0)
    row = pd.read_csv(out).iloc[0]
    assert row["image_name"] == "small.png"
    pts = np.array([row[c] for c in POINT_COLUMNS], dtype=float).reshape(4, 2)
    # an untrained network's points may collapse: then the row is failed and carries no endpoints
    assert np.isfinite(pts).all() == (row["flag"] != "failed")
    if row["flag"] == "failed":
        assert str(row["reason"]).startswith("degenerate") and not np.isfinite(row["hc_mm"])
        return
    # upsampled by the letterbox (40x30 -> 64x48 + padding) and mapped back to the image's own
    # pixels: every point lies inside the 64x64 network frame seen in 40x30 coordinates
    lo, hi = Letterbox.fit((40, 30), (64, 64)).to_original(np.array([[-0.5, -0.5], [63.5, 63.5]]))
    assert ((pts >= lo - 1e-6) & (pts <= hi + 1e-6)).all(), (pts, lo, hi)
    assert hi[0] == pytest.approx(39.5) and lo[0] == pytest.approx(-0.5)  # a small frame: not network pixels
    assert np.isfinite(row["hc_mm"])


MARKER = "code_ran.txt"  # what a malicious pickle would create on load without weights_only=True


class _RunsCode:
    """Unpickling this calls ``open(<MARKER>, "w")``: a stand-in for arbitrary code in a file."""

    def __init__(self, folder: Path) -> None:
        self.target = str(folder / MARKER)

    def __reduce__(self):
        return (open, (self.target, "w"))


class _MyOrderedDict(collections.OrderedDict):
    pass


def _plain_list(p: Path) -> None:
    torch.save([1, 2, 3], p)


def _bare_state_dict(p: Path) -> None:
    torch.save({"w": torch.zeros(3)}, p)


def _code_object(p: Path) -> None:
    torch.save(_RunsCode(p.parent), p)


def _ordered_dict_subclass(p: Path) -> None:
    torch.save(_MyOrderedDict(w=torch.zeros(3)), p)


def _random_bytes(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _truncated_model(p: Path) -> None:
    torch.save({"format": "fetalbio-model", "w": torch.zeros(1000)}, p)
    with open(p, "r+b") as fh:
        fh.truncate(500)


NOT_MODEL = "not a fetalbio model file (no 'format: fetalbio-model')"
NOT_LOADABLE = "not a loadable fetalbio model file (not a torch.save file, or a truncated one"
PICKLES = "not a loadable fetalbio model file (it pickles a Python object ("
BAD_FILES = [(_plain_list, NOT_MODEL), (_bare_state_dict, NOT_MODEL), (_code_object, PICKLES + "io.open)"),
             (_ordered_dict_subclass, PICKLES), (_random_bytes, NOT_LOADABLE), (_truncated_model, NOT_LOADABLE)]
BAD_IDS = ["plain_list", "bare_state_dict", "pickled_code", "ordered_dict_subclass", "random_bytes", "truncated"]


@pytest.mark.parametrize("command", ["predict", "bench"])
@pytest.mark.parametrize("make,msg", BAD_FILES, ids=BAD_IDS)
def test_model_file_that_is_not_a_state_dict_is_refused(tmp_path: Path, make, msg: str, command: str) -> None:
    model = tmp_path / "bad.pt"
    make(model)
    one = tmp_path / "img"
    one.mkdir()
    shutil.copy(SAMPLE / "images" / NAMES[0], one / NAMES[0])
    args = {"predict": ["predict", "--no-progress", "--images", one, "--out", tmp_path / "p.csv"],
            "bench": ["bench", "--images", one, "--n-images", "1", "--no-cuda", "--out", tmp_path / "p.csv"]}[command]
    out = _invoke([*args, "--model", model], 1)
    assert f"error: {model}: {msg}" in out
    assert "weights_only=False" not in out  # never suggests the unsafe load
    assert not (tmp_path / "p.csv").exists()
    assert not (tmp_path / MARKER).exists()  # loaded with weights_only=True: no code in the file ran


@pytest.fixture
def fold_outputs(tmp_path: Path) -> dict[str, Path]:
    """What ``python stages/final.py`` with ``final.source: folds`` reads, up to the fold checkpoint."""
    p = _params(tmp_path, lambda d: d["final"].update(variant="hm_unet", source="folds"))
    clean = pd.read_csv(SAMPLE / "landmarks.csv").head(2)
    clean = clean.assign(image_path="images/" + clean["image_name"], subject_id="000", weight=1.0,
                         mask_path="", near_duplicate_of="", flags="", conversions="")
    clean.to_csv(tmp_path / "labels.csv", index=False)
    fold = tmp_path / "models" / "hm_unet" / "fold0"
    fold.mkdir(parents=True)
    oof = clean[["image_name", *POINT_COLUMNS]].assign(fold=0, status="ok", **{f"unc_{n}": 1.0 for n in ("ofd_1", "ofd_2", "bpd_1", "bpd_2")})
    oof.to_csv(fold / "oof.csv", index=False)
    (tmp_path / "compare.json").write_text("{}")
    return {"params": p, "checkpoint": fold / "model.pt"}


@pytest.mark.parametrize("make,msg", [
    (_plain_list, "not a fetalbio model file (no 'format: fetalbio-model')"),
    (_bare_state_dict, "not a fetalbio model file (no 'format: fetalbio-model')"),
    (_code_object, "not a loadable fetalbio model file ("),
    (_ordered_dict_subclass, "not a loadable fetalbio model file ("),
    (_random_bytes, "not a loadable fetalbio model file ("),
], ids=BAD_IDS[:5])
def test_fold_checkpoint_that_is_not_a_state_dict_is_refused_by_final(tmp_path: Path, fold_outputs: dict, make, msg: str) -> None:
    ckpt = fold_outputs["checkpoint"]
    make(ckpt)
    out = _invoke(["final", "--params", fold_outputs["params"], "--labels", tmp_path / "labels.csv", "--images-root", tmp_path,
                   "--models-dir", tmp_path / "models", "--compare", tmp_path / "compare.json", "--metrics-dir", tmp_path,
                   "--out", tmp_path / "release.pt", "--card", tmp_path / "card.md", "--metrics", tmp_path / "final.json"], 1)
    assert f"error: {ckpt}: {msg}" in out
    assert "weights_only=False" not in out  # torch's advice to unpickle anyway is not passed on
    assert not (tmp_path / "release.pt").exists()
    assert not (ckpt.parent / MARKER).exists()  # read_model_file uses weights_only=True


def test_clean_table_missing_a_column_named_by_final(tmp_path: Path, fold_outputs: dict) -> None:
    pd.read_csv(tmp_path / "labels.csv").drop(columns=["mask_path"]).to_csv(tmp_path / "labels.csv", index=False)
    out = _invoke(["final", "--params", fold_outputs["params"], "--labels", tmp_path / "labels.csv", "--compare", tmp_path / "compare.json",
                   "--models-dir", tmp_path / "models", "--out", tmp_path / "release.pt"], 1)
    assert f"error: {tmp_path / 'labels.csv'}: not a cleaned label table, missing columns ['mask_path']" in out


def test_final_refuses_a_torchrun_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    out = _invoke(["final", "--params", REPO / "params.yaml", "--out", tmp_path / "release.pt"], 1)
    assert "final runs as one process" in out and not (tmp_path / "release.pt").exists()
