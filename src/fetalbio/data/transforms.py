"""Preprocessing (letterbox + intensity normalisation, optionally after a speckle filter and/or
CLAHE) with an exact point inverse, and the keypoint- and mask-aware training augmentation
(albumentations).

Letterbox: the image is resized by one scale factor so that it fits the network input
``(W_in, H_in)`` and padded symmetrically with zeros. Points map with the pixel-centre
convention of ``cv2.resize`` (pixel centres at integers):

    x_in = (x + 0.5) * sx - 0.5 + left,    sx = new_w / W

and back with :meth:`Letterbox.to_original`. ``sx`` and ``sy`` are the exact per-axis factors
after rounding the resized size, so the round trip is exact to float precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fetalbio.config import NORMALIZE_STEPS, AugmentConfig  # NORMALIZE_STEPS: train.normalize's one list
from fetalbio.geometry.points import canonicalize_batch

if TYPE_CHECKING:  # albumentations is imported where augmentation is built: prediction does not need it
    import albumentations as A

__all__ = ["NORMALIZE_STEPS", "AugmentConfig", "Letterbox", "anisotropic_diffusion", "augment", "build_augment", "network_input", "normalize"]


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterboxed image. Sizes are (W, H)."""

    src_size: tuple[int, int]
    dst_size: tuple[int, int]
    new_size: tuple[int, int]
    left: int
    top: int

    @classmethod
    def fit(cls, src_size: tuple[int, int], dst_size: tuple[int, int]) -> "Letterbox":
        w, h = src_size
        dw, dh = dst_size
        s = min(dw / w, dh / h)
        nw, nh = max(1, min(dw, round(w * s))), max(1, min(dh, round(h * s)))
        return cls(src_size=(int(w), int(h)), dst_size=(int(dw), int(dh)), new_size=(nw, nh), left=(dw - nw) // 2, top=(dh - nh) // 2)

    @property
    def scale(self) -> tuple[float, float]:
        return self.new_size[0] / self.src_size[0], self.new_size[1] / self.src_size[1]

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) original-image px -> network-input px."""
        sx, sy = self.scale
        p = np.asarray(points, dtype=np.float64)
        return np.stack([(p[..., 0] + 0.5) * sx - 0.5 + self.left, (p[..., 1] + 0.5) * sy - 0.5 + self.top], axis=-1)

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) network-input px -> original-image px (exact inverse of :meth:`to_input`)."""
        sx, sy = self.scale
        p = np.asarray(points, dtype=np.float64)
        return np.stack([(p[..., 0] - self.left + 0.5) / sx - 0.5, (p[..., 1] - self.top + 0.5) / sy - 0.5], axis=-1)

    def apply(self, image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """(H, W) array -> (H_in, W_in) letterboxed array (zero padding)."""
        out = np.zeros((self.dst_size[1], self.dst_size[0]), dtype=image.dtype)
        resized = cv2.resize(image, self.new_size, interpolation=interpolation)
        out[self.top : self.top + self.new_size[1], self.left : self.left + self.new_size[0]] = resized
        return out

    def crop(self, array: np.ndarray) -> np.ndarray:
        """(H_in, W_in) array -> the resized image's own region (padding removed), contiguous."""
        return np.ascontiguousarray(array[self.top : self.top + self.new_size[1], self.left : self.left + self.new_size[0]])

    def crop_to_original(self) -> np.ndarray:
        """``(2, 3)`` affine map from :meth:`crop` px to original-image px (pixel centres at
        integers, as :meth:`to_original` and ``cv2.resize``)."""
        sx, sy = self.scale
        return np.array([[1.0 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1.0 / sy, 0.5 / sy - 0.5]])

    def unapply(self, array: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """(H_in, W_in) float map -> (H, W) map on the original image grid (padding cropped)."""
        return cv2.resize(self.crop(array), self.src_size, interpolation=interpolation)

    def as_dict(self) -> dict:
        return asdict(self)


# Speckle filters (write-up 000's "denoising"), on the letterboxed uint8 image: the same call in
# training (after augmentation) and in prediction, so both see identical inputs.
MEDIAN_KSIZE = 3
BILATERAL_D, BILATERAL_SIGMA_COLOR, BILATERAL_SIGMA_SPACE = 5, 20.0, 2.0
DIFFUSION_ITERS, DIFFUSION_KAPPA, DIFFUSION_STEP = 10, 15.0, 0.2


def anisotropic_diffusion(image: np.ndarray, iterations: int = DIFFUSION_ITERS, kappa: float = DIFFUSION_KAPPA,
                          step: float = DIFFUSION_STEP) -> np.ndarray:
    """Perona-Malik anisotropic diffusion of a uint8 (H, W) image -> uint8 (H, W).

    ``iterations`` explicit steps ``I += step * sum_n g(|dI_n|) dI_n`` over the four neighbours,
    with the edge-stopping conductance ``g(d) = 1 / (1 + (d / kappa)^2)`` (grey levels): speckle
    (small differences) is smoothed, strong edges such as the skull are kept. Zero flux across
    the image border; ``step <= 0.25`` keeps the scheme stable.
    """
    if not 0 < step <= 0.25 or kappa <= 0 or iterations < 0:
        raise ValueError(f"anisotropic_diffusion: need 0 < step <= 0.25, kappa > 0, iterations >= 0; got {step}, {kappa}, {iterations}")
    x = image.astype(np.float32)
    inv_k2 = np.float32(1.0 / kappa**2)
    for _ in range(iterations):
        p = np.pad(x, 1, mode="edge")
        flux = np.zeros_like(x)
        for d in (p[:-2, 1:-1] - x, p[2:, 1:-1] - x, p[1:-1, :-2] - x, p[1:-1, 2:] - x):
            flux += d / (1.0 + d * d * inv_k2)
        x = x + np.float32(step) * flux
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _step(img: np.ndarray, name: str) -> np.ndarray:
    if name == "clahe":
        return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(img)
    if name == "median":
        return cv2.medianBlur(img, MEDIAN_KSIZE)
    if name == "bilateral":
        return cv2.bilateralFilter(img, BILATERAL_D, BILATERAL_SIGMA_COLOR, BILATERAL_SIGMA_SPACE)
    return anisotropic_diffusion(img)


def normalize(image: np.ndarray, method: str = "zscore") -> np.ndarray:
    """uint8 (H, W) -> float32 (H, W), per-image z-score, after the steps ``method`` names.

    ``method`` (``train.normalize``): ``zscore`` (none), ``clahe``, a speckle filter --
    ``median`` (3x3 median), ``bilateral`` (5 px, sigma 20 grey levels / 2 px) or
    ``diffusion`` (:func:`anisotropic_diffusion`) -- or a filter then CLAHE (``median_clahe``,
    ``bilateral_clahe``, ``diffusion_clahe``). See :data:`NORMALIZE_STEPS`.
    """
    try:
        steps = NORMALIZE_STEPS[method]
    except KeyError:
        raise ValueError(f"unknown normalisation {method!r}; valid: {', '.join(NORMALIZE_STEPS)}") from None
    img = np.ascontiguousarray(image)
    for name in steps:
        img = _step(img, name)
    x = img.astype(np.float32)
    return (x - x.mean()) / max(float(x.std()), 1e-6)


def network_input(image: np.ndarray, frame, method: str = "zscore") -> np.ndarray:
    """The one preprocessing of every network: ``frame`` (a :class:`Letterbox`, or a
    head-aligned :class:`~fetalbio.geometry.crop.HeadCrop`: anything with ``apply``) maps the
    uint8 image into network-input space, then :func:`normalize` -> float32 ``(H_in, W_in)``.
    Prediction, held-out prediction and the refinement stage call it; training augments the
    framed image in between (the datasets), so it calls the two halves itself."""
    return normalize(frame.apply(image), method)


def build_augment(cfg: AugmentConfig) -> A.Compose:
    """Keypoint- and mask-aware augmentation; keypoints leaving the frame are kept (not clipped)."""
    import albumentations as A

    ops: list = []
    if cfg.rotate_deg or cfg.scale or cfg.shift:
        ops.append(A.Affine(rotate=(-cfg.rotate_deg, cfg.rotate_deg), scale=(1 - cfg.scale, 1 + cfg.scale),
                            translate_percent=(-cfg.shift, cfg.shift), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.8))
    if cfg.hflip:
        ops.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.brightness_contrast:
        ops.append(A.RandomBrightnessContrast(brightness_limit=cfg.brightness_contrast, contrast_limit=cfg.brightness_contrast, p=0.5))
    if cfg.gamma:
        ops.append(A.RandomGamma(gamma_limit=(100 * (1 - cfg.gamma), 100 * (1 + cfg.gamma)), p=0.3))
    if cfg.speckle:
        ops.append(A.MultiplicativeNoise(multiplier=(1 - cfg.speckle, 1 + cfg.speckle), elementwise=True, p=0.3))
    if cfg.elastic:
        ops.append(A.ElasticTransform(alpha=20, sigma=5, p=0.2))
    return A.Compose(ops, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))


def augment(pipeline: A.Compose, image: np.ndarray, points: np.ndarray | None, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Apply ``pipeline`` to an (H, W) uint8 image, its (4, 2) points and (H, W) mask together;
    points come back in canonical order (the flip swaps left and right)."""
    kw: dict = {"image": image}
    kw["keypoints"] = np.asarray(points, dtype=np.float32) if points is not None else np.zeros((0, 2), np.float32)
    if mask is not None:
        kw["mask"] = mask
    out = pipeline(**kw)
    pts = None
    if points is not None:
        pts = canonicalize_batch(np.asarray(out["keypoints"], dtype=np.float64).reshape(1, 4, 2))[0]
    return out["image"], pts, out.get("mask")
