"""Landmark task: heatmap or coordinate-regression networks predicting the four points."""

from __future__ import annotations

import numpy as np
import torch

from fetalbio.codecs import build_codec
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import Letterbox
from fetalbio.geometry.points import canonical_permutation
from fetalbio.losses import build_loss, geometric_prior
from fetalbio.metrics.landmarks import mre, radial_errors
from fetalbio.models import build_model
from fetalbio.tasks.base import ImagePrediction, Sample, Task
from fetalbio.variants import VariantSpec

N_POINTS = 4


class LandmarkTask(Task):
    family = "landmark"

    def __init__(self, spec: VariantSpec, vcfg: VariantConfig, tcfg: TrainConfig) -> None:
        self.model = build_model(spec.model, 1, N_POINTS, **vcfg.arch)
        codec_cfg = dict(vcfg.codec)
        if spec.decoder and "decoder" not in codec_cfg and spec.codec == "heatmap":
            codec_cfg["decoder"] = spec.decoder
        self.codec = build_codec(spec.codec, (tcfg.input_width, tcfg.input_height), self.model.output_stride, **codec_cfg)
        self.loss_fn = build_loss(vcfg.loss or spec.loss, **vcfg.loss_cfg)
        self.prior_weight = vcfg.geometric_prior

    measure_for_score = True

    def trainable(self, weight: float, has_mask: bool) -> bool:
        return weight > 0

    score_kind = "mre_px"

    def score_fn(self, val):
        """Lower is better: MRE in original px."""
        ref = np.stack([s.letterbox.to_original(s.points) for s in val.samples])

        def score(preds: list[ImagePrediction]) -> float:
            pts = np.stack([p.points for p in preds])
            err = radial_errors(pts, ref)["px"]
            return float(mre(err)) if np.isfinite(err).any() else float("inf")

        return score

    def targets(self, sample: Sample, image: np.ndarray, points: np.ndarray | None, mask: np.ndarray | None) -> dict[str, np.ndarray]:
        assert points is not None, "a landmark task needs points"
        enc = self.codec.encode(points)
        return {"target": enc[self.codec.target_key].astype(np.float32), "point_weight": enc["weights"].astype(np.float32)}

    def loss(self, output, batch):
        loss = self.loss_fn(output, batch["target"], sample_weight=batch["weight"], channel_weight=batch["point_weight"])
        if self.prior_weight > 0:
            final = output[-1] if isinstance(output, (list, tuple)) else output
            coords = self.codec.decode_torch(final.float())
            w = batch["weight"]
            loss = loss + self.prior_weight * (geometric_prior(coords) * w).sum() / w.sum().clamp_min(1e-12)
        return loss

    def decode(self, output: torch.Tensor, letterboxes: list[Letterbox], measure: bool = True) -> list[ImagePrediction]:
        pts_in, unc_in = self.codec.decode(output.detach().float().cpu().numpy())
        preds = []
        for p, u, lb in zip(pts_in, unc_in, letterboxes):
            pts = lb.to_original(p)
            unc = np.asarray(u, dtype=np.float64) / float(np.mean(lb.scale))
            if not np.all(np.isfinite(pts)):
                preds.append(ImagePrediction(np.full((4, 2), np.nan), np.full(4, np.nan), "failed", "non_finite_output"))
                continue
            perm = canonical_permutation(pts)
            preds.append(ImagePrediction(pts[perm], unc[perm]))
        return preds
