"""Segmentation task: skull mask -> robust ellipse fit -> axis endpoints as OFD/BPD.

Annotation convention: a sonographer mask is filled to the *outer* edge of the drawn outline,
while the reference HC is the perimeter of the outline's centre line (see
:mod:`fetalbio.geometry.masks`). A network trained on such masks reproduces their edge, so the
fitted ellipse is moved inward by ``edge_offset_px`` (original pixels). With
``postprocess.edge_offset_px: auto`` (default for ``mask_source: sonographer``) the offset is
measured by :meth:`SegmentationTask.calibrate` on the training rows' masks against their
reference HC, and travels in the checkpoint; a number fixes it; 0 switches it off. Masks drawn
from the landmarks (``mask_source: landmarks``) have no such outline: ``auto`` means 0 there.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import Letterbox
from fetalbio.geometry.ellipse import ellipse_endpoints, transform_ellipse
from fetalbio.geometry.masks import estimate_edge_offset_px, fill_holes, largest_component, mask_to_ellipse, shrink_ellipse
from fetalbio.io import read_mask
from fetalbio.metrics.segmentation import dice
from fetalbio.tasks.base import ImagePrediction, Sample, Task, as_numpy
from fetalbio.variants import VariantSpec

# Least squares on every boundary point of the cleaned mask: on the inner-validation images of
# the five full-data fold models (320 images, never their held-out fold) it measured HC closer to
# the sonographer than RANSAC or IRLS at any band (README "Ellipse fit").
POSTPROCESS_DEFAULTS = {"threshold": 0.5, "method": "plain", "subpixel": True, "refine": False}
# The ellipse is fitted at network resolution, so its inlier band is in network-input pixels. It
# is RANSAC's and IRLS's inlier band, and for every method the band of the accepted-fit check
# (`min_inlier_fraction` of the boundary points within it) and of the reported residual.
DEFAULT_INLIER_BAND_INPUT_PX = 3.0
# Training masks measured for the edge offset (its spread is ~0.06 px: 100 pin the median).
CALIBRATION_ROWS = 100


def calibration_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The training rows an edge calibration measures: those with a mask, a reference HC and a
    pixel size, sorted by name, at most :data:`CALIBRATION_ROWS` of them evenly spaced
    (deterministic)."""
    usable = rows[(rows["mask_path"].fillna("") != "") & (rows["hc_mm"] > 0) & (rows["pixel_size_mm"] > 0)]
    usable = usable.sort_values("image_name").reset_index(drop=True)
    if len(usable) > CALIBRATION_ROWS:
        usable = usable.iloc[np.linspace(0, len(usable) - 1, CALIBRATION_ROWS).round().astype(int)]
    return usable


class SegmentationTask(Task):
    family = "segmentation"
    needs_mask = True

    def __init__(self, spec: VariantSpec, vcfg: VariantConfig, tcfg: TrainConfig, network: bool = True) -> None:
        self.model = self.loss_fn = None  # network=False: decoding only (the networks run elsewhere, e.g. ONNX Runtime; no torch)
        if network:
            from fetalbio.losses import build_loss
            from fetalbio.models import build_model

            self.model = build_model(spec.model, 1, 1, **vcfg.arch)
            if self.model.output_stride != 1:
                raise ValueError(f"segmentation model {spec.model!r} must output full resolution, has stride {self.model.output_stride}")
            self.loss_fn = build_loss(vcfg.loss or spec.loss, **vcfg.loss_cfg)
        self.mask_source = vcfg.mask_source
        post = {**POSTPROCESS_DEFAULTS, **vcfg.postprocess}
        self.inlier_band = float(post.pop("inlier_band_input_px", DEFAULT_INLIER_BAND_INPUT_PX))
        offset = post.pop("edge_offset_px", "auto")
        if offset != "auto" and (isinstance(offset, bool) or not isinstance(offset, (int, float)) or not np.isfinite(offset)):
            raise ValueError(f"postprocess.edge_offset_px must be 'auto' or a number of pixels, got {offset!r}")
        self.edge_offset_setting = offset
        # until calibrate() / set_calibration(): a fixed number as given, 'auto' as 0
        self.edge_offset_px = 0.0 if offset == "auto" else float(offset)
        self.post = post
        try:  # fail at construction, not after training, on a bad postprocess key
            mask_to_ellipse(np.zeros((8, 8), np.float32), **self.post)
        except TypeError as exc:
            raise TypeError(f"bad postprocess option: {exc}") from None

    def trainable(self, weight: float, has_mask: bool) -> bool:
        return has_mask if self.mask_source == "sonographer" else weight > 0

    score_kind = "one_minus_dice"

    def score_fn(self, val):
        """Lower is better: 1 - mean Dice on the original grid."""
        refs = [s.letterbox.unapply(s.mask.astype(np.float32)) >= 0.5 for s in val.samples]

        def score(preds: list[ImagePrediction]) -> float:
            return 1.0 - float(np.mean([dice(p.full_mask(), r) for p, r in zip(preds, refs)]))

        return score

    def edge_offset_for(self, frame) -> float:
        """The inward move (original px) of an ellipse decoded in ``frame``."""
        return self.edge_offset_px

    def calibrate(self, rows: pd.DataFrame, table_dir: Path) -> dict:
        """``edge_offset_px``: for ``auto`` with sonographer masks, the median gap between the
        training masks' edge and their reference HC outline (rows with a mask, a pixel size and
        a reference HC; at most 100 of them); otherwise the configured value."""
        n = 0
        if self.edge_offset_setting == "auto" and self.mask_source == "sonographer":
            usable = calibration_rows(rows)
            pairs = []
            for r in usable.itertuples(index=False):
                pairs.append((read_mask(Path(table_dir) / r.mask_path), float(r.hc_mm) / float(r.pixel_size_mm)))
            self.edge_offset_px, n = estimate_edge_offset_px(pairs, max_items=CALIBRATION_ROWS)
        return {"edge_offset_px": float(self.edge_offset_px), "edge_offset_n": int(n)}

    def set_calibration(self, calibration: dict) -> None:
        unknown = set(calibration) - {"edge_offset_px", "edge_offset_n"}
        if unknown:
            raise ValueError(f"unknown calibration keys {sorted(unknown)}")
        self.edge_offset_px = float(calibration.get("edge_offset_px", self.edge_offset_px))

    def targets(self, sample: Sample, image: np.ndarray, points: np.ndarray | None, mask: np.ndarray | None) -> dict[str, np.ndarray]:
        assert mask is not None, "a segmentation task needs a mask"
        return {"target": (mask > 0).astype(np.float32)[None]}

    def loss(self, output, batch):
        return self.loss_fn(output, batch["target"], sample_weight=None)

    def decode(self, output, letterboxes: list[Letterbox], measure: bool = True) -> list[ImagePrediction]:
        """The ellipse is fitted at network resolution, to the sub-pixel ``threshold`` iso-contour
        of the probability map, then mapped exactly to the original image (an affine map takes an
        ellipse to an ellipse). The full-size mask is drawn only when asked for
        (:meth:`ImagePrediction.full_mask`). ``output``: the logits, a torch tensor or a numpy
        array (ONNX Runtime)."""
        probs = sigmoid(output)[:, 0]
        preds = []
        for prob_in, lb in zip(probs, letterboxes):
            prob_in = np.clip(prob_in.astype(np.float32), 0.0, 1.0)
            crop = lb.crop(prob_in)
            mask_factory = partial(full_size_mask, prob_in, lb, float(self.post["threshold"]))
            if not measure:
                preds.append(ImagePrediction(np.full((4, 2), np.nan), np.full(4, np.nan), "not_measured", mask_factory=mask_factory))
                continue
            res = mask_to_ellipse(crop, inlier_threshold_px=self.inlier_band, **self.post)
            px_per_input_px = float(np.mean(1.0 / np.asarray(lb.scale)))
            residual = res.residual_px * px_per_input_px
            unc = np.full(4, residual)
            extra = {"fit_residual_px": residual, "inlier_fraction": res.inlier_fraction}
            e = transform_ellipse(res.ellipse, lb.crop_to_original()) if res.ok else None
            reason = res.reason
            offset = self.edge_offset_for(lb)
            if e is not None and offset and e.b <= offset:
                e, reason = None, "too_small"
            if e is not None:
                e = shrink_ellipse(e, offset) if offset else e
                extra["ellipse"] = e.as_tuple()
                preds.append(ImagePrediction(np.asarray(ellipse_endpoints(e), dtype=np.float64), unc, extra=extra, mask_factory=mask_factory))
            else:
                preds.append(ImagePrediction(np.full((4, 2), np.nan), np.full(4, np.nan), "failed", reason, extra=extra, mask_factory=mask_factory))
        return preds


def sigmoid(logits) -> np.ndarray:
    """Probabilities of a batch of logits as float32 numpy: torch's sigmoid for a tensor (what
    training and evaluation decode with), the same function in numpy for an array."""
    if isinstance(logits, np.ndarray):
        x = as_numpy(logits)
        with np.errstate(over="ignore"):  # not scipy.special.expit: it differs by 1 ulp on ~16 % of float32 inputs, and the ONNX side must match torch
            return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    import torch

    return as_numpy(torch.sigmoid(logits.detach().float()))


def full_size_mask(prob_in: np.ndarray, lb: Letterbox, threshold: float) -> np.ndarray:
    """``(H, W)`` uint8 {0, 1} head mask on the original grid from a network-input probability
    map: :meth:`Letterbox.unapply` (bilinear), threshold, largest component, holes filled."""
    return fill_holes(largest_component((lb.unapply(prob_in) >= threshold).astype(np.uint8)))
