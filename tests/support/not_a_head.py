"""Pictures that are not a fetal head in ultrasound, made on the fly (no files in the repo):
blank frames, noise, a natural-photograph-like scene, a line drawing of a head, and ultrasound
of something else (a speckled scan sector with a dark cyst and no skull)."""

from __future__ import annotations

import cv2
import numpy as np

SIZE = (800, 540)  # (W, H), as the development data


def _sector(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - w / 2, yy + 60)
    ang = np.degrees(np.arctan2(xx - w / 2, yy + 60))
    inside = (r > 80) & (r < h + 40) & (np.abs(ang) < 40)
    return inside, r


def make_not_a_head(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w, h = SIZE
    out: dict[str, np.ndarray] = {}
    out["blank_black"] = np.zeros((h, w), np.uint8)
    out["blank_white"] = np.full((h, w), 255, np.uint8)
    out["noise"] = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    # a photograph-like scene: sky gradient, hills, a sun, blurred texture
    yy, xx = np.mgrid[0:h, 0:w]
    photo = (170 - 0.15 * yy + 8 * np.sin(xx / 37.0)).astype(np.float64)
    photo[yy > 300 + 40 * np.sin(xx / 90.0)] = 90
    cv2.circle(photo, (620, 110), 55, 235, -1)
    photo += cv2.GaussianBlur(rng.normal(0, 12, size=(h, w)), (0, 0), 3)
    out["photo"] = np.clip(photo, 0, 255).astype(np.uint8)
    # a line drawing of a head on white paper
    drawing = np.full((h, w), 250, np.uint8)
    cv2.ellipse(drawing, (400, 270), (180, 140), 15, 0, 360, 30, 3, cv2.LINE_AA)
    cv2.line(drawing, (300, 250), (500, 300), 30, 2, cv2.LINE_AA)
    out["drawing"] = drawing
    # ultrasound of something else: speckle in a scan sector, a dark cyst, no skull ring
    inside, r = _sector(rng)
    speckle = rng.rayleigh(35.0, size=(h, w)) * (1.0 - 0.0008 * r)
    speckle = cv2.GaussianBlur(speckle, (0, 0), 1.2)
    cv2.ellipse(speckle, (410, 300), (90, 60), 0, 0, 360, 4.0, -1)
    us = np.where(inside, np.clip(speckle, 0, 255), 0)
    out["other_ultrasound"] = us.astype(np.uint8)
    return out
