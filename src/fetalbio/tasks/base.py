"""What a task family provides to the (task-agnostic) training loop and predictor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fetalbio.data.transforms import Letterbox
from fetalbio.geometry.ellipse import Ellipse, ellipse_from_points

if TYPE_CHECKING:  # torch is imported where a network runs or trains: decoding ONNX Runtime's numpy outputs needs none
    import torch
    from torch import nn


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


def prediction_ellipse(p: ImagePrediction) -> Ellipse | None:
    """The head ellipse of a prediction: the fitted one (segmentation, refinement), else the one
    the two diameters span (landmarks); None for a failed or degenerate prediction."""
    if p.status != "ok":
        return None
    try:
        if "ellipse" in p.extra:
            return Ellipse(*p.extra["ellipse"])
        return ellipse_from_points(p.points)
    except ValueError:
        return None


def average_outputs(outputs: list):
    """Mean of the raw outputs of an ensemble's networks for one batch (torch tensors or numpy
    arrays, or lists of them for multi-output networks); one output is returned as it is."""
    if len(outputs) == 1:
        return outputs[0]
    if isinstance(outputs[0], (list, tuple)):
        return [_mean(list(parts)) for parts in zip(*outputs)]
    return _mean(outputs)


def _mean(arrays: list):
    if isinstance(arrays[0], np.ndarray):
        return np.stack(arrays).mean(0)
    import torch

    return torch.stack(arrays).mean(0)


def as_numpy(output) -> np.ndarray:
    """A raw network output as a float32 numpy array (a torch tensor is detached and moved to
    the CPU; a numpy array, e.g. from ONNX Runtime, is used as it is)."""
    if isinstance(output, np.ndarray):
        return output.astype(np.float32, copy=False)
    return output.detach().float().cpu().numpy()


class Task:
    """A method: its network, training targets and loss, decoding, validation score and the rows
    it can learn from. Subclasses build ``model`` and implement the methods below.

    ``standalone``: the task measures an image on its own (False for a second stage that needs
    a first stage's prediction: it trains per fold but has no held-out predictions of its own).
    ``dataset_class``: the torch dataset that feeds it (None: the engine's letterboxed
    :class:`~fetalbio.engine.dataset.BiometryDataset`); it takes ``(rows, table_dir, task,
    tcfg, train, seed=, with_targets=)`` and exposes ``samples[i].letterbox``, the frame that
    :meth:`decode` maps back to original pixels with.
    ``measure_for_score``: validation scoring needs full decoding (the ellipse fit).
    """

    family: str
    model: nn.Module
    needs_mask: bool = False
    mask_source: str | None = None  # what a task that needs masks trains on: sonographer | landmarks
    standalone: bool = True
    dataset_class: type | None = None
    measure_for_score: bool = False

    def usable(self, rows):
        """The rows of a label table this task can train on (one filter for folds and refits)."""
        has_mask = rows["mask_path"].fillna("") != ""
        return rows[[self.trainable(float(w), bool(m)) for w, m in zip(rows["weight"], has_mask)]]

    def score_fn(self, val) -> Callable[[list[ImagePrediction]], float]:
        """Inner-validation score of ``val``'s predictions (lower is better)."""
        raise NotImplementedError

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

    def follow(self, images, previous: list[ImagePrediction], forward: Callable | None = None, **torch_run) -> list[ImagePrediction]:
        """A later stage (not ``standalone``): its predictions of ``images`` from the previous stage's;
        ``forward`` runs its networks on a normalised batch (else ``torch_run``: ``nets``, ``device``)."""
        raise NotImplementedError(f"{type(self).__name__} measures an image on its own; it follows no stage")

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
