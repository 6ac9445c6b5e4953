"""Landmark losses: heatmap losses on ``(B, K, H, W)`` and coordinate losses on ``(B, K, 2)``.

All registered losses accept ``point_weights`` (``K`` static per-keypoint weights, e.g. to
favour the BPD pair) on top of the per-sample ``channel_weight`` of
:class:`~fetalbio.losses.base.WeightedLoss`. ``heatmap_coord`` (:class:`HeatmapCoordLoss`) joins a
heatmap loss and a coordinate loss on ``(heatmaps, coords)`` pairs. :func:`geometric_prior` is a
separate, unregistered shape penalty on decoded landmark sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fetalbio.losses.base import WeightedLoss, build_loss
from fetalbio.registry import LOSSES


class _PointWeighted(WeightedLoss):
    """Adds the ``point_weights`` config (``K`` floats or None)."""

    def __init__(self, point_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if point_weights is None:
            self.point_weights = None
        else:
            pw = torch.as_tensor(list(point_weights), dtype=torch.float32)
            if pw.ndim != 1 or not torch.all(torch.isfinite(pw)) or torch.any(pw < 0):
                raise ValueError(f"point_weights must be K finite non-negative floats, got {point_weights}")
            self.register_buffer("point_weights", pw, persistent=False)

    def channel_scale(self, num_channels: int, ref: Tensor) -> Tensor | None:
        if self.point_weights is None:
            return None
        if self.point_weights.numel() != num_channels:
            raise ValueError(
                f"point_weights has {self.point_weights.numel()} entries "
                f"for {num_channels} channels"
            )
        return self.point_weights.to(dtype=ref.dtype, device=ref.device)


def _check_heatmaps(pred: Tensor) -> None:
    if pred.ndim != 4:
        raise ValueError(f"expected heatmaps (B, K, H, W), got {tuple(pred.shape)}")


def _check_coords(pred: Tensor) -> None:
    if pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"expected coordinates (B, K, 2), got {tuple(pred.shape)}")


@LOSSES.register("heatmap_mse")
class HeatmapMSELoss(_PointWeighted):
    """Mean squared error between heatmaps ``(B, K, H, W)``, averaged over pixels per channel.

    Args:
        point_weights: optional ``K`` per-channel weights.
    """

    def per_channel(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_heatmaps(pred)
        return ((pred - target) ** 2).mean(dim=(2, 3))


@LOSSES.register("adaptive_wing")
class AdaptiveWingLoss(_PointWeighted):
    """Adaptive Wing loss (Wang, Bo & Fuxin, ICCV 2019) on heatmaps ``(B, K, H, W)``.

    With ``d = |y - y_hat|`` and target value ``y`` in [0, 1]::

        AWing = omega * ln(1 + (d / epsilon) ** (alpha - y))       if d < theta
                A * d - C                                           otherwise
        r = theta / epsilon,  p = alpha - y
        A = omega / (1 + r**p) * p * r**(p - 1) / epsilon
        C = theta * A - omega * ln(1 + r**p)

    (continuous and smooth at ``d = theta``). Optional weighted loss map of the paper:
    ``M = grey_dilation(y, dilation x dilation) >= weight_threshold`` and each pixel's loss is
    multiplied by ``weight * M + 1``. The per-channel loss is the mean over pixels.

    Args:
        alpha, omega, epsilon, theta: the paper's parameters (defaults 2.1, 14, 1, 0.5).
        use_weight_map: apply the weighted loss map.
        weight: ``W`` of the map (10 in the paper).
        weight_threshold: binarisation threshold of the dilated target (0.2).
        dilation: odd kernel size of the grey dilation (3).
        point_weights: optional ``K`` per-channel weights.
    """

    def __init__(
        self,
        alpha: float = 2.1,
        omega: float = 14.0,
        epsilon: float = 1.0,
        theta: float = 0.5,
        use_weight_map: bool = True,
        weight: float = 10.0,
        weight_threshold: float = 0.2,
        dilation: int = 3,
        point_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(point_weights)
        if dilation < 1 or dilation % 2 == 0:
            raise ValueError(f"dilation must be an odd kernel size, got {dilation}")
        if alpha <= 1.0:
            raise ValueError(f"alpha must exceed 1 (so that alpha - y > 0), got {alpha}")
        self.alpha, self.omega, self.epsilon, self.theta = alpha, omega, epsilon, theta
        self.use_weight_map = use_weight_map
        self.weight = weight
        self.weight_threshold = weight_threshold
        self.dilation = int(dilation)

    def per_channel(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_heatmaps(pred)
        y = target.clamp(0.0, 1.0)
        d = (pred - target).abs()
        power = self.alpha - y
        ratio = self.theta / self.epsilon
        a = self.omega / (1.0 + ratio**power) * power * ratio ** (power - 1.0) / self.epsilon
        c = self.theta * a - self.omega * torch.log1p(ratio**power)
        small = self.omega * torch.log1p((d / self.epsilon) ** power)
        large = a * d - c
        loss = torch.where(d < self.theta, small, large)
        if self.use_weight_map:
            pad = self.dilation // 2
            dilated = F.max_pool2d(target, self.dilation, stride=1, padding=pad)
            loss = loss * (1.0 + self.weight * (dilated >= self.weight_threshold).to(loss.dtype))
        return loss.mean(dim=(2, 3))


def _as_scale(scale: float | Sequence[float]) -> Tensor:
    s = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    if s.numel() not in (1, 2) or not torch.all(s > 0):
        raise ValueError(f"scale must be a positive float or an (sx, sy) pair, got {scale}")
    return s


class _CoordLoss(_PointWeighted):
    """Coordinate loss on normalised ``(B, K, 2)`` coords; errors are multiplied by ``scale``
    (a float, or ``(sx, sy)``: pass the input size ``(W, H)`` to work in input pixels)."""

    def __init__(self, scale: float | Sequence[float], point_weights: Sequence[float] | None) -> None:
        super().__init__(point_weights)
        self.register_buffer("scale", _as_scale(scale), persistent=False)

    def scaled_error(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_coords(pred)
        return (pred - target) * self.scale.to(dtype=pred.dtype, device=pred.device)


@LOSSES.register("smooth_l1")
class SmoothL1CoordLoss(_CoordLoss):
    """Smooth L1 (Huber-like) on scaled coordinate errors; per point the sum over ``x, y``.

    Args:
        beta: L2/L1 transition, in scaled units (pixels when ``scale`` is the input size).
        scale: multiplier of the normalised error (float or ``(sx, sy)``; default 256).
        point_weights: optional ``K`` per-point weights.
    """

    def __init__(self, beta: float = 1.0, scale: float | Sequence[float] = 256.0, point_weights: Sequence[float] | None = None) -> None:
        super().__init__(scale, point_weights)
        self.beta = float(beta)

    def per_channel(self, pred: Tensor, target: Tensor) -> Tensor:
        err = self.scaled_error(pred, target)
        zero = torch.zeros_like(err)
        return F.smooth_l1_loss(err, zero, reduction="none", beta=self.beta).sum(-1)


@LOSSES.register("wing")
class WingLoss(_CoordLoss):
    """Wing loss (Feng et al., CVPR 2018) on scaled coordinate errors ``x``::

        wing(x) = w * ln(1 + |x| / epsilon)   if |x| < w,   else   |x| - C,
        C = w - w * ln(1 + w / epsilon)

    per point the sum over ``x, y``. ``w`` and ``epsilon`` are in scaled units (pixels when
    ``scale`` is the input size).

    Args:
        w: width of the log region (10).
        epsilon: curvature of the log region (2).
        scale: multiplier of the normalised error (float or ``(sx, sy)``; default 256).
        point_weights: optional ``K`` per-point weights.
    """

    def __init__(
        self,
        w: float = 10.0,
        epsilon: float = 2.0,
        scale: float | Sequence[float] = 256.0,
        point_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scale, point_weights)
        if w <= 0 or epsilon <= 0:
            raise ValueError(f"w and epsilon must be positive, got {w}, {epsilon}")
        self.w = float(w)
        self.epsilon = float(epsilon)
        self.c = self.w - self.w * math.log1p(self.w / self.epsilon)

    def per_channel(self, pred: Tensor, target: Tensor) -> Tensor:
        x = self.scaled_error(pred, target).abs()
        loss = torch.where(x < self.w, self.w * torch.log1p(x / self.epsilon), x - self.c)
        return loss.sum(-1)


HEATMAP_TERMS = ("heatmap_mse", "adaptive_wing")
COORD_TERMS = ("wing", "smooth_l1")


@LOSSES.register("heatmap_coord")
class HeatmapCoordLoss(torch.nn.Module):
    """Joint loss on heatmaps and coordinates::

        heatmap_weight * heatmap_loss(heatmaps, target_heatmaps)
            + coord_weight * coord_loss(coords, target_coords)

    ``pred`` and ``target`` are ``(heatmaps, coords)`` pairs: heatmaps ``(B, K, H, W)`` (a list
    of them is deep supervision, averaged as by the heatmap loss) and normalised coordinates
    ``(B, K, 2)``. The landmark task fills the pair: a ``"hybrid"`` network's regression head
    gives ``coords``; for a plain heatmap network they are its heatmaps decoded by the
    differentiable soft-argmax (integral regression), so e.g. ``coord: wing`` trains a heatmap
    network with the wing loss on its decoded points while the heatmap term keeps the maps
    peaked. ``sample_weight`` and ``channel_weight`` apply to both terms.

    Args:
        heatmap: the heatmap term, ``"heatmap_mse"`` or ``"adaptive_wing"``.
        heatmap_cfg: its options (as in ``loss_cfg`` of that loss).
        coord: the coordinate term, ``"wing"`` or ``"smooth_l1"``.
        coord_cfg: its options (``scale: [W, H]`` makes its thresholds input pixels).
        heatmap_weight, coord_weight: the weights of the two terms (a heatmap MSE is ~1e-2 and a
            wing loss in pixels ~1 to 10, hence the small default ``coord_weight``).
        point_weights: optional ``K`` per-point weights, given to both terms.
    """

    needs_coords = True

    def __init__(
        self,
        heatmap: str = "heatmap_mse",
        heatmap_cfg: dict | None = None,
        coord: str = "wing",
        coord_cfg: dict | None = None,
        heatmap_weight: float = 1.0,
        coord_weight: float = 1e-3,
        point_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if heatmap not in HEATMAP_TERMS:
            raise ValueError(f"heatmap_coord: heatmap must be one of {HEATMAP_TERMS}, got {heatmap!r}")
        if coord not in COORD_TERMS:
            raise ValueError(f"heatmap_coord: coord must be one of {COORD_TERMS}, got {coord!r}")
        for name, w in (("heatmap_weight", heatmap_weight), ("coord_weight", coord_weight)):
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"heatmap_coord: {name} must be a finite number >= 0, got {w}")
        h_cfg, c_cfg = dict(heatmap_cfg or {}), dict(coord_cfg or {})
        if point_weights is not None:
            if "point_weights" in h_cfg or "point_weights" in c_cfg:
                raise ValueError("heatmap_coord: give point_weights once, not also in heatmap_cfg / coord_cfg")
            h_cfg["point_weights"] = c_cfg["point_weights"] = point_weights
        self.heatmap_loss = build_loss(heatmap, **h_cfg)
        self.coord_loss = build_loss(coord, **c_cfg)
        self.heatmap_weight = float(heatmap_weight)
        self.coord_weight = float(coord_weight)

    def terms(
        self,
        pred: Sequence,
        target: Sequence[Tensor],
        sample_weight: Tensor | None = None,
        channel_weight: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The two unweighted terms ``(heatmap loss, coordinate loss)``."""
        if len(pred) != 2 or len(target) != 2:
            raise ValueError("heatmap_coord expects (heatmaps, coords) pairs as pred and target")
        (heat, coords), (heat_t, coords_t) = pred, target
        return self.heatmap_loss(heat, heat_t, sample_weight, channel_weight), self.coord_loss(coords, coords_t, sample_weight, channel_weight)

    def forward(self, pred: Sequence, target: Sequence[Tensor], sample_weight: Tensor | None = None, channel_weight: Tensor | None = None) -> Tensor:
        heat, coord = self.terms(pred, target, sample_weight, channel_weight)
        return self.heatmap_weight * heat + self.coord_weight * coord


def geometric_prior(coords: Tensor, eps: float = 1e-6) -> Tensor:
    """Shape prior on landmark sets: the OFD and BPD should cross at right angles, mid to mid.

    With ``ofd = p1 - p0`` and ``bpd = p3 - p2`` (order ``[ofd_1, ofd_2, bpd_1, bpd_2]``)::

        penalty = |cos(angle(ofd, bpd))| + || mid(ofd) - mid(bpd) || / || ofd ||

    The first term is 0 for perpendicular diameters and 1 for parallel ones; the second is the
    offset between the two midpoints as a fraction of the OFD length. Both are invariant to
    translation, rotation and scale (the same value in input or normalised pixels, provided
    the axes share one scale), and the sum is ~0 (``O(eps / |ofd|)``) for a perpendicular cross
    sharing its centre. Norms are smoothed as ``sqrt(|v|^2 + eps^2)`` so gradients stay finite
    even for degenerate (zero-length) predictions. It is a soft anatomical prior: real BPD
    lines cross the OFD only approximately at its middle, so weight it lightly.

    Args:
        coords: ``(B, 4, 2)`` landmark coordinates (any common unit, e.g. the output of a
            codec's ``decode_torch`` in input pixels).
        eps: smoothing length, in the unit of ``coords``.

    Returns:
        ``(B,)`` penalties (differentiable).
    """
    if coords.ndim != 3 or coords.shape[1:] != (4, 2):
        raise ValueError(f"expected coords of shape (B, 4, 2), got {tuple(coords.shape)}")

    def norm(v: Tensor) -> Tensor:
        return torch.sqrt((v**2).sum(-1) + eps**2)

    ofd = coords[:, 1] - coords[:, 0]
    bpd = coords[:, 3] - coords[:, 2]
    cos = (ofd * bpd).sum(-1) / (norm(ofd) * norm(bpd))
    offset = 0.5 * (coords[:, 0] + coords[:, 1]) - 0.5 * (coords[:, 2] + coords[:, 3])
    return cos.abs() + norm(offset) / norm(ofd)
