"""Letterbox geometry (exact point inverse, pixel-centre convention) and the augmentation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fetalbio.data.transforms import AugmentConfig, Letterbox, augment, build_augment
from fetalbio.geometry.points import canonicalize

SOURCES = [(800, 540), (540, 800), (100, 100)]
TARGETS = [(128, 96), (96, 128)]
NO_AUG = dict(rotate_deg=0.0, scale=0.0, shift=0.0, hflip=0.0, brightness_contrast=0.0, gamma=0.0, speckle=0.0)


def _centroid(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(img)
    w = img[ys, xs].astype(np.float64)
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


# ------------------------------------------------------------------------------ Letterbox


@pytest.mark.parametrize("src", SOURCES)
@pytest.mark.parametrize("dst", TARGETS)
def test_letterbox_fit_geometry(src: tuple[int, int], dst: tuple[int, int]) -> None:
    lb = Letterbox.fit(src, dst)
    nw, nh = lb.new_size
    assert nw <= dst[0] and nh <= dst[1]
    assert nw == dst[0] or nh == dst[1]  # fits tightly along one axis
    assert lb.left == (dst[0] - nw) // 2 and lb.top == (dst[1] - nh) // 2
    assert abs(nw / src[0] - nh / src[1]) <= 1.0 / min(src)  # one scale factor (up to rounding)


@pytest.mark.parametrize("src", SOURCES)
@pytest.mark.parametrize("dst", TARGETS)
def test_letterbox_point_round_trip_is_exact(src: tuple[int, int], dst: tuple[int, int]) -> None:
    lb = Letterbox.fit(src, dst)
    rng = np.random.default_rng(hash((src, dst)) % 2**32)
    # inside the image, on its pixel-area border and somewhat outside it
    pts = rng.uniform([-20.0, -20.0], [src[0] + 20.0, src[1] + 20.0], size=(200, 2))
    pts = np.concatenate([pts, [[-0.5, -0.5], [src[0] - 0.5, src[1] - 0.5], [0.0, 0.0]]])
    back = lb.to_original(lb.to_input(pts))
    np.testing.assert_allclose(back, pts, rtol=0, atol=1e-9)
    fwd = lb.to_input(lb.to_original(pts[:50] / 4))
    np.testing.assert_allclose(fwd, pts[:50] / 4, rtol=0, atol=1e-9)
    # batch shape (N, 4, 2) is kept
    assert lb.to_input(pts[:8].reshape(2, 4, 2)).shape == (2, 4, 2)
    # the pixel-area corners of the image map to the corners of the resized region
    corners = lb.to_input(np.array([[-0.5, -0.5], [src[0] - 0.5, src[1] - 0.5]]))
    np.testing.assert_allclose(corners[0], [lb.left - 0.5, lb.top - 0.5], atol=1e-9)
    np.testing.assert_allclose(corners[1], [lb.left + lb.new_size[0] - 0.5, lb.top + lb.new_size[1] - 0.5], atol=1e-9)


@pytest.mark.parametrize("src", SOURCES)
@pytest.mark.parametrize("dst", TARGETS)
def test_letterbox_apply_puts_marker_where_to_input_says(src: tuple[int, int], dst: tuple[int, int]) -> None:
    lb = Letterbox.fit(src, dst)
    w, h = src
    for cx, cy in [(w // 3, h // 2), (2 * w // 3 + 1, h // 4), (w // 2, 3 * h // 4 - 1)]:
        img = np.zeros((h, w), np.float32)
        r = max(2, min(w, h) // 25)  # a square centred on pixel centre (cx, cy)
        img[cy - r : cy + r + 1, cx - r : cx + r + 1] = 1.0
        out = lb.apply(img)
        assert out.shape == (dst[1], dst[0]) and out.dtype == img.dtype
        expect = lb.to_input(np.array([cx, cy], dtype=np.float64))
        assert np.abs(_centroid(out) - expect).max() <= 0.25, (src, dst, (cx, cy), _centroid(out), expect)
    # padding is zero, the resized image occupies [top:top+nh, left:left+nw]
    ones = lb.apply(np.ones((h, w), np.uint8))
    nw, nh = lb.new_size
    assert ones.sum() == nw * nh
    assert ones[lb.top : lb.top + nh, lb.left : lb.left + nw].all()


@pytest.mark.parametrize("src", SOURCES)
@pytest.mark.parametrize("dst", TARGETS)
def test_letterbox_unapply_restores_a_smooth_image(src: tuple[int, int], dst: tuple[int, int]) -> None:
    lb = Letterbox.fit(src, dst)
    w, h = src
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = (0.5 + 0.3 * np.sin(2 * np.pi * xx / w) * np.cos(np.pi * yy / h) + 0.2 * xx / w).astype(np.float32)
    back = lb.unapply(lb.apply(smooth))
    assert back.shape == smooth.shape
    inner = (slice(h // 20 + 2, h - h // 20 - 2), slice(w // 20 + 2, w - w // 20 - 2))
    err = np.abs(back - smooth)[inner]
    assert err.max() < 0.03 and err.mean() < 0.005, (err.max(), err.mean())


# ------------------------------------------------------------------------------ augmentation


def _picture(w: int = 96, h: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(h, w), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[10:40, 5:30] = 1  # asymmetric, so a wrong flip shows
    mask[45:50, 60:90] = 1
    pts = canonicalize(np.array([[12.0, 30.0], [70.0, 26.5], [38.25, 8.0], [41.0, 55.0]])).points
    return img, pts, mask


def test_hflip_mirrors_points_and_mask_and_keeps_canonical_order() -> None:
    img, pts, mask = _picture()
    h, w = img.shape
    pipe = build_augment(AugmentConfig(**{**NO_AUG, "hflip": 1.0}))
    out_img, out_pts, out_mask = augment(pipe, img, pts, mask)
    np.testing.assert_array_equal(out_img, np.fliplr(img))
    np.testing.assert_array_equal(out_mask, np.fliplr(mask))
    mirrored = pts.copy()
    mirrored[:, 0] = w - 1 - mirrored[:, 0]
    # same point set, mirrored with the pixel-centre convention (x -> W - 1 - x)
    assert sorted(map(tuple, np.round(out_pts, 6))) == sorted(map(tuple, np.round(mirrored, 6)))
    # ... and in canonical order: OFD the longer pair, OFD point 1 leftmost, BPD point 1 on
    # the side of the OFD that its normal (-d_y, d_x) points away from
    np.testing.assert_allclose(out_pts, canonicalize(mirrored).points, atol=1e-5)
    d = out_pts[1] - out_pts[0]
    normal = np.array([-d[1], d[0]])
    assert out_pts[0, 0] < out_pts[1, 0] and out_pts[2] @ normal < out_pts[3] @ normal
    assert np.linalg.norm(out_pts[1] - out_pts[0]) >= np.linalg.norm(out_pts[3] - out_pts[2])
    # the flip reverses the left-right order, so the raw flipped order is NOT canonical
    assert not np.allclose(out_pts, mirrored)


def test_augment_without_points_or_mask() -> None:
    img, _, _ = _picture()
    pipe = build_augment(AugmentConfig(**{**NO_AUG, "hflip": 1.0}))
    out_img, out_pts, out_mask = augment(pipe, img, None, None)
    np.testing.assert_array_equal(out_img, np.fliplr(img))
    assert out_pts is None and out_mask is None


def test_points_leaving_the_frame_are_kept_unclipped() -> None:
    img, _, mask = _picture()
    h, w = img.shape
    # points close to the border: a large shift moves some of them out of the frame
    pts = canonicalize(np.array([[2.0, 30.0], [93.0, 32.0], [47.0, 1.0], [49.0, 62.0]])).points
    pipe = build_augment(AugmentConfig(**{**NO_AUG, "shift": 0.4}))
    pipe.set_random_seed(0)
    n_outside = 0
    for _ in range(12):
        _, out_pts, out_mask = augment(pipe, img, pts, mask)
        assert out_pts.shape == (4, 2) and np.isfinite(out_pts).all()
        d = out_pts - pts  # pure translation: every point moves by the same vector
        np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape), atol=1e-4)
        outside = (out_pts[:, 0] < -0.5) | (out_pts[:, 0] > w - 0.5) | (out_pts[:, 1] < -0.5) | (out_pts[:, 1] > h - 0.5)
        n_outside += int(outside.sum())
        if out_mask.sum() == mask.sum():  # mask fully inside: it moved by the same vector
            np.testing.assert_allclose(_centroid(out_mask) - _centroid(mask), d[0], atol=1e-6)
    assert n_outside > 0, "the test never moved a point out of the frame"


def test_geometric_augmentation_moves_image_and_points_together() -> None:
    w, h = 128, 96
    pts = canonicalize(np.array([[30.0, 40.0], [100.0, 50.0], [64.0, 20.0], [66.0, 80.0]])).points
    img = np.zeros((h, w), np.uint8)
    for p in pts:  # anti-aliased disks centred on the points (sub-pixel, shift=4)
        cv2.circle(img, (int(round(p[0] * 16)), int(round(p[1] * 16))), 3 * 16, 255, -1, cv2.LINE_AA, shift=4)
    pipe = build_augment(AugmentConfig(rotate_deg=30, scale=0.2, shift=0.1, hflip=0.5, brightness_contrast=0, gamma=0, speckle=0))
    pipe.set_random_seed(3)
    checked = 0
    for _ in range(10):
        out, out_pts, _ = augment(pipe, img, pts, None)
        _, labels = cv2.connectedComponents((out > 0).astype(np.uint8))
        for q in out_pts:
            if not (4 <= q[0] < w - 4 and 4 <= q[1] < h - 4):
                continue
            blob = np.where(labels == labels[int(round(q[1])), int(round(q[0]))], out, 0)
            assert np.abs(_centroid(blob) - q).max() <= 0.5
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize(("src", "dst"), [((800, 540), (192, 128)), ((540, 800), (128, 96)), ((301, 217), (64, 64))])
def test_letterbox_crop_and_its_map_to_the_original(src: tuple[int, int], dst: tuple[int, int]) -> None:
    lb = Letterbox.fit(src, dst)
    arr = np.arange(dst[0] * dst[1], dtype=np.float32).reshape(dst[1], dst[0])
    crop = lb.crop(arr)
    assert crop.shape == (lb.new_size[1], lb.new_size[0]) and crop.flags["C_CONTIGUOUS"]
    assert crop[0, 0] == arr[lb.top, lb.left]
    # a crop pixel (x, y) is the input pixel (x + left, y + top): the affine map agrees with to_original
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, min(lb.new_size), size=(20, 2))
    m = lb.crop_to_original()
    via_matrix = pts @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(via_matrix, lb.to_original(pts + [lb.left, lb.top]), atol=1e-9)
