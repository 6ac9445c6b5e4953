"""The ONNX form of a model file (``fetalbio export``, ``predict --runtime``, ``bench``): ONNX
Runtime against torch on tiny random networks, the refusals of broken forms through the CLI, and
the docs' plain-Python example on the shipped model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from stage_cli import app  # the stage scripts and the fetalbio command in one app
from typer.testing import CliRunner

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.inference.onnx_form import OnnxBackend, load_onnx_form
from fetalbio.inference.predictor import Predictor
from fetalbio.io import read_gray8
from fetalbio.model_file import StageWeights, load_model, model_payload, save_model
from fetalbio.tasks import build_task

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
PRETRAINED = REPO / "pretrained" / "fetalbio-hc18.pt"
NAMES = ["000_HC.png", "006_HC.png"]
TCFG = TrainConfig(input_width=64, input_height=64, device="cpu")
SMALL_UNET = {"base_width": 4, "depth": 2}
COORD_ARCH = {"layers": [1, 1, 1, 1], "base_width": 4, "hidden": 16}
runner = CliRunner()


def _state_dict(variant: str, vcfg: VariantConfig, seed: int) -> dict:
    torch.manual_seed(seed)
    return build_task(variant, vcfg, TCFG).model.state_dict()


def _model_file(path: Path, variant: str, arch: dict, state_dicts: list[dict] | None = None, calibration: dict | None = None,
                refine: StageWeights | None = None) -> Path:
    vcfg = VariantConfig(arch=arch)
    sds = state_dicts or [_state_dict(variant, vcfg, 0)]
    stages = [StageWeights("coarse", variant, vcfg, TCFG, sds, calibration or {}), *([refine] if refine else [])]
    save_model(path, model_payload(f"{variant}_refined" if refine else variant, stages, {"test": True}, None, 0.95))
    return path


def _invoke(args: list, code: int = 0) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res.output


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    imgs = d / "images"
    imgs.mkdir()
    for n in NAMES:
        shutil.copy(SAMPLE / "images" / n, imgs / n)
    seg_v = VariantConfig(arch=SMALL_UNET)
    seg0 = _state_dict("seg_unet", seg_v, 0)  # seed 0: its untrained masks give ellipses on both images
    torch.manual_seed(1)
    seg0_jittered = {k: v + 1e-3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in seg0.items()}  # a second member (fits still succeed)
    coord_v = VariantConfig(arch=COORD_ARCH)
    coord = _state_dict("coord_regression", coord_v, 0)
    # an untrained regression head puts all four points near the centre (a degenerate head):
    # its last layer's bias places them on a head-like cross instead (the weights still act)
    layout = torch.tensor([[0.25, 0.5], [0.75, 0.5], [0.5, 0.3], [0.5, 0.7]]).reshape(-1)
    coord["mlp.4.bias"] = torch.logit(layout)
    refine_v = VariantConfig(arch=SMALL_UNET)
    refine = StageWeights("refine", "refine", refine_v, TCFG, [_state_dict("refine", refine_v, 0)], {"edge_offset_px": 0.5})
    models = {
        "segmentation": _model_file(d / "seg.pt", "seg_unet", SMALL_UNET, [seg0], {"edge_offset_px": 1.0, "edge_offset_n": 3}),
        "heatmap": _model_file(d / "hm.pt", "hm_unet", SMALL_UNET),
        "regression": _model_file(d / "coord.pt", "coord_regression", COORD_ARCH, [coord]),
        "ensemble": _model_file(d / "ens.pt", "seg_unet", SMALL_UNET, [seg0, seg0_jittered]),
        "two_stage": _model_file(d / "two.pt", "seg_unet", SMALL_UNET, [seg0], refine=refine),
        "hybrid": _model_file(d / "hyb.pt", "hybrid_hourglass", {"width": 8, "depth": 2, "hidden": 16}),
    }
    for path in models.values():
        out = _invoke(["export", path, "--format", "onnx"])
        assert f"-> {path.with_suffix('.onnx')} + {path.stem}.onnx.json" in out
    return {"dir": d, "images": imgs, **models}


def _predict(files: dict, model: Path, runtime: str, out: Path, code: int = 0) -> str:
    return _invoke(["predict", "--no-progress", "--model", model, "--images", files["images"], "--spacing", SAMPLE / "hc18_reference.csv",
                    "--out", out, "--runtime", runtime], code)


def _outputs(out) -> list[np.ndarray]:
    """Raw output(s) as numpy arrays (torch gives tensors, ONNX Runtime arrays)."""
    return [o if isinstance(o, np.ndarray) else o.detach().numpy() for o in (list(out) if isinstance(out, (list, tuple)) else [out])]


KINDS = ["segmentation", "heatmap", "regression", "ensemble", "two_stage", "hybrid"]


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_runtime_and_torch_agree(files, kind: str, tmp_path: Path) -> None:
    """Raw outputs within 1e-4, measurements within 0.01 mm, on two sample images."""
    model = files[kind]
    torch_pred = Predictor(load_model(model))
    form = load_onnx_form(model, threads=1, model_file=model)
    onnx_pred = Predictor(form.loaded_model(), "cpu", OnnxBackend(form))
    images = [read_gray8(files["images"] / n).pixels for n in NAMES]
    x = np.stack([torch_pred.preprocess(im)[0] for im in images])
    for a, b in zip(_outputs(torch_pred.forward(x)), _outputs(onnx_pred.forward(x))):
        assert a.shape == b.shape
        assert float(np.abs(a - b).max()) <= 1e-4
    if kind == "two_stage":
        crops = np.random.default_rng(0).standard_normal((3, 1, 64, 64)).astype(np.float32)
        (a,), (b,) = _outputs(torch_pred.forward(crops, 1)), _outputs(onnx_pred.forward(crops, 1))
        assert float(np.abs(a - b).max()) <= 1e-4
        refined = [p for p in torch_pred.predict_arrays(images) if "refine_passes" in p.extra]
        assert refined, "the refinement stage ran on no image: the comparison below would not cover it"
    if kind == "ensemble":
        assert form.manifest["stages"][0]["members"] == 2
    out_torch, out_onnx = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    assert "runtime: torch on cpu (as asked)" in _predict(files, model, "torch", out_torch)
    assert f"runtime: onnx ({model.stem}.onnx)" in _predict(files, model, "onnx", out_onnx)
    if kind == "two_stage":
        # its refinement network is untrained: its crops' probabilities sit at 0.5, the fit's
        # threshold, where a 1-ulp difference between torch's and numpy's sigmoid moves the
        # sub-pixel contour; the trained two-stage model is compared in
        # test_onnx_runtime_measures_without_torch below
        return
    a, b = pd.read_csv(out_torch), pd.read_csv(out_onnx)
    assert list(a["flag"]) == list(b["flag"]) and list(a["image_name"]) == NAMES
    assert (a["flag"] != "failed").any(), "no measurement to compare"
    np.testing.assert_allclose(a["hc_mm"], b["hc_mm"], atol=0.01, rtol=0)  # NaN where both failed
    np.testing.assert_allclose(a["bpd_mm"], b["bpd_mm"], atol=0.01, rtol=0)
    np.testing.assert_allclose(a["ofd_mm"], b["ofd_mm"], atol=0.01, rtol=0)


def test_two_stage_model_is_one_graph_with_a_stage_input(files) -> None:
    m = json.loads(files["two_stage"].with_suffix(".onnx.json").read_text())
    assert [st["role"] for st in m["stages"]] == ["coarse", "refine"] and [st["stage_value"] for st in m["stages"]] == [0, 1]
    assert m["inputs"] == {"image": {"dtype": "float32", "shape": ["batch", 1, "height", "width"]}, "stage": {"dtype": "int64", "shape": []}}
    assert m["stages"][1]["decoding"]["kind"] == "refine" and m["stages"][1]["decoding"]["crop_span"] == 1.35
    assert m["stages"][0]["decoding"]["edge_offset_px"] == 0.0 and m["stages"][1]["decoding"]["edge_offset_px"] == 0.5
    form = load_onnx_form(files["two_stage"])
    coarse = form.run(0, np.zeros((2, 1, 64, 64), np.float32))
    assert [o.shape for o in coarse] == [(2, 1, 64, 64)]
    every = form.session.run(None, {"image": np.zeros((2, 1, 64, 64), np.float32), "stage": np.array(1)})
    assert [o.shape for o in every] == [(0, 1, 64, 64), (2, 1, 64, 64)]  # the stage not run: empty


def test_hybrid_model_exports_both_outputs(files) -> None:
    m = json.loads(files["hybrid"].with_suffix(".onnx.json").read_text())
    assert [o["name"] for o in m["stages"][0]["outputs"]] == ["coarse_heatmaps", "coarse_coords"]
    assert m["export"]["exporter"] == {"coarse": "dynamo"}  # the TorchScript exporter cannot trace its adaptive pooling


def test_onnx_form_alone_runs_without_the_model_file(files, tmp_path: Path) -> None:
    d = tmp_path / "only_onnx"
    d.mkdir()
    for suffix in (".onnx", ".onnx.json"):
        shutil.copy(files["heatmap"].with_suffix(suffix), d / f"renamed{suffix}")
    out = _invoke(["predict", "--no-progress", "--model", d / "renamed.onnx", "--images", files["images"], "--pixel-size", "0.1", "--out", tmp_path / "p.csv"])
    assert "runtime: onnx (renamed.onnx + renamed.onnx.json, no model file)" in out
    ref = tmp_path / "ref.csv"
    _invoke(["predict", "--no-progress", "--model", files["heatmap"], "--images", files["images"], "--pixel-size", "0.1", "--out", ref, "--runtime", "torch"])
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv")["hc_mm"], pd.read_csv(ref)["hc_mm"], atol=0.01, rtol=0)
    out = _invoke(["predict", "--model", d / "renamed.onnx", "--images", files["images"], "--out", tmp_path / "q.csv", "--runtime", "torch"], 1)
    assert f"error: {d / 'renamed.onnx'}: an ONNX form runs on ONNX Runtime only; give the model file (.pt) for --runtime torch" in out


# ------------------------------------------------------------------------------- no / bad forms
def test_model_without_onnx_form_falls_back_to_torch_with_a_note(files, tmp_path: Path) -> None:
    bare = shutil.copy(files["heatmap"], tmp_path / "bare.pt")
    out = _predict(files, bare, "auto", tmp_path / "p.csv")
    assert f"runtime: torch on cpu (no ONNX form bare.onnx next to the model; `fetalbio export {bare} --format onnx` makes one)" in out
    assert pd.read_csv(tmp_path / "p.csv")["flag"].notna().all()


def test_runtime_onnx_without_onnx_form_is_an_error(files, tmp_path: Path) -> None:
    bare = shutil.copy(files["heatmap"], tmp_path / "bare.pt")
    out = _predict(files, bare, "onnx", tmp_path / "p.csv", code=1)
    assert f"error: {bare}: no ONNX form (bare.onnx not found next to it); make one with: fetalbio export {bare} --format onnx" in out
    assert not (tmp_path / "p.csv").exists()


def _truncate(graph: Path, manifest: Path) -> None:
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 2])


def _random_bytes(graph: Path, manifest: Path) -> None:
    graph.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _empty(graph: Path, manifest: Path) -> None:
    graph.write_bytes(b"")


def _foreign(graph: Path, manifest: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "other",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 64, 64])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 1, 64, 64])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), graph)


def _tampered_weights(graph: Path, manifest: Path) -> None:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(graph)
    init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    onnx.save(m, graph)


def _edit_manifest(edit):
    def apply(graph: Path, manifest: Path) -> None:
        m = json.loads(manifest.read_text())
        edit(m)
        manifest.write_text(json.dumps(m))
    return apply


def _manifest_not_json(graph: Path, manifest: Path) -> None:
    manifest.write_text("{not json")


def _manifest_missing(graph: Path, manifest: Path) -> None:
    manifest.unlink()


def _other_model_file(graph: Path, manifest: Path) -> None:
    _model_file(graph.with_suffix(".pt"), "hm_unet", SMALL_UNET, [_state_dict("hm_unet", VariantConfig(arch=SMALL_UNET), 1)])


G, M, PT = "{graph}", "{manifest}", "{pt}"
BAD_FORMS = [
    (_truncate, f"error: {G}: not a loadable ONNX graph (corrupt or truncated: "),
    (_random_bytes, f"error: {G}: not a loadable ONNX graph (corrupt or truncated: "),
    (_empty, f"error: {G}: empty file, not an ONNX graph"),
    (_foreign, f"error: {G}: not a fetalbio ONNX graph (no 'fetalbio_format: fetalbio-onnx' metadata; a foreign ONNX file?)"),
    (_tampered_weights, f"error: {G}: the graph's bytes do not match graph_sha256 in m.onnx.json (changed after export?)"),
    (_edit_manifest(lambda m: m["inputs"]["image"].__setitem__("shape", ["batch", 1, 32, 32])),
     f"error: {M}: does not match the graph m.onnx: input 'image' has shape (batch, 1, 64, 64), the manifest says (batch, 1, 32, 32)"),
    (_edit_manifest(lambda m: m["stages"][0].__setitem__("input_size", [32, 48])),
     f"error: {M}: does not match the graph m.onnx: input 'image' has shape (batch, 1, 64, 64), the coarse stage's input_size is 32x48 (W x H)"),
    (_edit_manifest(lambda m: m["stages"][0]["outputs"][0].__setitem__("name", "coarse_logits")),
     f"error: {M}: does not match the graph m.onnx: outputs ['coarse_logits'], the graph's are ['coarse_heatmaps']"),
    (_edit_manifest(lambda m: m.__setitem__("method", "seg_unet")),
     f"error: {M}: does not match the graph m.onnx: method 'seg_unet', the graph's is 'hm_unet'"),
    (_edit_manifest(lambda m: m["stages"][0].__setitem__("outputs", ["coarse_heatmaps"])),
     f"error: {M}: malformed manifest (AttributeError: "),
    (_edit_manifest(lambda m: m.__setitem__("format", "something-else")), f"error: {M}: not a fetalbio ONNX manifest (no 'format: fetalbio-onnx')"),
    (_edit_manifest(lambda m: m.pop("graph_sha256")), f"error: {M}: incomplete manifest (missing ['graph_sha256'])"),
    (_manifest_not_json, f"error: {M}: not a JSON manifest (JSONDecodeError: "),
    (_manifest_missing, f"error: {G}: its manifest m.onnx.json is missing (the ONNX form is the graph and <graph>.json)"),
    (_other_model_file, f"error: {G}: exported from another model file than {PT} (source sha256 differs); re-export it: fetalbio export {PT} --format onnx"),
]
BAD_IDS = ["truncated", "random_bytes", "empty", "foreign", "tampered_weights", "manifest_input_shape", "manifest_input_size",
           "manifest_outputs", "manifest_method", "manifest_outputs_malformed", "manifest_format", "manifest_no_hash", "manifest_not_json", "manifest_missing", "other_model_file"]


@pytest.mark.parametrize("runtime", ["auto", "onnx"])
@pytest.mark.parametrize("breaker,msg", BAD_FORMS, ids=BAD_IDS)
def test_broken_onnx_form_is_refused(files, tmp_path: Path, breaker, msg: str, runtime: str) -> None:
    pt, graph, manifest = tmp_path / "m.pt", tmp_path / "m.onnx", tmp_path / "m.onnx.json"
    for suffix, dest in ((".pt", pt), (".onnx", graph), (".onnx.json", manifest)):
        shutil.copy(files["heatmap"].with_suffix(suffix), dest)
    breaker(graph, manifest)
    out = _predict(files, pt, runtime, tmp_path / "p.csv", code=1)
    assert msg.format(graph=graph, manifest=manifest, pt=pt) in out
    assert not (tmp_path / "p.csv").exists()


def test_two_stage_manifest_input_size_must_fit_the_graph(files, tmp_path: Path) -> None:
    """A two-stage graph's input axes are named, so the stages are run once at load."""
    pt, graph, manifest = tmp_path / "m.pt", tmp_path / "m.onnx", tmp_path / "m.onnx.json"
    for suffix, dest in ((".pt", pt), (".onnx", graph), (".onnx.json", manifest)):
        shutil.copy(files["two_stage"].with_suffix(suffix), dest)
    _edit_manifest(lambda m: m["stages"][1].__setitem__("input_size", [32, 48]))(graph, manifest)
    out = _predict(files, pt, "auto", tmp_path / "p.csv", code=1)
    assert (f"error: {manifest}: does not match the graph m.onnx: at input_size 32x48 the refine stage's output 'refine_logits' "
            "has shape (batch, 1, 48, 32), the manifest says (batch, 1, 64, 64)") in out


def test_export_refuses_a_bad_model_file_and_a_bad_out(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save([1, 2, 3], bad)
    assert f"error: {bad}: not a fetalbio model file" in _invoke(["export", bad, "--format", "onnx"], 1)
    assert "error: --format must be onnx, got 'tflite'" in _invoke(["export", PRETRAINED, "--format", "tflite"], 1)
    out = _invoke(["export", PRETRAINED, "--out", tmp_path / "x.bin"], 1)
    assert f"error: --out {tmp_path / 'x.bin'}: the graph's file name must end in .onnx" in out
    assert not bad.with_suffix(".onnx").exists()


# ------------------------------------------------------------------------------------- bench
def test_bench_times_models_on_both_runtimes_side_by_side(files, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    bare = shutil.copy(files["heatmap"], tmp_path / "bare.pt")
    text = _invoke(["bench", "--model", files["segmentation"], "--model", bare, "--model", files["two_stage"], "--images", files["images"],
                    "--n-images", "2", "--rounds", "1", "--batch-sizes", "1,2", "--threads", "1", "--no-train", "--no-cuda", "--out", out])
    assert f"note: {bare}: no ONNX form (bare.onnx): torch only" in text
    b = json.loads(out.read_text())
    seg, hm, two = b["models"]
    # a two-stage model is timed with both stages: the refinement is part of every measurement
    assert two["stages"] == ["coarse", "refine"] and set(two["runtimes"]) == {"torch", "onnx"}
    for figures in two["runtimes"].values():
        assert figures["refine_ms_batch1"] > 0
        assert figures["model_ms_per_image_batch1"] >= figures["forward_ms_batch1"] + figures["refine_ms_batch1"] - 0.01
    assert "refine_ms_batch1" not in seg["runtimes"]["torch"]
    assert set(seg["runtimes"]) == {"torch", "onnx"} and set(hm["runtimes"]) == {"torch"}
    assert seg["runtimes"]["onnx"]["timings"] == seg["runtimes"]["torch"]["timings"] == 2
    r = seg["onnx_over_torch"]
    assert r["forward_ms_batch1"] == pytest.approx(seg["runtimes"]["onnx"]["forward_ms_batch1"] / seg["runtimes"]["torch"]["forward_ms_batch1"], rel=0.01)
    assert "onnx_over_torch" not in hm and b["threads"] == 1 and b["n_images"] == 2


# -------------------------------------------------------------------- the shipped model's form
def test_pretrained_onnx_form_is_the_pretrained_model() -> None:
    form = load_onnx_form(PRETRAINED, model_file=PRETRAINED)  # hashes, metadata, shapes, source file
    m = load_model(PRETRAINED)
    assert form.manifest["method"] == m.method and tuple(form.manifest["stages"][0]["input_size"]) == m.input_size
    assert form.manifest["stages"][0]["decoding"]["edge_offset_px"] == pytest.approx(m.tasks[0].edge_offset_px)
    assert form.manifest["uncertainty_threshold_px"] == pytest.approx(m.uncertainty_threshold_px)


def _docs_example() -> str:
    text = (REPO / "docs" / "onnx.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_docs_example_matches_predict(tmp_path: Path) -> None:
    """The docs' example (onnxruntime, numpy, cv2; no fetalbio) gives the HC of ``fetalbio
    predict`` within 0.5 mm (measured on the 48 sample images: mean +0.15 mm, at most 0.32 mm)."""
    code = _docs_example()
    assert "fetalbio" not in code.replace("fetalbio-hc18", "")  # no fetalbio import
    image = re.search(r'"data/sample/images/([^"]+)"', code).group(1)
    px = float(re.search(r'images/[^"]+", ([0-9.]+)', code).group(1))
    ref = pd.read_csv(SAMPLE / "hc18_reference.csv").set_index("image_name")
    assert px == pytest.approx(ref.loc[image, "pixel_size_mm"])
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    hc_example = float(re.search(r"HC ([0-9.]+) mm", run.stdout).group(1))
    # the example runs the first stage: compare with fetalbio's first-stage measurement of the same image
    import cv2

    from fetalbio.inference.predictor import Predictor
    from fetalbio.metrics.biometry import diameters_px, ramanujan_hc
    from fetalbio.model_file import load_model

    (p,) = Predictor(load_model(PRETRAINED)).predict_coarse([cv2.imread(str(SAMPLE / "images" / image), cv2.IMREAD_GRAYSCALE)])
    o, b = (float(v[0]) for v in diameters_px(p.points[None]))
    assert hc_example == pytest.approx(float(ramanujan_hc(o * px, b * px)), abs=0.5)


# torch refused at import: what ONNX Runtime prediction must do without (start-up is a second less)
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"test: importing {name} is refused")
sys.meta_path.insert(0, NoTorch())
from fetalbio.cli import app
app()
"""


def test_onnx_runtime_measures_without_torch(tmp_path: Path) -> None:
    """The shipped two-stage model on ONNX Runtime, in a Python that cannot import torch, measures
    the sample heads as torch does (within 0.01 mm, the same flags)."""
    images = tmp_path / "images"
    images.mkdir()
    names = sorted(p.name for p in (SAMPLE / "images").glob("*.png"))[:6]
    for n in names:
        shutil.copy(SAMPLE / "images" / n, images / n)
    common = ["predict", "--no-progress", "--model", PRETRAINED, "--images", images, "--spacing", SAMPLE / "hc18_reference.csv"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, common), "--out", str(tmp_path / "onnx.csv")],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"runtime: onnx ({PRETRAINED.stem}.onnx)" in res.stderr
    _invoke([*common, "--out", tmp_path / "torch.csv", "--runtime", "torch"])
    a, b = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert list(a["image_name"]) == names and list(a["flag"]) == list(b["flag"])
    assert (a["flag"] != "failed").sum() >= 4, "too few measurements to compare"
    for col in ("hc_mm", "bpd_mm", "ofd_mm", "hc_mm_low", "hc_mm_high"):
        np.testing.assert_allclose(a[col], b[col], atol=0.01, rtol=0, err_msg=col)
