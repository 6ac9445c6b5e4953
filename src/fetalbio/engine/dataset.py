"""Torch dataset: table rows -> letterboxed images (cached) -> augmented tensors + targets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fetalbio import POINT_COLUMNS
from fetalbio.config import TrainConfig
from fetalbio.data.transforms import Letterbox, augment, build_augment, normalize
from fetalbio.geometry.ellipse import ellipse_from_points, ellipse_to_mask
from fetalbio.io import read_gray8, read_mask
from fetalbio.tasks.base import Sample, Task

if TYPE_CHECKING:  # only for annotations: augmentation is built by fetalbio.data.transforms.build_augment
    import albumentations as A


def _letterbox_mask(lb: Letterbox, mask: np.ndarray) -> np.ndarray:
    """Binary mask to network input: area-average the {0,1} mask, keep pixels >= 0.5 covered
    (pixel-centre aligned with the points, and the area is preserved)."""
    return (lb.apply(mask.astype(np.float32), cv2.INTER_AREA) >= 0.5).astype(np.uint8)


def load_sample(row: pd.Series, table_dir: Path, input_size: tuple[int, int], mask_source: str | None) -> Sample:
    """Read and letterbox one table row. ``mask_source``: None, 'sonographer' or 'landmarks'."""
    img = read_gray8(table_dir / row["image_path"]).pixels
    lb = Letterbox.fit((img.shape[1], img.shape[0]), input_size)
    pts = row[list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 2)
    mask = None
    if mask_source == "sonographer" and row.get("mask_path", ""):
        mask = _letterbox_mask(lb, read_mask(table_dir / row["mask_path"]))
    elif mask_source == "landmarks" and np.all(np.isfinite(pts)):
        full = ellipse_to_mask(ellipse_from_points(pts), (img.shape[1], img.shape[0]))
        mask = _letterbox_mask(lb, full > 0)
    return Sample(
        image=lb.apply(img),
        points=lb.to_input(pts) if np.all(np.isfinite(pts)) else None,
        mask=mask,
        weight=float(row.get("weight", 1.0)),
        letterbox=lb,
    )


class BiometryDataset(Dataset):
    """Items: ``image`` (1, H, W) float32, task targets, ``weight`` (), ``index`` ().

    With ``train=True`` each access draws a new augmentation (keypoints and mask move with the
    image; points are re-canonicalised after a flip); otherwise images are only normalised.
    After :meth:`set_epoch` the augmentation of item ``i`` is a function of (epoch seed, ``i``)
    only: the same whatever the access order, the worker that loads it or what ran before (the
    training loop relies on it to resume an interrupted run exactly).
    """

    def __init__(self, table: pd.DataFrame, table_dir: Path, task: Task, tcfg: TrainConfig, train: bool, seed: int = 0, with_targets: bool = True) -> None:
        self.table = table.reset_index(drop=True)
        self.task = task
        self.tcfg = tcfg
        self.train = train
        self.with_targets = with_targets
        size = (tcfg.input_width, tcfg.input_height)
        mask_source = task.mask_source if task.needs_mask else None
        self.samples = [load_sample(r, table_dir, size, mask_source) for _, r in self.table.iterrows()]
        self.pipeline: A.Compose | None = None
        self.epoch_seed: int | None = None
        if train:
            self.pipeline = build_augment(tcfg.augment)
            self.pipeline.set_random_seed(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch_seed: int | None) -> None:
        """Draw item ``i``'s augmentation from (``epoch_seed``, ``i``); None: one running stream
        seeded at construction. Set before a DataLoader iterator starts (workers copy the
        dataset when they start)."""
        self.epoch_seed = epoch_seed

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        image, points, mask = s.image, s.points, s.mask
        if self.pipeline is not None:
            if self.epoch_seed is not None:
                self.pipeline.set_random_seed(int(np.random.SeedSequence([self.epoch_seed, i]).generate_state(1)[0]))
            image, points, mask = augment(self.pipeline, image, points, mask)
        item = {
            "image": torch.from_numpy(normalize(image, self.tcfg.normalize)[None]),
            "weight": torch.tensor(s.weight, dtype=torch.float32),
            "index": torch.tensor(i),
        }
        if self.with_targets:
            for k, v in self.task.targets(s, image, points, mask).items():
                item[k] = torch.from_numpy(np.ascontiguousarray(v))
        return item
