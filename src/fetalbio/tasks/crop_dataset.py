"""Training data of the refinement stage (:class:`~fetalbio.tasks.refine.RefineTask`): head-aligned
crops around each row's reference ellipse, jittered like the first stages' errors.

Kept apart from the task so that decoding (prediction, ONNX Runtime) imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fetalbio.config import TrainConfig
from fetalbio.data.transforms import augment, build_augment, normalize
from fetalbio.geometry.crop import HeadCrop
from fetalbio.geometry.ellipse import Ellipse
from fetalbio.geometry.masks import reference_ellipse
from fetalbio.io import read_gray8, read_mask
from fetalbio.tasks.base import Sample

if TYPE_CHECKING:  # only for annotations: augmentation is built by fetalbio.data.transforms.build_augment
    import albumentations as A

    from fetalbio.tasks.refine import RefineTask


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
            m01 = read_mask(Path(table_dir) / r["mask_path"])
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
