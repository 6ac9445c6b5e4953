"""Landmark task: heatmap or coordinate-regression networks predicting the four points."""

from __future__ import annotations

import numpy as np

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import Letterbox
from fetalbio.geometry.points import canonical_permutation
from fetalbio.metrics.landmarks import mre, radial_errors
from fetalbio.tasks.base import ImagePrediction, Sample, Task
from fetalbio.variants import VariantSpec

N_POINTS = 4


class LandmarkTask(Task):
    """Network -> the four points through a codec.

    ``"dense"`` networks pair with the heatmap codec, ``"vector"`` ones with the regression
    codec, ``"hybrid"`` ones (``[*heatmaps, coords]``) with the hybrid codec. A joint loss
    (``heatmap_coord``, ``needs_coords``) gets ``(heatmaps, coords)`` pairs: a hybrid network's
    regression head gives the coordinates, a heatmap network's soft-argmax decoded points (in
    the regression codec's normalised convention) do; its targets add ``target_coords``.
    """

    family = "landmark"

    def __init__(self, spec: VariantSpec, vcfg: VariantConfig, tcfg: TrainConfig, network: bool = True) -> None:
        # the network is built even for decoding only (network=False): the codec needs its output
        # stride and kind, and decoding a landmark network's output runs in torch
        from fetalbio.codecs import build_codec
        from fetalbio.losses import build_loss
        from fetalbio.models import build_model

        self.model = build_model(spec.model, 1, N_POINTS, **vcfg.arch)
        codec_cfg = dict(vcfg.codec)
        if spec.decoder and "decoder" not in codec_cfg and spec.codec in ("heatmap", "hybrid"):
            codec_cfg["decoder"] = spec.decoder
        size = (tcfg.input_width, tcfg.input_height)
        self.codec = build_codec(spec.codec, size, self.model.output_stride, **codec_cfg)
        self.loss_fn = build_loss(vcfg.loss or spec.loss, **vcfg.loss_cfg)
        self.prior_weight = vcfg.geometric_prior
        self.joint = bool(getattr(self.loss_fn, "needs_coords", False))
        hybrid_model, hybrid_codec = self.model.output_kind == "hybrid", self.codec.kind == "hybrid"
        if hybrid_model != hybrid_codec:
            raise ValueError(f"model {spec.model!r} ({self.model.output_kind} output) does not fit codec {spec.codec!r}: "
                             "a hybrid network needs the hybrid codec and the hybrid codec a hybrid network")
        if hybrid_codec and not self.joint:
            raise ValueError(f"codec 'hybrid' needs a joint heatmap + coordinate loss (heatmap_coord), got {vcfg.loss or spec.loss!r}")
        if self.joint and self.codec.kind == "regression":
            raise ValueError(f"loss {vcfg.loss or spec.loss!r} needs heatmaps (a heatmap or hybrid codec), not the regression codec")
        self.coord_codec = build_codec("regression", size, 1)

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
        out = {"target": enc[self.codec.target_key].astype(np.float32), "point_weight": enc["weights"].astype(np.float32)}
        if self.joint:
            coords = enc["coords"] if "coords" in enc else self.coord_codec.encode(points)["coords"]
            out["target_coords"] = np.where(enc["weights"][:, None] > 0, coords, 0.0).astype(np.float32)
        return out

    def _final(self, output):
        """What the codec decodes: the last deep-supervision map, or a hybrid network's
        ``[heatmaps, coords]``."""
        if self.codec.kind == "hybrid":
            return [output[-2].float(), output[-1].float()]
        return (output[-1] if isinstance(output, (list, tuple)) else output).float()

    def loss(self, output, batch):
        import torch

        from fetalbio.losses import geometric_prior

        sw, cw = batch["weight"], batch["point_weight"]
        if self.joint:
            if self.codec.kind == "hybrid":  # float: autocast may give bf16 parts
                heat = [h.float() for h in output[:-1]] if len(output) > 2 else output[0].float()
                coords = output[-1].float()
            else:
                heat = output
                final = self._final(output)
                size = torch.as_tensor(self.coord_codec.input_size, dtype=final.dtype, device=final.device)
                coords = (self.codec.decode_torch(final) + 0.5) / size  # input px -> normalised
            loss = self.loss_fn((heat, coords), (batch["target"], batch["target_coords"]), sample_weight=sw, channel_weight=cw)
        else:
            loss = self.loss_fn(output, batch["target"], sample_weight=sw, channel_weight=cw)
        if self.prior_weight > 0:
            coords = self.codec.decode_torch(self._final(output))
            loss = loss + self.prior_weight * (geometric_prior(coords) * sw).sum() / sw.sum().clamp_min(1e-12)
        return loss

    def decode(self, output, letterboxes: list[Letterbox], measure: bool = True) -> list[ImagePrediction]:
        """``output``: torch tensor(s), or numpy arrays (ONNX Runtime), taken into torch."""
        import torch

        if isinstance(output, np.ndarray):
            output = torch.from_numpy(output)
        elif isinstance(output, (list, tuple)):
            output = [torch.from_numpy(o) if isinstance(o, np.ndarray) else o for o in output]
        final = self._final(output)
        arrays = [t.detach().cpu().numpy() for t in final] if isinstance(final, list) else final.detach().cpu().numpy()
        pts_in, unc_in = self.codec.decode(arrays)
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
