"""The segmentation task's edge-offset calibration: measured on training masks, applied at decode."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import Letterbox
from fetalbio.geometry import Ellipse, ellipse_to_mask, mask_to_ellipse, shrink_ellipse
from fetalbio.tasks import build_task

TCFG = TrainConfig(input_width=64, input_height=64, device="cpu")
SIZE = (200, 160)
E = Ellipse(100.2, 80.4, 70.0, 50.0, 0.3)  # the outline the sonographer measured


def _task(mask_source: str = "sonographer", **post):
    return build_task("seg_unet", VariantConfig(arch={"base_width": 4, "depth": 2}, mask_source=mask_source, postprocess=post), TCFG)


def _rows(root: Path, offset: float, n: int = 5, px: float = 0.1) -> pd.DataFrame:
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"{i:03d}_HC.png"
        cv2.imwrite(str(root / "masks" / name), ellipse_to_mask(shrink_ellipse(E, -offset), SIZE) * 255)
        rows.append({"image_name": name, "mask_path": f"masks/{name}", "hc_mm": E.perimeter_px * px, "pixel_size_mm": px})
    return pd.DataFrame(rows)


def test_calibrate_measures_the_offset_of_the_training_masks(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 1.4)
    # rows without a reference HC or a mask cannot tell the convention: not measured
    extra = pd.DataFrame([{"image_name": "900_HC.png", "mask_path": "masks/000_HC.png", "hc_mm": np.nan, "pixel_size_mm": 0.1},
                          {"image_name": "901_HC.png", "mask_path": "", "hc_mm": 50.0, "pixel_size_mm": 0.1}])
    task = _task()
    assert task.edge_offset_px == 0.0  # 'auto' before calibration
    cal = task.calibrate(pd.concat([rows, extra], ignore_index=True), tmp_path)
    assert cal["edge_offset_n"] == 5
    assert cal["edge_offset_px"] == pytest.approx(1.4, abs=0.15) and task.edge_offset_px == cal["edge_offset_px"]


def test_calibrate_keeps_a_fixed_offset_and_ignores_landmark_masks(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 1.4, n=2)
    assert _task(edge_offset_px=0.7).calibrate(rows, tmp_path) == {"edge_offset_px": 0.7, "edge_offset_n": 0}
    assert _task(edge_offset_px=0).calibrate(rows, tmp_path) == {"edge_offset_px": 0.0, "edge_offset_n": 0}
    assert _task(mask_source="landmarks").calibrate(rows, tmp_path) == {"edge_offset_px": 0.0, "edge_offset_n": 0}


@pytest.mark.parametrize("bad", ["big", True, float("nan"), [1.0]])
def test_bad_edge_offset_refused(bad) -> None:
    with pytest.raises(ValueError, match="edge_offset_px"):
        _task(edge_offset_px=bad)


def test_decode_moves_the_fitted_ellipse_inward_by_the_offset() -> None:
    task = _task()
    e_in = Ellipse(31.6, 30.2, 22.0, 15.0, 0.4)
    logits = torch.from_numpy(np.where(ellipse_to_mask(e_in, (64, 64)) > 0, 10.0, -10.0).astype(np.float32))[None, None]
    lb = Letterbox.fit((64, 64), (64, 64))
    p0 = task.decode(logits, [lb])[0]
    task.set_calibration({"edge_offset_px": 2.0, "edge_offset_n": 10})
    p2 = task.decode(logits, [lb])[0]
    assert p0.status == p2.status == "ok"

    def lengths(p) -> np.ndarray:
        return np.linalg.norm(p.points[[1, 3]] - p.points[[0, 2]], axis=1)

    np.testing.assert_allclose(lengths(p0) - lengths(p2), [4.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(p2.points.mean(axis=0), p0.points.mean(axis=0), atol=1e-6)  # same centre
    assert p2.extra["ellipse"][2] == pytest.approx(p0.extra["ellipse"][2] - 2.0)
    # a fitted ellipse no larger than the offset is a failure, not a negative axis
    task.set_calibration({"edge_offset_px": 50.0})
    assert task.decode(logits, [lb])[0].status == "failed"


def test_set_calibration_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown calibration"):
        _task().set_calibration({"edge_offset": 1.0})
    lm = build_task("hm_unet", VariantConfig(arch={"base_width": 4, "depth": 2}), TCFG)
    assert lm.calibrate(pd.DataFrame(), Path(".")) == {}
    with pytest.raises(ValueError, match="takes no calibration"):
        lm.set_calibration({"edge_offset_px": 1.0})


def test_decode_at_network_resolution_matches_a_fit_at_full_resolution() -> None:
    """The ellipse is fitted to the network-size map and mapped to the original image; a fit to
    the same map resized to the original image (the slow path) finds the same ellipse."""
    task = _task()
    src = (400, 270)  # an 800 x 540 image at half size, letterboxed into 64 x 64
    lb = Letterbox.fit(src, (64, 64))
    e_orig = Ellipse(205.3, 131.8, 120.0, 88.0, 0.35)
    # a soft map: the letterboxed image of the full-size mask (area averaging), as logits
    soft = lb.apply(ellipse_to_mask(e_orig, src).astype(np.float32), cv2.INTER_AREA)
    logits = torch.from_numpy(np.log(np.clip(soft, 1e-4, 1 - 1e-4) / np.clip(1 - soft, 1e-4, 1)).astype(np.float32))[None, None]
    p = task.decode(logits, [lb])[0]
    assert p.status == "ok"
    fast = Ellipse(*p.extra["ellipse"])
    full = mask_to_ellipse(np.clip(lb.unapply(soft), 0, 1), inlier_threshold_px=1.0 / float(np.mean(lb.scale)))
    assert full.ok
    for got in (fast, full.ellipse):
        assert abs(got.a - e_orig.a) < 0.6 and abs(got.b - e_orig.b) < 0.6
        assert abs(got.cx - e_orig.cx) < 0.6 and abs(got.cy - e_orig.cy) < 0.6
    # the full-size mask is drawn on demand, once, on the original grid
    assert p.mask is None
    m = p.full_mask()
    assert m.shape == (src[1], src[0]) and p.full_mask() is m
    assert abs(int(m.sum()) - int(ellipse_to_mask(e_orig, src).sum())) < 0.02 * m.sum()
