"""The ellipse fit is not what limits HC accuracy: decoded exactly as predictions are
(:meth:`SegmentationTask.decode`: network-size map, iso-contour, robust fit, exact map back,
mask-edge offset), the sonographer's own masks give back the sonographer's reference HC."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import Letterbox
from fetalbio.geometry import ramanujan_perimeter
from fetalbio.geometry.masks import estimate_edge_offset_px
from fetalbio.tasks import build_task

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


@pytest.mark.parametrize("size", [(128, 96), (192, 128)])
def test_sample_masks_at_network_size_give_back_the_reference_hc(size: tuple[int, int]) -> None:
    ref = pd.read_csv(SAMPLE / "hc18_reference.csv")
    masks = [cv2.imread(str(SAMPLE / "masks" / n), cv2.IMREAD_GRAYSCALE) > 127 for n in ref["image_name"]]
    offset, n = estimate_edge_offset_px([(m, hc / px) for m, hc, px in zip(masks, ref["hc_mm"], ref["pixel_size_mm"])])
    assert n == len(ref) and 1.2 < offset < 1.6  # the HC18 outline convention (docs/variants.md)
    task = build_task("seg_unet", VariantConfig(arch={"base_width": 4, "depth": 2}), TrainConfig(input_width=size[0], input_height=size[1], device="cpu"))
    task.set_calibration({"edge_offset_px": offset})
    errors = []
    for m, hc, px in zip(masks, ref["hc_mm"], ref["pixel_size_mm"]):
        lb = Letterbox.fit((m.shape[1], m.shape[0]), size)
        # what a perfect network would output: the mask area-averaged onto the network grid
        soft = np.clip(lb.apply(m.astype(np.float32), cv2.INTER_AREA), 1e-4, 1 - 1e-4)
        p = task.decode(torch.from_numpy(np.log(soft / (1 - soft)))[None, None], [lb])[0]
        assert p.status == "ok", p.reason
        _, _, a, b, _ = p.extra["ellipse"]
        errors.append(float(ramanujan_perimeter(a, b)) * px - hc)
    errors = np.asarray(errors)
    assert np.mean(np.abs(errors)) < 0.1 and np.max(np.abs(errors)) < 0.5  # mm
