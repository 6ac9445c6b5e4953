"""Direct coordinate regression codec.

Targets are the input-pixel coordinates normalised by the input size with the *pixel-area*
convention shared with :mod:`fetalbio.codecs.heatmap`: input pixel ``i`` has its centre at
``x = i`` and covers ``[i - 0.5, i + 0.5]``, so the image spans ``[-0.5, W - 0.5]`` and

    c_x = (x + 0.5) / W,        x = c_x * W - 0.5        (same for y with H).

``c`` is in ``[0, 1]`` for points inside the image (points outside are not clipped, so the
round trip is exact).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fetalbio.registry import CODECS


@CODECS.register("regression")
class RegressionCodec:
    """Points <-> normalised ``(x, y)`` coordinates in ``[0, 1]``.

    Args:
        input_size: network input size ``(W, H)`` in pixels.
        output_stride: accepted for a uniform constructor and ignored.
    """

    kind = "regression"
    target_key = "coords"

    def __init__(self, input_size: tuple[int, int], output_stride: int = 1) -> None:
        w, h = (int(v) for v in input_size)
        if w <= 0 or h <= 0:
            raise ValueError(f"input_size must be positive (W, H), got {input_size}")
        self.input_size = (w, h)
        self.output_stride = int(output_stride)  # unused
        self._size = np.array([w, h], dtype=np.float64)

    def __repr__(self) -> str:
        return f"RegressionCodec(input_size={self.input_size})"

    def encode(self, points: np.ndarray, visible: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Encode one landmark set.

        Args:
            points: ``(K, 2)`` ``(x, y)`` in input pixels; NaN marks a missing point.
            visible: ``(K,)`` bool, or None for all visible.

        Returns:
            ``coords``: ``(K, 2)`` float32 normalised coordinates (0 where the weight is 0, so
            that a loss never sees NaN); ``weights``: ``(K,)`` float32, 0 for invisible or
            non-finite points, else 1.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"expected points of shape (K, 2), got {pts.shape}")
        k = pts.shape[0]
        vis = np.ones(k, bool) if visible is None else np.asarray(visible, bool).reshape(k)
        valid = vis & np.isfinite(pts).all(axis=1)
        coords = (np.where(valid[:, None], pts, 0.0) + 0.5) / self._size
        coords[~valid] = 0.0
        return {"coords": coords.astype(np.float32), "weights": valid.astype(np.float32)}

    def decode(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode normalised predictions.

        Args:
            pred: ``(N, K, 2)`` normalised coordinates.

        Returns:
            ``points`` ``(N, K, 2)`` float64 input pixels and ``uncertainty`` ``(N, K)``, all
            NaN (direct regression has no per-point uncertainty).
        """
        arr = np.asarray(pred, dtype=np.float64)
        if arr.ndim != 3 or arr.shape[2] != 2:
            raise ValueError(f"expected predictions of shape (N, K, 2), got {arr.shape}")
        points = arr * self._size - 0.5
        return points, np.full(arr.shape[:2], np.nan)

    def decode_torch(self, pred: Tensor) -> Tensor:
        """Differentiable decode: ``(B, K, 2)`` normalised -> ``(B, K, 2)`` input pixels."""
        if pred.ndim != 3 or pred.shape[2] != 2:
            raise ValueError(f"expected predictions of shape (B, K, 2), got {tuple(pred.shape)}")
        size = torch.as_tensor(self._size, dtype=pred.dtype, device=pred.device)
        return pred * size - 0.5
