"""Refinement task: the second stage of coarse-to-fine measurement.

The first stage (any variant that yields an ellipse: a segmentation fit, or a landmark
variant's four points) gives a coarse head ellipse. The refinement network sees a head-aligned,
scale-normalised crop around it (:class:`~fetalbio.geometry.crop.HeadCrop`: long axis
horizontal, the crop ``span`` long axes wide, at the variant's input size), segments the skull
there, and the ellipse fitted in the crop (the segmentation decoder's sub-pixel iso-contour +
least squares) is mapped back exactly. ``crop.passes`` repeats the crop from the refined
ellipse.

Training (:class:`CropDataset`): crops around each training row's reference ellipse (fitted to
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

from typing import TYPE_CHECKING

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import augment, build_augment, network_input, normalize
from fetalbio.geometry.crop import CropJitter, HeadCrop, crop_problem
from fetalbio.geometry.ellipse import Ellipse, ellipse_endpoints, transform_ellipse
from fetalbio.geometry.masks import mask_to_ellipse, perimeter_offset_px
from fetalbio.io import read_gray8
from fetalbio.tasks.base import ImagePrediction, Sample, average_outputs, prediction_ellipse
from fetalbio.tasks.segmentation import SegmentationTask, calibration_rows
from fetalbio.variants import VariantSpec

if TYPE_CHECKING:  # only for annotations: augmentation is built by fetalbio.data.transforms.build_augment
    import albumentations as A

# combine: "mean" reports the mean of the first stage's and the refined ellipse (two partly
# independent measurements of one head), "refined" the refined ellipse alone
CROP_DEFAULTS = {"span": 1.35, "passes": 1, "jitter": {}, "combine": "mean"}


def reference_ellipse(mask01: np.ndarray) -> Ellipse | None:
    """The ellipse of a filled reference mask (sub-pixel edge, least squares), or None."""
    res = mask_to_ellipse(np.asarray(mask01) > 0, method="plain")
    return res.ellipse if res.ok else None


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


class RefineTask(SegmentationTask):
    family = "refine"
    standalone = False  # needs a coarse ellipse: no held-out predictions of its own

    def __init__(self, spec: VariantSpec, vcfg: VariantConfig, tcfg: TrainConfig) -> None:
        super().__init__(spec, vcfg, tcfg)
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
        self.crop_size = (tcfg.input_width, tcfg.input_height)
        self.normalize_method = tcfg.normalize
        self.edge_offset_per_crop_px = 0.0

    dataset_class: type  # set below (CropDataset)

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
            m = cv2.imread(str(Path(table_dir) / r.mask_path), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise ValueError(f"{Path(table_dir) / r.mask_path}: unreadable mask")
            m01 = (m > 127).astype(np.uint8)
            e = reference_ellipse(m01)
            if e is None or crop_problem(e, None):
                continue
            fr = self.frame(e, (m.shape[1], m.shape[0]))
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
            mad = np.median(np.abs(y - med)) * 1.4826 + 1e-9
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
    def refine(self, nets: Sequence[torch.nn.Module], images: Sequence[np.ndarray], coarse: Sequence[ImagePrediction],
               device: torch.device | str = "cpu", batch_size: int = 16, forward: Callable | None = None) -> list[ImagePrediction]:
        """Refined predictions of ``images`` from their ``coarse`` predictions (``passes``
        times). An image whose coarse ellipse cannot be cropped (none, degenerate, mostly outside
        the image) or whose refined fit fails keeps its coarse prediction, with the reason in
        ``extra['refine']``; refined ones carry ``extra['coarse_ellipse']``. ``forward``: runs
        the networks on a normalised ``(B, 1, H, W)`` float32 batch (default: torch, the
        members' outputs averaged; the predictor passes its own, e.g. ONNX Runtime)."""
        current = list(coarse)
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
                x = torch.from_numpy(np.stack([network_input(images[i], fr, self.normalize_method)[None] for i, fr in zip(idx, frs)]))
                if forward is not None:
                    out = forward(x)
                else:
                    with torch.inference_mode():
                        x = x.to(device)
                        out = average_outputs([net(x) for net in nets])
                for i, fr, rp in zip(idx, frs, self.decode(out, frs)):
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


@dataclass
class CropSample(Sample):
    """A training/validation row of the refinement stage (original pixels, not letterboxed)."""

    ellipse: Ellipse | None = None  # reference ellipse (sonographer mask)
    ref_perimeter_px: float = float("nan")


class CropDataset(Dataset):
    """Head-aligned crops around each row's reference ellipse.

    ``train=True``: a new jitter (:class:`~fetalbio.geometry.crop.CropJitter`) and intensity
    augmentation per access, a function of (epoch seed, index) after :meth:`set_epoch`, like
    :class:`~fetalbio.engine.dataset.BiometryDataset`. ``train=False``: one fixed jitter per
    row drawn from ``seed`` (validation meets perturbed starts, as at test time); the frame is
    then ``samples[i].letterbox``, which decoding maps back with.
    """

    def __init__(self, table: pd.DataFrame, table_dir: Path, task: RefineTask, tcfg: TrainConfig, train: bool, seed: int = 0, with_targets: bool = True) -> None:
        self.table = table.reset_index(drop=True)
        self.task, self.tcfg, self.train, self.with_targets = task, tcfg, train, with_targets
        self.samples: list[CropSample] = []
        for i, r in self.table.iterrows():
            img = read_gray8(Path(table_dir) / r["image_path"]).pixels
            m = cv2.imread(str(Path(table_dir) / r["mask_path"]), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise ValueError(f"{Path(table_dir) / r['mask_path']}: unreadable mask (row {i}, column mask_path)")
            m01 = (m > 127).astype(np.uint8)
            e = reference_ellipse(m01)
            if e is None:
                raise ValueError(f"{Path(table_dir) / r['mask_path']}: no head ellipse in the mask (row {i}, column mask_path)")
            hc, px = float(r.get("hc_mm", np.nan)), float(r.get("pixel_size_mm", np.nan))
            ref_p = hc / px if math.isfinite(hc) and math.isfinite(px) and hc > 0 and px > 0 else e.perimeter_px
            fr = task.frame(e, (img.shape[1], img.shape[0]))
            if not train:
                fr = fr.jittered(np.random.default_rng(np.random.SeedSequence([seed, i])), e.a, task.jitter)
            self.samples.append(CropSample(img, None, m01, float(r.get("weight", 1.0)), fr, e, ref_p))
        aug = dataclasses.replace(tcfg.augment, rotate_deg=0.0, scale=0.0, shift=0.0, hflip=0.0)  # geometry is the crop's
        self.pipeline: A.Compose | None = build_augment(aug) if train else None
        self.seed = seed
        self.epoch_seed: int | None = None
        self._stream = np.random.default_rng(seed)
        if self.pipeline is not None:
            self.pipeline.set_random_seed(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch_seed: int | None) -> None:
        self.epoch_seed = epoch_seed

    def crop(self, i: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, HeadCrop]:
        s = self.samples[i]
        fr = s.letterbox if rng is None else self.task.frame(s.ellipse, s.letterbox.src_size).jittered(rng, s.ellipse.a, self.task.jitter)
        image = fr.apply(s.image)
        mask = (fr.apply(s.mask.astype(np.float32)) >= 0.5).astype(np.uint8)
        return image, mask, fr

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = None
        if self.train:
            if self.epoch_seed is not None:
                state = np.random.SeedSequence([self.epoch_seed, i])
                rng = np.random.default_rng(state)
                self.pipeline.set_random_seed(int(state.generate_state(1)[0]))
            else:
                rng = self._stream
        image, mask, _ = self.crop(i, rng)
        if self.pipeline is not None:
            image, _, mask = augment(self.pipeline, image, None, mask)
        s = self.samples[i]
        item = {
            "image": torch.from_numpy(normalize(image, self.tcfg.normalize)[None]),
            "weight": torch.tensor(s.weight, dtype=torch.float32),
            "index": torch.tensor(i),
        }
        if self.with_targets:
            for k, v in self.task.targets(s, image, None, mask).items():
                item[k] = torch.from_numpy(np.ascontiguousarray(v))
        return item


RefineTask.dataset_class = CropDataset


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
