"""Segmentation task: skull mask -> robust ellipse fit -> axis endpoints as OFD/BPD."""

from __future__ import annotations

import numpy as np
import torch

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import Letterbox
from fetalbio.geometry.masks import fill_holes, largest_component, mask_to_ellipse
from fetalbio.losses import build_loss
from fetalbio.models import build_model
from fetalbio.tasks.base import ImagePrediction, Sample, Task
from fetalbio.variants import VariantSpec

POSTPROCESS_DEFAULTS = {"threshold": 0.5, "method": "ransac", "subpixel": True}
# The boundary of a mask predicted at network resolution and resized to the original image is
# only as precise as one *network-input* pixel: the ellipse fit's inlier band is set in those
# units and converted per image (``inlier_threshold_px = inlier_band_input_px / scale``).
DEFAULT_INLIER_BAND_INPUT_PX = 1.0


class SegmentationTask(Task):
    family = "segmentation"
    needs_mask = True

    def __init__(self, spec: VariantSpec, vcfg: VariantConfig, tcfg: TrainConfig) -> None:
        self.model = build_model(spec.model, 1, 1, **vcfg.arch)
        if self.model.output_stride != 1:
            raise ValueError(f"segmentation model {spec.model!r} must output full resolution, has stride {self.model.output_stride}")
        self.loss_fn = build_loss(vcfg.loss or spec.loss, **vcfg.loss_cfg)
        self.mask_source = vcfg.mask_source
        post = {**POSTPROCESS_DEFAULTS, **vcfg.postprocess}
        self.inlier_band = float(post.pop("inlier_band_input_px", DEFAULT_INLIER_BAND_INPUT_PX))
        self.post = post
        try:  # fail at construction, not after training, on a bad postprocess key
            mask_to_ellipse(np.zeros((8, 8), np.float32), **self.post)
        except TypeError as exc:
            raise TypeError(f"bad postprocess option: {exc}") from None

    def trainable(self, weight: float, has_mask: bool) -> bool:
        return has_mask if self.mask_source == "sonographer" else weight > 0

    def targets(self, sample: Sample, image: np.ndarray, points: np.ndarray | None, mask: np.ndarray | None) -> dict[str, np.ndarray]:
        assert mask is not None, "a segmentation task needs a mask"
        return {"target": (mask > 0).astype(np.float32)[None]}

    def loss(self, output, batch):
        return self.loss_fn(output, batch["target"], sample_weight=None)

    def decode(self, output: torch.Tensor, letterboxes: list[Letterbox], measure: bool = True) -> list[ImagePrediction]:
        probs = torch.sigmoid(output.detach().float()).cpu().numpy()[:, 0]
        preds = []
        for prob_in, lb in zip(probs, letterboxes):
            prob = np.clip(lb.unapply(prob_in.astype(np.float32)), 0.0, 1.0)
            mask = fill_holes(largest_component((prob >= self.post["threshold"]).astype(np.uint8)))
            if not measure:
                preds.append(ImagePrediction(np.full((4, 2), np.nan), np.full(4, np.nan), "not_measured", mask=mask))
                continue
            res = mask_to_ellipse(prob, inlier_threshold_px=self.inlier_band / float(np.mean(lb.scale)), **self.post)
            unc = np.full(4, res.residual_px)
            extra = {"fit_residual_px": res.residual_px, "inlier_fraction": res.inlier_fraction}
            if res.ok:
                preds.append(ImagePrediction(np.asarray(res.points, dtype=np.float64), unc, mask=mask, extra=extra))
            else:
                preds.append(ImagePrediction(np.full((4, 2), np.nan), np.full(4, np.nan), "failed", res.reason, mask=mask, extra=extra))
        return preds
