"""Head-aligned, scale-normalised crops: the frame of the refinement stage.

From an ellipse (centre, semi-axes, angle) in original-image pixels, :class:`HeadCrop` is the
similarity map (rotation + one scale + shift) that puts the ellipse's centre at the centre of a
``(W, H)`` crop, its long axis horizontal and its long axis ``2a`` spanning ``W / span`` crop
pixels (``span`` = 1.35: the crop is 1.35 long axes wide). Every head, small or large, tilted or
not, then looks the same size and way up to the refinement network.

Pixel centres are at integer coordinates in both frames (as :mod:`cv2.warpAffine` and
:class:`~fetalbio.data.transforms.Letterbox`), so points and ellipses map exactly both ways
(:meth:`HeadCrop.to_crop`, :meth:`HeadCrop.to_original`, :func:`~fetalbio.geometry.ellipse.transform_ellipse`).

A crop quacks like a :class:`~fetalbio.data.transforms.Letterbox` where decoding needs one
(``scale``, ``crop``, ``crop_to_original``, ``unapply``, ``to_original``), so the segmentation
decoder maps a crop-frame probability map back to the image without knowing which frame it had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from fetalbio.geometry.ellipse import Ellipse

# A coarse ellipse whose semi-minor axis is under this is no head to crop (original px).
MIN_SEMI_AXIS_PX = 4.0
# Crops with less than this share of their area inside the image are not refined.
MIN_INSIDE_FRACTION = 0.5


@dataclass(frozen=True)
class CropJitter:
    """Standard deviations of the training jitter of a crop (drawn independently):
    ``centre_frac`` of the semi-major axis per axis, ``log_scale`` of the crop scale (natural
    log), ``angle_deg`` of the crop angle; ``turn``: probability of a 180° turn; ``flip``:
    probability of a mirror image (the crop frame is symmetric, so both are label-preserving)."""

    centre_frac: float = 0.05
    log_scale: float = 0.05
    angle_deg: float = 6.0
    turn: float = 0.5
    flip: float = 0.5

    def __post_init__(self) -> None:
        for name in ("centre_frac", "log_scale", "angle_deg"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"jitter.{name} must be a number >= 0, got {v!r}")
        for name in ("turn", "flip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"jitter.{name} must be a probability in [0, 1], got {v!r}")


@dataclass(frozen=True)
class HeadCrop:
    """The similarity map original -> crop of one head (see the module docstring).

    ``cx, cy``: the crop centre in original px; ``k``: crop px per original px; ``theta``: the
    original-frame direction (radians) that becomes the crop's +x axis; ``mirror``: the crop is
    flipped top-bottom; ``src_size``/``dst_size``: ``(W, H)`` of the image and of the crop.
    """

    cx: float
    cy: float
    k: float
    theta: float
    src_size: tuple[int, int]
    dst_size: tuple[int, int]
    mirror: bool = False

    @classmethod
    def from_ellipse(cls, e: Ellipse, src_size: tuple[int, int], dst_size: tuple[int, int], span: float) -> "HeadCrop":
        """The crop of ``e``: long axis horizontal, ``2a * span`` original px across the crop."""
        if not e.a > 0:
            raise ValueError(f"cannot crop a degenerate ellipse (a = {e.a})")
        k = dst_size[0] / (2.0 * e.a * span)
        return cls(float(e.cx), float(e.cy), float(k), float(e.theta), (int(src_size[0]), int(src_size[1])), (int(dst_size[0]), int(dst_size[1])))

    def jittered(self, rng: np.random.Generator, a: float, jitter: CropJitter) -> "HeadCrop":
        """A randomly perturbed copy (training): centre, scale, angle, 180° turn, mirror."""
        dx, dy = rng.normal(0.0, jitter.centre_frac * a, size=2)
        ds = math.exp(rng.normal(0.0, jitter.log_scale))
        dth = math.radians(rng.normal(0.0, jitter.angle_deg))
        turn = rng.random() < jitter.turn
        mirror = rng.random() < jitter.flip
        return HeadCrop(self.cx + dx, self.cy + dy, self.k * ds, self.theta + dth + (math.pi if turn else 0.0), self.src_size, self.dst_size, mirror != self.mirror)

    # -- the maps ---------------------------------------------------------------------------
    def matrix(self) -> np.ndarray:
        """``(2, 3)`` affine original px -> crop px."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        sy = -1.0 if self.mirror else 1.0
        lin = self.k * np.array([[c, s], [-s * sy, c * sy]])
        ox, oy = (self.dst_size[0] - 1) / 2.0, (self.dst_size[1] - 1) / 2.0
        t = np.array([ox, oy]) - lin @ np.array([self.cx, self.cy])
        return np.hstack([lin, t[:, None]])

    def inverse(self) -> np.ndarray:
        """``(2, 3)`` affine crop px -> original px."""
        return cv2.invertAffineTransform(self.matrix())

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        m = self.matrix()
        p = np.asarray(points, dtype=np.float64)
        return p @ m[:, :2].T + m[:, 2]

    def to_original(self, points: np.ndarray) -> np.ndarray:
        m = self.inverse()
        p = np.asarray(points, dtype=np.float64)
        return p @ m[:, :2].T + m[:, 2]

    def apply(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """The ``(H_crop, W_crop)`` crop of an ``(H, W)`` image (zeros outside the image)."""
        return cv2.warpAffine(image, self.matrix(), self.dst_size, flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def inside_fraction(self) -> float:
        """Share of the crop's pixels that fall inside the image."""
        w, h = self.dst_size
        xs, ys = np.meshgrid(np.linspace(0, w - 1, 17), np.linspace(0, h - 1, 13))
        p = self.to_original(np.stack([xs.ravel(), ys.ravel()], axis=1))
        W, H = self.src_size
        inside = (p[:, 0] >= -0.5) & (p[:, 0] <= W - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] <= H - 0.5)
        return float(inside.mean())

    # -- the Letterbox face that decoding uses ------------------------------------------------
    @property
    def scale(self) -> tuple[float, float]:
        return self.k, self.k

    def crop(self, array: np.ndarray) -> np.ndarray:
        """No padding to remove: the whole crop is image."""
        return np.ascontiguousarray(array)

    def crop_to_original(self) -> np.ndarray:
        return self.inverse()

    def unapply(self, array: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """A crop-frame map back on the original ``(H, W)`` grid (zero outside the crop)."""
        return cv2.warpAffine(np.ascontiguousarray(array), self.inverse(), self.src_size, flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_problem(e: Ellipse | None, crop: HeadCrop | None) -> str:
    """Why a coarse ellipse cannot be refined ('' when it can)."""
    if e is None:
        return "no coarse ellipse"
    if not all(math.isfinite(v) for v in e.as_tuple()) or e.b < MIN_SEMI_AXIS_PX:
        return f"degenerate coarse ellipse (semi-axes {e.a:.3g}, {e.b:.3g} px)"
    if crop is not None:
        inside = crop.inside_fraction()
        if inside < MIN_INSIDE_FRACTION:
            return f"coarse ellipse mostly outside the image ({inside:.0%} of its crop inside)"
    return ""
