"""Pure numpy/OpenCV geometry: landmark semantics, ellipses, biometry."""

from fetalbio.geometry.points import (
    REFERENCE_DIRECTION,
    CanonicalResult,
    canonicalize,
    canonicalize_batch,
    diameter_lengths,
    order_pair,
)

__all__ = [
    "REFERENCE_DIRECTION",
    "CanonicalResult",
    "canonicalize",
    "canonicalize_batch",
    "diameter_lengths",
    "order_pair",
]
