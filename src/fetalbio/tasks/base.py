"""What a task family provides to the (task-agnostic) training loop and predictor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fetalbio.data.transforms import Letterbox


@dataclass
class Sample:
    """One preprocessed image in network-input space (before augmentation)."""

    image: np.ndarray  # (H_in, W_in) uint8, letterboxed
    points: np.ndarray | None  # (4, 2) input px, canonical order; None when unlabelled
    mask: np.ndarray | None  # (H_in, W_in) uint8 {0,1}; None when the task needs none
    weight: float  # row training weight from clean_labels
    letterbox: Letterbox


@dataclass
class ImagePrediction:
    """A prediction in original-image pixels (the ``Prediction`` record of the pipeline)."""

    points: np.ndarray  # (4, 2) canonical [ofd_1, ofd_2, bpd_1, bpd_2]; NaN when failed
    uncertainty: np.ndarray  # (4,) per point (px); NaN when the method has none
    status: str = "ok"  # ok | failed
    reason: str = ""
    mask: np.ndarray | None = None  # (H, W) uint8 {0,1} for segmentation variants
    extra: dict = field(default_factory=dict)
    # Builds ``mask`` on first use (segmentation decodes at network resolution; the full-size
    # mask is only drawn when something asks for it: scoring, writing masks).
    mask_factory: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def full_mask(self) -> np.ndarray | None:
        """The ``(H, W)`` mask in original pixels (built once, then kept), or ``None``."""
        if self.mask is None and self.mask_factory is not None:
            self.mask = self.mask_factory()
            self.mask_factory = None
        return self.mask


def average_outputs(outputs: list):
    """Mean of the raw outputs of an ensemble's networks for one batch (tensors, or lists of
    tensors for multi-output networks); one output is returned as it is."""
    if len(outputs) == 1:
        return outputs[0]
    if isinstance(outputs[0], (list, tuple)):
        return [torch.stack(list(parts)).mean(0) for parts in zip(*outputs)]
    return torch.stack(outputs).mean(0)


class Task:
    """Base class. Subclasses build ``model`` and implement the four methods below."""

    family: str
    model: nn.Module
    needs_mask: bool = False

    def targets(self, sample: Sample, image: np.ndarray, points: np.ndarray | None, mask: np.ndarray | None) -> dict[str, np.ndarray]:
        """Training targets for one (augmented) sample, as float32 arrays."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor | list[torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, output: torch.Tensor, letterboxes: list[Letterbox], measure: bool = True) -> list[ImagePrediction]:
        """Network outputs of a batch (eval mode) -> predictions in original pixels.

        ``measure=False`` may skip work that validation scoring does not need (segmentation:
        the ellipse fit; only the mask is returned).
        """
        raise NotImplementedError

    def trainable(self, weight: float, has_mask: bool) -> bool:
        """Whether a row can train this task."""
        raise NotImplementedError

    def calibrate(self, rows, table_dir) -> dict:
        """Measure, on *training* rows only, the constants decoding needs beyond the weights
        (e.g. an annotation convention); set them on the task and return them as plain data
        for the checkpoint. Default: none."""
        return {}

    def set_calibration(self, calibration: dict) -> None:
        """Restore what :meth:`calibrate` measured (from a checkpoint)."""
        if calibration:
            raise ValueError(f"{type(self).__name__} takes no calibration, got {sorted(calibration)}")
