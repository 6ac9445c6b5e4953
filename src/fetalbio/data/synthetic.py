"""Synthetic fetal-head-like datasets with known geometry, for tests and demos.

Each image shows a bright elliptical ring (the "skull") on speckle-like noise; the landmarks are
the ellipse's axis endpoints, the mask is the filled ellipse. Written in the *challenge* layout
(``images/``, ``landmarks.csv``, ``masks/``, ``hc18_reference.csv``) or the *HC18* layout
(``training_set/NNN_HC.png`` + ``NNN_HC_Annotation.png`` + the pixel-size CSV).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fetalbio import POINT_COLUMNS


@dataclass(frozen=True)
class SynthEllipse:
    cx: float
    cy: float
    a: float  # semi-major, px
    b: float  # semi-minor, px
    theta_deg: float

    def endpoints(self) -> np.ndarray:
        """(4, 2): major-axis endpoints then minor-axis endpoints."""
        t = np.radians(self.theta_deg)
        u = np.array([np.cos(t), np.sin(t)])
        v = np.array([-np.sin(t), np.cos(t)])
        c = np.array([self.cx, self.cy])
        return np.stack([c - self.a * u, c + self.a * u, c - self.b * v, c + self.b * v])


def random_ellipse(rng: np.random.Generator, size: tuple[int, int]) -> SynthEllipse:
    w, h = size
    a = rng.uniform(0.22, 0.34) * min(w, h) * 1.2
    b = a * rng.uniform(0.7, 0.88)
    return SynthEllipse(
        cx=float(w / 2 + rng.uniform(-0.08, 0.08) * w),
        cy=float(h / 2 + rng.uniform(-0.08, 0.08) * h),
        a=float(a),
        b=float(b),
        theta_deg=float(rng.uniform(-40, 40)),
    )


def render(e: SynthEllipse, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (H, W), mask uint8 (H, W) in {0, 255})."""
    w, h = size
    img = rng.gamma(2.0, 18.0, size=(h, w)).clip(0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    centre = (int(round(e.cx * 16)), int(round(e.cy * 16)))
    axes = (int(round(e.a * 16)), int(round(e.b * 16)))
    thick = max(2, int(0.06 * e.b))
    cv2.ellipse(img, centre, axes, e.theta_deg, 0, 360, 220, thick, cv2.LINE_AA, shift=4)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, centre, axes, e.theta_deg, 0, 360, 255, -1, cv2.LINE_AA, shift=4)
    mask = np.where(mask > 127, 255, 0).astype(np.uint8)
    return img, mask


def make_challenge_dataset(
    root: Path,
    n_subjects: int = 12,
    images_per_subject: tuple[int, ...] = (1, 2),
    size: tuple[int, int] = (200, 140),
    seed: int = 0,
    swap_columns: bool = True,
) -> pd.DataFrame:
    """Write a challenge-layout dataset under ``root``; returns its landmark table.

    With ``swap_columns`` the ``ofd_*`` columns hold the *shorter* diameter, as in the real data.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows, ref = [], []
    for s in range(n_subjects):
        n_img = images_per_subject[s % len(images_per_subject)]
        for k in range(n_img):
            name = f"{s:03d}_HC.png" if k == 0 else f"{s:03d}_{k + 1}HC.png"
            e = random_ellipse(rng, size)
            img, mask = render(e, size, rng)
            cv2.imwrite(str(root / "images" / name), img)
            cv2.imwrite(str(root / "masks" / name), mask)
            pts = e.endpoints()
            if swap_columns:
                pts = pts[[2, 3, 0, 1]]
            rows.append({"image_name": name, **dict(zip(POINT_COLUMNS, np.round(pts, 2).reshape(-1)))})
            spacing = float(rng.uniform(0.1, 0.2))
            hc = float(np.pi * (3 * (e.a + e.b) - np.sqrt((3 * e.a + e.b) * (e.a + 3 * e.b)))) * spacing
            ref.append({"image_name": name, "pixel_size_mm": round(spacing, 6), "hc_mm": round(hc, 3)})
    lm = pd.DataFrame(rows)
    lm.to_csv(root / "landmarks.csv", index=False)
    pd.DataFrame(ref).to_csv(root / "hc18_reference.csv", index=False)
    return lm


def make_hc18_dataset(root: Path, n_images: int = 6, size: tuple[int, int] = (200, 140), seed: int = 0) -> list[SynthEllipse]:
    """Write an HC18-layout dataset (1-px outline annotations); returns the true ellipses."""
    rng = np.random.default_rng(seed)
    ts = root / "training_set"
    ts.mkdir(parents=True, exist_ok=True)
    ellipses, rows = [], []
    for i in range(n_images):
        name = f"{i:03d}_HC.png"
        e = random_ellipse(rng, size)
        img, _ = render(e, size, rng)
        cv2.imwrite(str(ts / name), img)
        ann = np.zeros((size[1], size[0]), np.uint8)
        cv2.ellipse(ann, (int(round(e.cx * 16)), int(round(e.cy * 16))), (int(round(e.a * 16)), int(round(e.b * 16))), e.theta_deg, 0, 360, 255, 1, cv2.LINE_8, shift=4)
        cv2.imwrite(str(ts / f"{i:03d}_HC_Annotation.png"), ann)
        rows.append({"filename": name, "pixel size(mm)": 0.15, "head circumference (mm)": 100.0})
        ellipses.append(e)
    pd.DataFrame(rows).to_csv(ts / "training_set_pixel_size_and_HC.csv", index=False)
    return ellipses
