"""A model file is an ordered list of stages: the predictor and the ONNX export iterate over them,
so a third stage needs no edit there (tiny untrained networks, two sample images)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from stage_cli import app
from typer.testing import CliRunner

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.inference.onnx_form import OnnxBackend, load_onnx_form
from fetalbio.inference.predictor import Predictor
from fetalbio.io import read_gray8
from fetalbio.model_file import LoadedModel, LoadedStage, StageWeights, load_model, model_payload, save_model
from fetalbio.tasks import build_task
from fetalbio.tasks.base import Task
from fetalbio.variants import VARIANTS

torch.set_num_threads(1)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
NAMES = ["000_HC.png", "006_HC.png"]
TCFG = TrainConfig(input_width=64, input_height=64, device="cpu")
VCFG = VariantConfig(arch={"base_width": 4, "depth": 2})


def _weights(variant: str, seed: int, calibration: dict) -> StageWeights:
    torch.manual_seed(seed)
    sd = build_task(variant, VCFG, TCFG).model.state_dict()
    role = "coarse" if variant == "seg_unet" else "refine"
    return StageWeights(role, variant, VCFG, TCFG, [sd], calibration)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    """A two-stage model and the same with a second refinement stage (variant ``refine_again``,
    registered for this module only)."""
    d = tmp_path_factory.mktemp("stages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(VARIANTS, "refine_again", VARIANTS["refine"])
        stages = [_weights("seg_unet", 0, {"edge_offset_px": 1.0}), _weights("refine", 0, {"edge_offset_px": 0.5}),
                  _weights("refine_again", 3, {"edge_offset_px": 0.25})]
        save_model(d / "two.pt", model_payload("seg_unet_refined", stages[:2], {"test": True}))
        save_model(d / "three.pt", model_payload("seg_unet_refined_twice", stages, {"test": True}))
        yield {"dir": d, "two": d / "two.pt", "three": d / "three.pt"}


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [read_gray8(SAMPLE / "images" / n).pixels for n in NAMES]


class _Identity(Task):
    """A later stage that runs its network (an identity) and passes the predictions on unchanged."""

    family = "identity"

    def __init__(self) -> None:
        self.model = torch.nn.Identity()
        self.seen: list[np.ndarray] = []

    def follow(self, images, previous, forward=None, **torch_run):
        x = np.full((1, 1, 8, 8), 3.0, np.float32)
        self.seen.append(np.asarray(forward(x)))
        return previous


def test_an_identity_later_stage_changes_nothing(models, images) -> None:
    two = load_model(models["two"])
    ident = _Identity()
    three = LoadedModel([*two.stages, LoadedStage("identity", "identity", [ident], TCFG)], two.family, two.uncertainty_threshold_px, two.meta)
    got, want = Predictor(three).predict_arrays(images), Predictor(two).predict_arrays(images)
    assert any("refine_passes" in p.extra for p in want), "the refinement ran on no image"
    for a, b in zip(got, want, strict=True):
        assert a.status == b.status and a.extra == b.extra
        np.testing.assert_array_equal(a.points, b.points)
    assert len(ident.seen) == 1 and (ident.seen[0] == 3.0).all()  # its own networks ran, once


def test_a_third_stage_runs_after_the_second_in_torch_and_onnx(models, images, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(VARIANTS, "refine_again", VARIANTS["refine"])
        path = shutil.copy(models["three"], tmp_path / "three.pt")
        res = CliRunner().invoke(app, ["export", str(path), "--format", "onnx"])
        assert res.exit_code == 0, res.output
        m = json.loads(Path(path).with_suffix(".onnx.json").read_text())
        assert [st["role"] for st in m["stages"]] == ["coarse", "refine", "refine"] and [st["stage_value"] for st in m["stages"]] == [0, 1, 2]
        assert [o["name"] for st in m["stages"] for o in st["outputs"]] == ["coarse_logits", "refine1_logits", "refine2_logits"]
        form = load_onnx_form(path, threads=1, model_file=path)  # its checks and a dry run of every stage
        torch_pred = Predictor(load_model(path))
        onnx_pred = Predictor(form.loaded_model(), "cpu", OnnxBackend(form))
        x = np.random.default_rng(0).standard_normal((2, 1, 64, 64)).astype(np.float32)
        for i in range(3):
            a, b = torch_pred.forward(x, i).numpy(), onnx_pred.forward(x, i)
            assert float(np.abs(a - b).max()) <= 1e-4
        every = form.session.run(None, {"image": x, "stage": np.array(2)})
        assert [o.shape[0] for o in every] == [0, 0, 2]  # the stages not run: empty
        two = Predictor(load_model(models["two"]))
        got = torch_pred.predict_arrays(images)
        # the third stage takes the second's predictions, with its own networks
        second = two.predict_arrays(images)
        want = torch_pred.model.stages[2].tasks[0].follow(images, second, forward=lambda b: torch_pred.forward(b, 2))
        assert any(p.extra.get("refine_passes") == 2 for p in got), "the third stage refined no image"
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a.points, b.points)
        assert len(onnx_pred.predict_arrays(images)) == len(images)
