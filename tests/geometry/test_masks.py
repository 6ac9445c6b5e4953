"""Segmentation post-processing: outline filling, mask cleaning, mask → ellipse (and failures)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fetalbio.geometry import (
    FAILURE_REASONS,
    Ellipse,
    boundary_points,
    ellipse_endpoints,
    ellipse_to_mask,
    estimate_edge_offset_px,
    fill_holes,
    fill_outline,
    largest_component,
    mask_edge_offset_px,
    mask_to_ellipse,
    perimeter_offset_px,
    point_ellipse_distance,
    shrink_ellipse,
)

SIZE = (400, 320)  # (W, H)
TRUE = Ellipse(200.3, 150.7, 120.0, 85.0, 0.6)


def errors(e: Ellipse, ref: Ellipse = TRUE) -> np.ndarray:
    """|Δcx|, |Δcy|, |Δa|, |Δb| in px and |Δθ| in degrees."""
    dth = math.degrees(abs(math.remainder(e.theta - ref.theta, math.pi)))
    return np.abs([e.cx - ref.cx, e.cy - ref.cy, e.a - ref.a, e.b - ref.b, dth])


def corrupted_mask(seed: int = 0, salt: float = 0.03) -> np.ndarray:
    """TRUE as a filled mask with a wedge cut out, a spur and salt-and-pepper noise."""
    rng = np.random.default_rng(seed)
    m = ellipse_to_mask(TRUE, SIZE)
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    ang = np.arctan2(yy - TRUE.cy, xx - TRUE.cx)
    m[((ang - 2.0) % (2 * np.pi)) < 0.2 * 2 * np.pi] = 0  # wedge: 20% of the angles, to the centre
    d = np.array([math.cos(-1.2), math.sin(-1.2)])
    p0, p1 = TRUE.centre + 60 * d, TRUE.centre + 150 * d  # spur: ~55 px sticking out, 2 px wide
    cv2.line(m, tuple(int(v) for v in np.round(p0)), tuple(int(v) for v in np.round(p1)), 1, 2)
    flip = rng.random(m.shape) < salt
    m[flip] = 1 - m[flip]
    return m


# -- mask → ellipse: recovery ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["ransac", "irls"])
def test_mask_to_ellipse_robust_recovers_corrupted_ellipse(method):
    m = corrupted_mask()
    # the corruption is real: the wedge removes ~19% of the area, the spur sticks out
    ref = ellipse_to_mask(TRUE, SIZE)
    assert ((ref == 1) & (m == 0)).sum() > 0.15 * ref.sum()
    assert ((ref == 0) & (m == 1) & (largest_component(m) == 1)).sum() > 100
    res = mask_to_ellipse(m, method=method, seed=0)
    assert res.ok and res.reason == ""
    err = errors(res.ellipse)
    assert np.all(err[:4] < 1.0), err  # centre and semi-axes within 1 px
    assert err[4] < 1.0, err  # angle within 1 degree
    np.testing.assert_allclose(res.points, ellipse_endpoints(res.ellipse))
    assert 0.5 < res.inlier_fraction < 0.8  # the wedge's radii and the spur are rejected
    assert res.residual_px < 0.5
    assert res.n_points > 500 and res.area_px > 0

    # the same input with a plain least-squares fit: the outliers drag it several px away
    plain = mask_to_ellipse(m, method="plain", min_inlier_fraction=0.0)
    plain_err = errors(plain.ellipse)
    assert plain_err.max() > 5.0 * max(err.max(), 0.2), (plain_err, err)
    assert plain_err[:4].max() > 5.0 and plain_err[4] > 5.0
    # and with the default checks the plain fit is rejected rather than reported
    rejected = mask_to_ellipse(m, method="plain")
    assert not rejected.ok and rejected.reason == "poor_fit"


def test_mask_to_ellipse_clean_binary_mask_subpixel_is_unbiased():
    m = ellipse_to_mask(TRUE, SIZE)
    sub = mask_to_ellipse(m)
    assert np.all(errors(sub.ellipse) < 0.1), errors(sub.ellipse)
    # pixel-centre contours sit ~half a pixel inside the edge: both semi-axes shrink
    centres = mask_to_ellipse(m, subpixel=False)
    assert centres.ok
    assert centres.ellipse.a < TRUE.a - 0.25 and centres.ellipse.b < TRUE.b - 0.25


def test_mask_to_ellipse_probability_map_iso_contour():
    # a smooth probability map whose 0.5 level set is exactly TRUE
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    d = point_ellipse_distance(np.stack([xx.ravel(), yy.ravel()], 1), TRUE, signed=True).reshape(xx.shape)
    prob = (1.0 / (1.0 + np.exp(d / 2.0))).astype(np.float32)
    res = mask_to_ellipse(prob)
    assert res.ok
    assert np.all(errors(res.ellipse) < 0.02), errors(res.ellipse)
    assert res.residual_px < 0.02
    # boundary points lie on the iso-contour
    pts = boundary_points(prob >= 0.5, prob, 0.5)
    assert point_ellipse_distance(pts, TRUE).max() < 0.05
    # a higher threshold gives a smaller ellipse (level set of p = 0.8 is 2 ln 4 ≈ 2.77 px inside)
    inner = mask_to_ellipse(prob, threshold=0.8)
    assert inner.ellipse.a == pytest.approx(TRUE.a - 2 * math.log(4), abs=0.05)


def test_mask_to_ellipse_accepts_uint8_255_and_bool():
    m = ellipse_to_mask(TRUE, SIZE)
    r1, r2, r3 = mask_to_ellipse(m), mask_to_ellipse(m * 255), mask_to_ellipse(m.astype(bool))
    assert r1.ok and r1.ellipse == r2.ellipse == r3.ellipse


def test_mask_to_ellipse_deterministic():
    m = corrupted_mask(seed=4)
    r1, r2 = mask_to_ellipse(m, seed=11), mask_to_ellipse(m, seed=11)
    assert r1.ellipse == r2.ellipse
    np.testing.assert_array_equal(r1.points, r2.points)


# -- mask → ellipse: failures ---------------------------------------------------------------


def assert_failed(res, reasons):
    assert not res.ok
    assert res.reason in reasons and res.reason in FAILURE_REASONS
    assert res.ellipse is None
    assert res.points.shape == (4, 2) and np.all(np.isnan(res.points))
    assert math.isnan(res.residual_px)


def test_failure_empty_probability_map():
    res = mask_to_ellipse(np.zeros((SIZE[1], SIZE[0]), np.float32))
    assert_failed(res, {"empty_mask"})
    assert res.area_px == 0
    assert_failed(mask_to_ellipse(np.full((32, 40), 0.49)), {"empty_mask"})
    assert_failed(mask_to_ellipse(np.full((32, 40), np.nan)), {"empty_mask"})


def test_failure_thin_line():
    m = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    cv2.line(m, (50, 100), (350, 180), 1, 3)
    assert_failed(mask_to_ellipse(m), {"implausible_axis_ratio"})  # 1635 px: passes the area check
    for method in ("ransac", "irls", "plain"):
        res = mask_to_ellipse(m, min_area_frac=0.0, method=method)
        assert_failed(res, {"implausible_axis_ratio", "too_few_points", "fit_failed"})
    m1 = np.zeros_like(m)
    cv2.line(m1, (50, 100), (350, 180), 1, 1)
    assert_failed(mask_to_ellipse(m1), {"too_small"})  # 301 px < 0.5% of the image (640 px)
    assert_failed(mask_to_ellipse(m1, min_area_frac=0.0), {"implausible_axis_ratio", "too_few_points", "fit_failed"})


def test_failure_reasons_other_paths():
    h, w = SIZE[1], SIZE[0]
    blob = np.zeros((h, w), np.uint8)
    cv2.circle(blob, (100, 100), 3, 1, -1)
    assert_failed(mask_to_ellipse(blob), {"too_small"})
    assert_failed(mask_to_ellipse(np.ones((h, w), np.float32)), {"too_few_points"})  # no boundary
    cut = ellipse_to_mask(Ellipse(-30, 160, 120, 85, 1.2), SIZE)  # centre left of the image
    assert_failed(mask_to_ellipse(cut), {"centre_outside_image"})
    huge = ellipse_to_mask(Ellipse(200, -100, 600, 300, 0.1), SIZE)
    assert_failed(mask_to_ellipse(huge), {"too_large"})
    # a rectangle is not an ellipse: whatever the fit hugs, it is rejected
    rect = np.zeros((h, w), np.uint8)
    rect[60:260, 80:300] = 1
    assert_failed(mask_to_ellipse(rect), {"poor_fit", "implausible_axis_ratio"})
    assert_failed(mask_to_ellipse(rect, method="plain"), {"poor_fit"})
    with pytest.raises(ValueError):
        mask_to_ellipse(np.zeros((3, 4, 5)))


# -- cleaning helpers -----------------------------------------------------------------------


def test_largest_component_and_fill_holes():
    m = np.zeros((50, 60), np.uint8)
    m[5:25, 5:25] = 1
    m[30:35, 40:45] = 7
    m[10:14, 10:14] = 0  # a hole
    m[0:3, 20:23] = 0
    big = largest_component(m)
    assert big.dtype == np.uint8 and big.max() == 1
    assert big[30:35, 40:45].sum() == 0 and big[5:25, 5:25].sum() == 400 - 16
    filled = fill_holes(big)
    assert filled[5:25, 5:25].all() and filled.sum() == 400
    # background touching the border is not a hole
    edge = np.zeros((20, 20), np.uint8)
    edge[0:10, 0:10] = 1
    edge[0:4, 0:4] = 0
    assert fill_holes(edge).sum() == edge.sum()
    assert largest_component(np.zeros((5, 5))).sum() == 0


# -- HC18 outlines --------------------------------------------------------------------------


def draw_outline(e: Ellipse = TRUE, size=SIZE) -> np.ndarray:
    """A 1-px, 8-connected outline like an HC18 annotation (0/255)."""
    img = np.zeros((size[1], size[0]), np.uint8)
    (cx, cy), (ma, mi), ang = ((e.cx, e.cy), (e.a, e.b), math.degrees(e.theta))
    cv2.ellipse(img, (round(cx * 16), round(cy * 16)), (round(ma * 16), round(mi * 16)), ang, 0, 360, 255, 1, cv2.LINE_8, shift=4)
    return img


def filled_reference(e: Ellipse = TRUE, size=SIZE) -> np.ndarray:
    img = np.zeros((size[1], size[0]), np.uint8)
    cv2.ellipse(img, (round(e.cx * 16), round(e.cy * 16)), (round(e.a * 16), round(e.b * 16)), math.degrees(e.theta), 0, 360, 1, -1, cv2.LINE_8, shift=4)
    return img


def cut_gap(outline: np.ndarray, n: int = 2, at_angle: float = 1.0) -> np.ndarray:
    """Remove ``n`` consecutive outline pixels (ordered by angle about TRUE's centre)."""
    out = outline.copy()
    ys, xs = np.nonzero(out)
    order = np.argsort(np.arctan2(ys - TRUE.cy, xs - TRUE.cx))
    start = int(np.searchsorted(np.sort(np.arctan2(ys - TRUE.cy, xs - TRUE.cx)), at_angle))
    sel = order[start : start + n]
    out[ys[sel], xs[sel]] = 0
    return out


def test_fill_outline_closed_matches_filled_ellipse():
    mask = fill_outline(draw_outline())
    ref = filled_reference()
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert abs(int(mask.sum()) - int(ref.sum())) <= 0.001 * ref.sum()
    assert (mask & ref).sum() / ref.sum() > 0.998
    # 0/1 input works the same
    np.testing.assert_array_equal(fill_outline((draw_outline() > 0).astype(np.uint8)), mask)


@pytest.mark.parametrize("at_angle", [-2.5, 0.3, 1.0, 2.2])
def test_fill_outline_bridges_a_two_pixel_gap(at_angle):
    outline = cut_gap(draw_outline(), 2, at_angle)
    with pytest.raises(ValueError, match="does not enclose"):
        fill_outline(outline, max_gap_px=0)  # the gap really opens the curve
    mask = fill_outline(outline)
    ref = filled_reference()
    assert abs(int(mask.sum()) - int(ref.sum())) < 0.01 * ref.sum()
    # in fact it is the gap-free outline's fill up to a few pixels
    assert (mask != fill_outline(draw_outline())).sum() <= 3
    # the fitted ellipse of the filled mask is the drawn one
    res = mask_to_ellipse(mask)
    assert res.ok and np.all(errors(res.ellipse)[:4] < 1.0)


def test_fill_outline_raises_on_open_curve_and_empty_image():
    img = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    cv2.ellipse(img, (200, 150), (120, 85), 30, 0, 270, 255, 1)  # a 270° arc
    with pytest.raises(ValueError, match="does not enclose"):
        fill_outline(img)
    with pytest.raises(ValueError, match="empty"):
        fill_outline(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="does not enclose"):
        fill_outline(cut_gap(draw_outline(), 12))  # a 12-px gap is beyond max_gap_px = 6


# -- annotation convention: mask edge vs the measured outline ---------------------------------


def test_shrink_ellipse_moves_both_axes_and_keeps_the_rest() -> None:
    e = shrink_ellipse(TRUE, 1.5)
    assert (e.cx, e.cy, e.theta) == (TRUE.cx, TRUE.cy, TRUE.theta)
    assert e.a == pytest.approx(TRUE.a - 1.5) and e.b == pytest.approx(TRUE.b - 1.5)
    assert shrink_ellipse(TRUE, -2.0).b == pytest.approx(TRUE.b + 2.0)
    with pytest.raises(ValueError, match="cannot shrink"):
        shrink_ellipse(TRUE, TRUE.b)


@pytest.mark.parametrize("offset", [1.4, 0.0, -3.0])
def test_perimeter_offset_recovers_a_known_offset(offset: float) -> None:
    target = shrink_ellipse(TRUE, offset).perimeter_px
    assert perimeter_offset_px(TRUE, target) == pytest.approx(offset, abs=1e-5)


def test_perimeter_offset_is_nan_without_a_usable_target() -> None:
    for bad in (0.0, -5.0, float("nan"), float("inf")):
        assert math.isnan(perimeter_offset_px(TRUE, bad))


def test_mask_edge_offset_of_a_mask_filled_past_the_outline() -> None:
    # the sonographer measured TRUE; the mask was filled 1.4 px beyond it (outline's outer edge)
    mask = ellipse_to_mask(shrink_ellipse(TRUE, -1.4), SIZE)
    assert mask_edge_offset_px(mask, TRUE.perimeter_px) == pytest.approx(1.4, abs=0.15)
    # a mask filled exactly to the measured outline has no offset
    assert mask_edge_offset_px(ellipse_to_mask(TRUE, SIZE), TRUE.perimeter_px) == pytest.approx(0.0, abs=0.15)
    assert math.isnan(mask_edge_offset_px(np.zeros(SIZE[::-1], np.uint8), TRUE.perimeter_px))


def test_estimate_edge_offset_takes_the_median_and_skips_unusable_pairs() -> None:
    grown = ellipse_to_mask(shrink_ellipse(TRUE, -1.4), SIZE)
    far = ellipse_to_mask(shrink_ellipse(TRUE, -12.0), SIZE)  # one mislabelled mask
    empty = np.zeros(SIZE[::-1], np.uint8)
    pairs = [(grown, TRUE.perimeter_px)] * 3 + [(far, TRUE.perimeter_px), (empty, TRUE.perimeter_px), (grown, float("nan"))]
    off, n = estimate_edge_offset_px(pairs)
    assert n == 4 and off == pytest.approx(1.4, abs=0.15)
    off, n = estimate_edge_offset_px(pairs, max_items=2)  # evenly spaced: the first and the last
    assert n == 1 and off == pytest.approx(1.4, abs=0.15)
    assert estimate_edge_offset_px([(empty, 100.0)]) == (0.0, 0)
