"""The refinement stage: recovering an ellipse from a perturbed coarse one, keeping the coarse
result when a crop is impossible, reproducible training crops, crop-frame edge calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.geometry.ellipse import Ellipse, ellipse_to_mask
from fetalbio.tasks import build_task
from fetalbio.tasks.base import ImagePrediction
from fetalbio.tasks.crop_dataset import CropDataset
from fetalbio.tasks.refine import ellipse_prediction

TCFG = TrainConfig(input_width=160, input_height=128, device="cpu")


class Oracle(torch.nn.Module):
    """Logits of 'bright pixel' for a normalised crop: segments a drawn bright ellipse exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * x


def _task(**crop):
    crop.setdefault("combine", "refined")
    vcfg = VariantConfig(arch={"base_width": 4, "depth": 3}, postprocess={"edge_offset_px": 0}, crop=crop)
    return build_task("refine", vcfg, TCFG)


def _image(e: Ellipse, size=(800, 540)) -> np.ndarray:
    return (ellipse_to_mask(e, size) > 0).astype(np.uint8) * 200 + 20


@pytest.mark.parametrize("passes,tta", [(1, "none"), (2, "none"), (1, "hflip"), (1, "hvflip")])
def test_refinement_recovers_the_semi_axes_from_a_perturbed_coarse_ellipse(passes: int, tta: str) -> None:
    truth = Ellipse(390.3, 262.8, 150.4, 118.7, 0.7)
    coarse = Ellipse(398.0, 255.0, 150.4 * 1.08, 118.7 * 0.93, 0.7 + math.radians(9))
    task = _task(passes=passes, tta=tta)
    (p,) = task.follow([_image(truth)], [ellipse_prediction(coarse)], nets=[Oracle()])
    got = Ellipse(*p.extra["ellipse"])
    # the rasterised drawing itself is the reference: within 1 px of the drawn semi-axes
    assert abs(got.a - truth.a) < 1.0 and abs(got.b - truth.b) < 1.0
    assert math.hypot(got.cx - truth.cx, got.cy - truth.cy) < 1.0
    assert p.extra["coarse_ellipse"] == pytest.approx(coarse.as_tuple())
    assert p.extra["refine_passes"] == passes


class Ramp(torch.nn.Module):
    """Not mirror-symmetric: the input plus a ramp across the width (and a smaller one down)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return x + torch.linspace(0, 1, w) + 0.5 * torch.linspace(0, 1, h)[:, None]


@pytest.mark.parametrize("tta", ["hflip", "hvflip"])
def test_test_time_mirroring_maps_each_view_back_before_averaging(tta: str) -> None:
    """Each mirrored crop's output is mirrored back: the ramp averages to its mean, the image
    part stays in place (on torch and on numpy, e.g. ONNX Runtime, outputs alike)."""
    from fetalbio.tasks.refine import TTA_VIEWS, _flip, _views_mean

    views = TTA_VIEWS[tta]
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 10)).astype(np.float32)
    xv = np.concatenate([_flip(x, ax) for ax in views])
    got_torch = _views_mean(Ramp()(torch.from_numpy(xv)), 3, views).numpy()
    got_numpy = _views_mean(Ramp()(torch.from_numpy(xv)).numpy(), 3, views)
    ramp = Ramp()(torch.zeros(1, 1, 8, 10)).numpy()
    want = x + np.mean([_flip(ramp, ax) for ax in views], axis=0)
    np.testing.assert_allclose(got_torch, want, atol=1e-6)
    np.testing.assert_allclose(got_numpy, want, atol=1e-6)
    # the Oracle segments the mirrored crops as the crop itself: mirroring changes nothing
    task = _task()
    img = _image(Ellipse(400.0, 270.0, 150.0, 110.0, 0.3))
    coarse = ellipse_prediction(Ellipse(405.0, 265.0, 155.0, 105.0, 0.4))
    (plain,) = task.follow([img], [coarse], nets=[Oracle()])
    task.tta = tta
    (mirrored,) = task.follow([img], [coarse], nets=[Oracle()])
    assert mirrored.extra["ellipse"] == pytest.approx(plain.extra["ellipse"], abs=1e-6)


def test_combine_mean_reports_the_mean_of_both_stages() -> None:
    truth = Ellipse(390.3, 262.8, 150.4, 118.7, 0.02)
    coarse = Ellipse(398.0, 255.0, 160.0, 110.0, math.pi - 0.04)  # the angle wraps around 180 degrees
    (p,) = _task(combine="mean").follow([_image(truth)], [ellipse_prediction(coarse)], nets=[Oracle()])
    refined, got = Ellipse(*p.extra["refined_ellipse"]), Ellipse(*p.extra["ellipse"])
    assert got.a == pytest.approx((coarse.a + refined.a) / 2) and got.cx == pytest.approx((coarse.cx + refined.cx) / 2)
    assert abs(math.remainder(got.theta - (refined.theta - 0.03), math.pi)) < 0.02
    assert np.allclose(p.points, __import__("fetalbio.geometry.ellipse", fromlist=["x"]).ellipse_endpoints(got))


def test_a_coarse_result_that_cannot_be_cropped_is_kept_with_the_reason() -> None:
    task = _task()
    img = _image(Ellipse(400, 270, 100, 80, 0.0))
    failed = ImagePrediction(np.full((4, 2), np.nan), np.full(4, np.nan), "failed", "no_component")
    outside = ellipse_prediction(Ellipse(3000.0, 3000.0, 100.0, 80.0, 0.0))
    tiny = ellipse_prediction(Ellipse(400.0, 270.0, 3.0, 2.0, 0.0))
    out = task.follow([img, img, img], [failed, outside, tiny], nets=[Oracle()])
    assert out[0].status == "failed" and out[0].reason == "no_component"
    assert "mostly outside the image" in out[1].extra["refine"] and out[1].points == pytest.approx(outside.points)
    assert "degenerate coarse ellipse" in out[2].extra["refine"]
    assert all("coarse_ellipse" not in p.extra for p in out)


def test_training_crops_are_reproducible_and_the_mask_moves_with_the_image(synth_clean) -> None:
    clean, d = synth_clean
    task = _task()
    ds = CropDataset(clean.iloc[:3], d, task, TCFG, train=True, seed=5)
    ds.set_epoch(123)
    a = [ds[i] for i in range(3)]
    ds.set_epoch(999)
    _ = ds[0]
    ds.set_epoch(123)
    b = [ds[i] for i in range(3)]
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["target"], y["target"])
    assert a[0]["image"].shape == (1, 128, 160) and a[0]["target"].shape == (1, 128, 160)
    # the skull mask in the crop is where the head is: the target covers a central region
    t = a[0]["target"][0].numpy()
    assert 0.15 < t.mean() < 0.7 and t[64, 80] == 1.0


def test_edge_calibration_in_the_crop_frame_models_a_constant_outline_width(synth_clean) -> None:
    clean, d = synth_clean
    vcfg = VariantConfig(arch={"base_width": 4, "depth": 3}, crop={})
    task = build_task("refine", vcfg, TCFG)
    cal = task.calibrate(clean, d)
    assert cal["edge_offset_n"] >= 10
    # the offset predicted for any head is close to the measured per-image offsets: the
    # residual by head-size tercile is small
    for t in (1, 2, 3):
        assert abs(cal[f"edge_offset_residual_t{t}_px"]) < 0.5
    task2 = build_task("refine", vcfg, TCFG)
    task2.set_calibration(cal)
    assert task2.edge_offset_px == cal["edge_offset_px"] and task2.edge_offset_per_crop_px == cal["edge_offset_per_crop_px"]


@pytest.mark.parametrize("crop,msg", [({"span": 0.9}, "crop.span"), ({"passes": 0}, "crop.passes"), ({"zoom": 2}, "unknown crop option"),
                                      ({"jitter": {"flip": 2}}, "jitter.flip"), ({"combine": "max"}, "crop.combine"),
                                      ({"tta": "rot90"}, "crop.tta")])
def test_bad_crop_options_are_refused_with_the_option_named(crop: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        _task(**crop)


@pytest.mark.parametrize("override,msg", [({"passes": 0}, "crop.passes"), ({"passes": 6}, "crop.passes"), ({"combine": "max"}, "crop.combine"),
                                          ({"tta": "flip"}, "crop.tta")])
def test_refine_stage_overrides_are_checked_like_the_configuration(tmp_path, override: dict, msg: str) -> None:
    """``fetalbio refine --passes/--combine/--tta`` are refused with the option named, before any fold is read."""
    import pandas as pd

    from fetalbio.engine.refine_run import refine_heldout

    with pytest.raises(ValueError, match=msg):
        refine_heldout(pd.DataFrame({"image_name": []}), tmp_path, tmp_path / "coarse", tmp_path / "refine", tmp_path / "out", **override)
    assert not (tmp_path / "out").exists()
