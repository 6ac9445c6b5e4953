"""Keypoint codecs: points <-> training targets, and network outputs -> points.

A codec is the only place that knows the geometry of a target (mmpose style). Every codec
works in *network-input* pixels: ``(x, y)`` floats, origin at the top-left, where pixel
``(i, j)`` of the input image has its centre at ``(i, j)``. Mapping to original-image pixels
(letterbox) happens elsewhere.

Common interface (see :class:`~fetalbio.codecs.heatmap.HeatmapCodec`,
:class:`~fetalbio.codecs.regression.RegressionCodec`):

* ``kind``: ``"heatmap"``, ``"regression"`` or ``"hybrid"`` (both, for ``"hybrid"`` networks:
  :class:`~fetalbio.codecs.hybrid.HybridCodec`); ``target_key``: the key of ``encode``'s dict that
  holds the training target (``"heatmaps"`` / ``"coords"``; the hybrid codec's ``encode`` gives
  both, its ``decode`` takes the ``[..., heatmaps, coords]`` list);
* ``encode(points (K, 2), visible (K,) | None) -> dict(<target_key>=..., weights=(K,) float32)``;
* ``decode(pred numpy (N, ...)) -> (points (N, K, 2) input px, uncertainty (N, K))``;
* ``decode_torch(pred Tensor (B, ...)) -> Tensor (B, K, 2)`` input px, differentiable.

Build one with :func:`build_codec`.
"""

from __future__ import annotations

import inspect
from typing import Any

# importing the submodules registers their codecs in CODECS
from fetalbio.codecs.heatmap import HeatmapCodec
from fetalbio.codecs.hybrid import HybridCodec
from fetalbio.codecs.regression import RegressionCodec
from fetalbio.registry import CODECS


def _check_cfg(cls: type, cfg: dict[str, Any], fixed: tuple[str, ...]) -> None:
    """Raise TypeError naming every key of ``cfg`` that ``cls.__init__`` does not accept."""
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self" and p not in fixed]
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {cls.__name__}; valid: {sorted(valid)}")


def build_codec(name: str, input_size: tuple[int, int], output_stride: int, **cfg: Any) -> Any:
    """Build the codec registered as ``name``.

    Args:
        name: registered codec name (``CODECS.names()``); unknown names raise KeyError.
        input_size: network input size ``(W, H)`` in pixels.
        output_stride: input pixels per output pixel (ignored by coordinate regression).
        **cfg: codec-specific options; unknown keys raise TypeError naming them.
    """
    cls = CODECS.get(name)
    _check_cfg(cls, cfg, fixed=("input_size", "output_stride"))
    return cls(input_size=tuple(input_size), output_stride=int(output_stride), **cfg)


__all__ = ["CODECS", "HeatmapCodec", "HybridCodec", "RegressionCodec", "build_codec"]
