"""Training losses for landmark heatmaps, coordinate regression and head segmentation.

Every registered loss is an ``nn.Module`` (derived from :class:`WeightedLoss`, except the joint
``heatmap_coord``, whose ``pred`` and ``target`` are ``(heatmaps, coords)`` pairs), with

    forward(pred, target, sample_weight=None, channel_weight=None) -> scalar Tensor

* ``pred``: a tensor shaped like ``target``, or a ``list`` of such tensors (deep supervision):
  the loss is then the mean of the losses of the items against the same target.
* ``sample_weight``: ``(B,)`` per-sample weights (e.g. label quality). The batch loss is
  ``sum_b w_b * loss_b / max(sum_b w_b, eps)``, so a zero weight removes a sample completely
  and an all-zero batch gives 0. Without it, the mean over samples.
* ``channel_weight``: ``(B, K)`` per-channel weights (0 for an invisible keypoint). A sample's
  loss is the *mean over its K channels* of ``channel_weight * channel_loss`` (not renormalised
  by the weight sum, as in mmpose).

Build one with :func:`build_loss`. The geometric prior on decoded landmarks,
:func:`~fetalbio.losses.landmark.geometric_prior`, is a plain function (not registered).
"""

from __future__ import annotations

# importing the submodules registers their losses in LOSSES
from fetalbio.losses.base import WeightedLoss, build_loss
from fetalbio.losses.landmark import AdaptiveWingLoss, HeatmapCoordLoss, HeatmapMSELoss, SmoothL1CoordLoss, WingLoss, geometric_prior
from fetalbio.losses.segmentation import BoundaryDiceBCELoss, DiceBCELoss, FocalDiceLoss, boundary_band
from fetalbio.registry import LOSSES

__all__ = ["LOSSES", "AdaptiveWingLoss", "BoundaryDiceBCELoss", "DiceBCELoss", "FocalDiceLoss", "HeatmapCoordLoss", "HeatmapMSELoss", "SmoothL1CoordLoss", "WeightedLoss", "WingLoss", "boundary_band", "build_loss", "geometric_prior"]
