"""Refinement task: the second stage of coarse-to-fine measurement.

The first stage (any variant that yields an ellipse: a segmentation fit, or a landmark
variant's four points) gives a coarse head ellipse. The refinement network sees a head-aligned,
scale-normalised crop around it (:class:`~fetalbio.geometry.crop.HeadCrop`: long axis
horizontal, the crop ``span`` long axes wide, at the variant's input size), segments the skull
there, and the ellipse fitted in the crop (the segmentation decoder's sub-pixel iso-contour +
least squares) is mapped back exactly. ``crop.passes`` repeats the crop from the refined
ellipse.

Training (:class:`~fetalbio.tasks.crop_dataset.CropDataset`): crops around each training row's reference ellipse (fitted to
its sonographer mask), jittered in centre, scale and angle with the spreads of ``crop.jitter``
(they should cover the first stages' out-of-fold ellipse errors, which the ``refine`` stage
reports), turned by 180° and mirrored at random, with the usual intensity augmentation.

Edge calibration (:meth:`RefineTask.calibrate`): the sonographer masks end at the outer edge of
the drawn outline, whose centre line the reference HC measures. The outline has a width in
*original* pixels while the crop rescales each head differently, so the gap is measured per
training row, in the crop frame exactly as decoding sees it (crop the mask from its reference
ellipse, fit, map back, compare with the reference HC), and modelled as
``offset = edge_offset_px + edge_offset_per_crop_px / k`` original px (``k``: crop px per
original px). The residual per reference-HC tercile is recorded with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import network_input
from fetalbio.geometry.crop import CropJitter, HeadCrop, crop_problem
from fetalbio.geometry.ellipse import Ellipse, ellipse_endpoints, transform_ellipse
from fetalbio.geometry.masks import mask_to_ellipse, perimeter_offset_px, reference_ellipse
from fetalbio.io import read_mask
from fetalbio.tasks.base import ImagePrediction, average_outputs, prediction_ellipse
from fetalbio.tasks.segmentation import SegmentationTask, calibration_rows
from fetalbio.variants import VariantSpec

if TYPE_CHECKING:
    import torch

    from fetalbio.tasks.crop_dataset import CropDataset

# combine: "mean" reports the mean of the first stage's and the refined ellipse (two partly
# independent measurements of one head), "refined" the refined ellipse alone
# tta: test-time mirroring of the crop (the head-aligned frame is symmetric about both axes of
# the coarse ellipse): the network's logits on the crop and its mirror images, mapped back and
# averaged, before the fit -- "none", "hflip" (2 views) or "hvflip" (4 views)
CROP_DEFAULTS = {"span": 1.35, "passes": 1, "jitter": {}, "combine": "mean", "tta": "none"}
TTA_VIEWS = {"none": [()], "hflip": [(), (-1,)], "hvflip": [(), (-1,), (-2,), (-2, -1)]}


def check_passes(value: object) -> int:
    """``crop.passes`` (the configuration, or ``fetalbio refine --passes``), checked."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise ValueError(f"crop.passes must be an integer in 1..5, got {value!r}")
    return value


def check_combine(value: object) -> str:
    """``crop.combine`` (the configuration, or ``fetalbio refine --combine``), checked."""
    if value not in ("mean", "refined"):
        raise ValueError(f"crop.combine must be 'mean' or 'refined', got {value!r}")
    return str(value)


def check_tta(value: object) -> str:
    """``crop.tta`` (the configuration, or ``fetalbio refine --tta``), checked."""
    if value not in TTA_VIEWS:
        raise ValueError(f"crop.tta must be one of {', '.join(TTA_VIEWS)}, got {value!r}")
    return str(value)


def _flip(a, axes: tuple[int, ...]):
    """``a`` (a numpy array or a torch tensor) mirrored along ``axes``."""
    if not axes:
        return a
    return np.ascontiguousarray(np.flip(a, axes)) if isinstance(a, np.ndarray) else a.flip(axes)


def _views_mean(out, n: int, views: list[tuple[int, ...]]):
    """The mean over ``views`` of a forward pass on ``len(views)`` stacked copies of an
    ``n``-image batch, each mirrored back first (one output or a list of them)."""
    if len(views) == 1:
        return out
    if isinstance(out, (list, tuple)):
        return [_views_mean(o, n, views) for o in out]
    return average_outputs([_flip(out[i * n:(i + 1) * n], ax) for i, ax in enumerate(views)])


class RefineTask(SegmentationTask):
    family = "refine"
    standalone = False  # needs a coarse ellipse: no held-out predictions of its own

    def __init__(self, spec: VariantSpec, vcfg: VariantConfig, tcfg: TrainConfig, network: bool = True) -> None:
        super().__init__(spec, vcfg, tcfg, network)
        crop = {**CROP_DEFAULTS, **vcfg.crop}
        unknown = sorted(set(crop) - set(CROP_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown crop option(s) {unknown}; valid: {sorted(CROP_DEFAULTS)}")
        self.span = float(crop["span"])
        if not 1.0 < self.span <= 3.0:
            raise ValueError(f"crop.span must be in (1, 3] long axes, got {self.span}")
        self.passes = check_passes(crop["passes"])
        self.jitter = CropJitter(**crop["jitter"])
        self.combine = check_combine(crop["combine"])
        self.tta = check_tta(crop["tta"])
        self.crop_size = (tcfg.input_width, tcfg.input_height)
        self.normalize_method = tcfg.normalize
        self.edge_offset_per_crop_px = 0.0

    @property
    def dataset_class(self) -> type:
        """:class:`~fetalbio.tasks.crop_dataset.CropDataset` (a torch dataset: imported for
        training only, so that decoding needs no torch)."""
        from fetalbio.tasks.crop_dataset import CropDataset

        return CropDataset

    def frame(self, e: Ellipse, src_size: tuple[int, int]) -> HeadCrop:
        return HeadCrop.from_ellipse(e, src_size, self.crop_size, self.span)

    def edge_offset_for(self, frame) -> float:
        return self.edge_offset_px + self.edge_offset_per_crop_px / float(frame.k)

    def usable(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows[rows["mask_path"].fillna("") != ""]

    # -- calibration ---------------------------------------------------------------------------
    def calibrate(self, rows: pd.DataFrame, table_dir: Path) -> dict:
        """Measure ``offset = alpha + beta / k`` (original px) on training rows (see the module
        docstring); ``edge_offset_px: <number>`` in ``postprocess`` fixes ``alpha`` (beta 0)."""
        if self.edge_offset_setting != "auto":
            self.edge_offset_px, self.edge_offset_per_crop_px = float(self.edge_offset_setting), 0.0
            return {"edge_offset_px": self.edge_offset_px, "edge_offset_per_crop_px": 0.0, "edge_offset_n": 0}
        usable = calibration_rows(rows)
        inv_k, offs, hcs = [], [], []
        for r in usable.itertuples(index=False):
            m01 = read_mask(Path(table_dir) / r.mask_path)
            e = reference_ellipse(m01)
            if e is None or crop_problem(e, None):
                continue
            fr = self.frame(e, (m01.shape[1], m01.shape[0]))
            target = (fr.apply(m01.astype(np.float32)) >= 0.5).astype(np.uint8)
            res = mask_to_ellipse(target, inlier_threshold_px=self.inlier_band, **{k: v for k, v in self.post.items() if k != "threshold"})
            if not res.ok:
                continue
            hc_px = float(r.hc_mm) / float(r.pixel_size_mm)
            d = perimeter_offset_px(transform_ellipse(res.ellipse, fr.inverse()), hc_px)
            if math.isfinite(d):
                inv_k.append(1.0 / fr.k)
                offs.append(d)
                hcs.append(hc_px * float(r.pixel_size_mm))
        x, y = np.asarray(inv_k), np.asarray(offs)
        if y.size >= 10 and np.ptp(x) > 0:
            med = np.median(y)
            mad = np.median(np.abs(y - med)) * 1.4826 + 1e-9  # not scipy's median_abs_deviation(scale="normal"): its 1.482602... would move the cut
            keep = np.abs(y - med) <= 5 * mad
            design = np.stack([np.ones(keep.sum()), x[keep]], axis=1)
            (alpha, beta), *_ = np.linalg.lstsq(design, y[keep], rcond=None)
        else:
            alpha, beta = (float(np.median(y)) if y.size else 0.0), 0.0
        self.edge_offset_px, self.edge_offset_per_crop_px = float(alpha), float(beta)
        cal = {"edge_offset_px": self.edge_offset_px, "edge_offset_per_crop_px": self.edge_offset_per_crop_px, "edge_offset_n": int(y.size)}
        if y.size >= 3:  # the model's residual by reference-HC tercile (should be ~0 in each)
            resid = y - (alpha + beta * x)
            edges = np.quantile(hcs, [1 / 3, 2 / 3])
            bins = np.digitize(hcs, edges)
            for t in range(3):
                cal[f"edge_offset_residual_t{t + 1}_px"] = float(np.mean(resid[bins == t])) if np.any(bins == t) else float("nan")
        return cal

    def set_calibration(self, calibration: dict) -> None:
        allowed = {"edge_offset_px", "edge_offset_per_crop_px", "edge_offset_n", *(f"edge_offset_residual_t{t}_px" for t in (1, 2, 3))}
        unknown = set(calibration) - allowed
        if unknown:
            raise ValueError(f"unknown calibration keys {sorted(unknown)}")
        self.edge_offset_px = float(calibration.get("edge_offset_px", self.edge_offset_px))
        self.edge_offset_per_crop_px = float(calibration.get("edge_offset_per_crop_px", self.edge_offset_per_crop_px))

    # -- scoring: what the refinement is for, the perimeter ----------------------------------
    measure_for_score = True

    score_kind = "perimeter_abs_err_px"

    def score_fn(self, val: "CropDataset") -> Callable[[list[ImagePrediction]], float]:
        """Lower is better: mean |perimeter - reference perimeter| (original px) of the refined
        ellipses of the inner-validation crops (jittered like the first stage's errors); a
        failed fit counts as the whole perimeter."""
        refs = [s.ref_perimeter_px for s in val.samples]

        def score(preds: list[ImagePrediction]) -> float:
            errs = []
            for p, ref in zip(preds, refs):
                e = prediction_ellipse(p)
                errs.append(abs(e.perimeter_px - ref) if e is not None else ref)
            return float(np.mean(errs)) if errs else float("inf")

        return score

    # -- inference from coarse predictions ---------------------------------------------------
    def follow(self, images: Sequence[np.ndarray], previous: Sequence[ImagePrediction], forward: Callable | None = None,
               nets: Sequence[torch.nn.Module] = (), device: torch.device | str = "cpu", batch_size: int = 16) -> list[ImagePrediction]:
        """Refined predictions of ``images`` from their coarse (``previous``) predictions (``passes``
        times). An image whose coarse ellipse cannot be cropped (none, degenerate, mostly outside
        the image) or whose refined fit fails keeps its coarse prediction, with the reason in
        ``extra['refine']``; refined ones carry ``extra['coarse_ellipse']``. ``forward``: runs
        the networks on a normalised ``(B, 1, H, W)`` float32 batch (default: torch, the
        members' outputs averaged; the predictor passes its own, e.g. ONNX Runtime)."""
        current = list(previous)
        skipped = [""] * len(current)
        for _ in range(self.passes):
            todo, frames = [], []
            for i, (im, p) in enumerate(zip(images, current)):
                if skipped[i]:
                    continue
                e = prediction_ellipse(p)
                fr = None
                try:
                    fr = self.frame(e, (im.shape[1], im.shape[0])) if e is not None and not crop_problem(e, None) else None
                except ValueError:
                    fr = None
                problem = crop_problem(e, fr)
                if problem:
                    skipped[i] = problem
                    continue
                todo.append(i)
                frames.append(fr)
            for start in range(0, len(todo), batch_size):
                idx, frs = todo[start : start + batch_size], frames[start : start + batch_size]
                x = np.stack([network_input(images[i], fr, self.normalize_method)[None] for i, fr in zip(idx, frs)])
                views = TTA_VIEWS[self.tta]
                xv = np.concatenate([_flip(x, ax) for ax in views]) if len(views) > 1 else x
                out = _views_mean(forward(xv) if forward is not None else _torch_forward(nets, xv, device), len(idx), views)
                for i, rp in zip(idx, self.decode(out, frs)):
                    if rp.status != "ok":
                        skipped[i] = f"refined fit failed ({rp.reason})"
                        continue
                    prev = current[i]
                    first = prev.extra.get("coarse_ellipse", prediction_ellipse(prev).as_tuple())
                    rp.extra["coarse_ellipse"] = tuple(float(v) for v in first)
                    rp.extra["refine_passes"] = int(prev.extra.get("refine_passes", 0)) + 1
                    current[i] = rp
        out_preds = []
        for p, why in zip(current, skipped):
            if why and "coarse_ellipse" not in p.extra:
                p = dataclasses.replace(p, extra={**p.extra, "refine": f"not refined: {why}"})
            elif "coarse_ellipse" in p.extra and self.combine == "mean":
                p = combined(p)
            out_preds.append(p)
        return out_preds




def _torch_forward(nets: Sequence, x: np.ndarray, device) -> object:
    """The refinement networks (members averaged) on a normalised numpy batch, in torch."""
    import torch

    with torch.inference_mode():
        xt = torch.from_numpy(x).to(device)
        return average_outputs([net(xt) for net in nets])


def mean_ellipse(a: Ellipse, b: Ellipse) -> Ellipse:
    """The parameter mean of two ellipses of one head (the angle averaged modulo 180°)."""
    dth = math.remainder(b.theta - a.theta, math.pi)
    return Ellipse((a.cx + b.cx) / 2, (a.cy + b.cy) / 2, (a.a + b.a) / 2, (a.b + b.b) / 2, a.theta + dth / 2)


def combined(p: ImagePrediction) -> ImagePrediction:
    """A refined prediction reporting the mean of its coarse and refined ellipses (both kept in
    ``extra``); its mask stays the refined one."""
    refined = Ellipse(*p.extra["ellipse"])
    e = mean_ellipse(Ellipse(*p.extra["coarse_ellipse"]), refined)
    extra = {**p.extra, "refined_ellipse": refined.as_tuple(), "ellipse": e.as_tuple()}
    return dataclasses.replace(p, points=np.asarray(ellipse_endpoints(e), dtype=np.float64), extra=extra)


def ellipse_prediction(e: Ellipse) -> ImagePrediction:
    """A coarse prediction made of an ellipse alone (tests, synthetic checks)."""
    return ImagePrediction(np.asarray(ellipse_endpoints(e), dtype=np.float64), np.full(4, np.nan), extra={"ellipse": e.as_tuple()})
