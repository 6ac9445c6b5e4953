"""Codec of the hybrid (heatmap + coordinate-regression) networks.

A ``"hybrid"`` model returns ``[*heatmaps, coords]`` (see :mod:`fetalbio.models`): Gaussian
heatmaps (the :class:`~fetalbio.codecs.heatmap.HeatmapCodec` conventions) and normalised
coordinates (the :class:`~fetalbio.codecs.regression.RegressionCodec` convention). Both are
trained; ``point_source`` says which one gives the decoded point:

``heatmap``
    the heatmap decoder's point (``decoder``: soft_argmax | argmax | argmax_refine);
``regression``
    the regression head's point;
``average``
    the mean of the two.

The uncertainty is the heatmap's (``uncertainty``: variance | entropy) whatever the source: the
regression head has none of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from fetalbio.codecs.heatmap import HeatmapCodec
from fetalbio.codecs.regression import RegressionCodec
from fetalbio.registry import CODECS

POINT_SOURCES = ("heatmap", "regression", "average")


@CODECS.register("hybrid")
class HybridCodec:
    """Points <-> (heatmaps, normalised coordinates); outputs ``[..., heatmaps, coords]`` -> points.

    Args:
        input_size: network input size ``(W, H)`` in pixels.
        output_stride: input pixels per heatmap pixel.
        sigma, decoder, uncertainty: the heatmap part (see :class:`HeatmapCodec`).
        point_source: ``"heatmap"`` | ``"regression"`` | ``"average"`` (module docstring).
    """

    kind = "hybrid"
    target_key = "heatmaps"

    def __init__(
        self,
        input_size: tuple[int, int],
        output_stride: int = 4,
        sigma: float = 2.0,
        decoder: str = "soft_argmax",
        uncertainty: str = "variance",
        point_source: str = "average",
    ) -> None:
        if point_source not in POINT_SOURCES:
            raise ValueError(f"unknown point_source {point_source!r}; valid: {', '.join(POINT_SOURCES)}")
        self.heatmap = HeatmapCodec(input_size, output_stride, sigma=sigma, decoder=decoder, uncertainty=uncertainty)
        self.regression = RegressionCodec(input_size)
        self.input_size = self.heatmap.input_size
        self.output_stride = self.heatmap.output_stride
        self.heatmap_size = self.heatmap.heatmap_size
        self.sigma = self.heatmap.sigma
        self.decoder = decoder
        self.point_source = point_source

    def __repr__(self) -> str:
        return f"HybridCodec({self.heatmap!r}, point_source={self.point_source!r})"

    def encode(self, points: np.ndarray, visible: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``heatmaps`` (K, Hh, Wh), ``coords`` (K, 2) and ``weights`` (K,): the heatmap codec's
        weights (0 for a missing point or one whose Gaussian lies off the map), used by both
        terms of the loss."""
        enc = self.heatmap.encode(points, visible)
        coords = self.regression.encode(points, visible)["coords"]
        coords[enc["weights"] == 0] = 0.0
        return {"heatmaps": enc["heatmaps"], "coords": coords, "weights": enc["weights"]}

    @staticmethod
    def _split(pred: Sequence) -> tuple:
        if not isinstance(pred, (list, tuple)) or len(pred) < 2:
            raise ValueError("a hybrid codec decodes a list [..., heatmaps (N, K, Hh, Wh), coords (N, K, 2)]")
        return pred[-2], pred[-1]

    def _combine(self, from_heatmap, from_regression):
        if self.point_source == "heatmap":
            return from_heatmap
        if self.point_source == "regression":
            return from_regression
        return 0.5 * (from_heatmap + from_regression)

    def decode(self, pred: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``[..., heatmaps (N, K, Hh, Wh), coords (N, K, 2)]`` -> points ``(N, K, 2)`` input px and
        the heatmap uncertainty ``(N, K)``."""
        heat, coords = self._split(pred)
        p_hm, unc = self.heatmap.decode(heat)
        p_reg, _ = self.regression.decode(coords)
        return self._combine(p_hm, p_reg), unc

    def decode_torch(self, pred: Sequence[Tensor]) -> Tensor:
        """Differentiable decode of ``[..., heatmaps, coords]`` -> ``(B, K, 2)`` input pixels (the
        heatmap part by the soft-argmax, as :meth:`HeatmapCodec.decode_torch`)."""
        heat, coords = self._split(pred)
        if self.point_source == "regression":
            return self.regression.decode_torch(coords)
        p_hm = self.heatmap.decode_torch(heat)
        if self.point_source == "heatmap":
            return p_hm
        return 0.5 * (p_hm + self.regression.decode_torch(coords).to(p_hm.dtype))


__all__ = ["POINT_SOURCES", "HybridCodec"]
