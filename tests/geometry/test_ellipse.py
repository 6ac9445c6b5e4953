"""Ellipse parametrisation, conversions, fits, distances, perimeter and rasterisation."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from fetalbio.geometry import (
    Ellipse,
    canonicalize,
    ellipse_endpoints,
    ellipse_from_cv2,
    ellipse_from_points,
    ellipse_to_cv2,
    ellipse_to_mask,
    fit_ellipse,
    hc_from_diameters,
    point_ellipse_distance,
    ramanujan_perimeter,
    robust_fit,
    transform_ellipse,
)
from fetalbio.geometry import ellipse as ellipse_mod
from fetalbio.geometry.robust_fit import fit_ellipse_robust

E = Ellipse(200.3, 150.7, 120.0, 85.0, 0.6)


def angle_diff(t1: float, t2: float) -> float:
    """Smallest difference of two axis directions (mod pi), radians."""
    return abs(math.remainder(t1 - t2, math.pi))


def sample(e: Ellipse, n: int = 400, t0: float = 0.0, t1: float = 2 * math.pi) -> np.ndarray:
    t = np.linspace(t0, t1, n, endpoint=False)
    c, s = math.cos(e.theta), math.sin(e.theta)
    u, v = e.a * np.cos(t), e.b * np.sin(t)
    return np.stack([e.cx + c * u - s * v, e.cy + s * u + c * v], axis=1)


def assert_close(e: Ellipse, ref: Ellipse, tol_px: float, tol_deg: float) -> None:
    assert abs(e.cx - ref.cx) < tol_px and abs(e.cy - ref.cy) < tol_px, (e, ref)
    assert abs(e.a - ref.a) < tol_px and abs(e.b - ref.b) < tol_px, (e, ref)
    assert math.degrees(angle_diff(e.theta, ref.theta)) < tol_deg, (e, ref)


# -- parametrisation ------------------------------------------------------------------------


def test_ellipse_normalises_axes_and_angle():
    e = Ellipse(1, 2, 50, 80, 0.1)
    assert (e.a, e.b) == (80, 50)
    assert e.theta == pytest.approx(0.1 + math.pi / 2)
    assert Ellipse(0, 0, 3, 2, -0.2).theta == pytest.approx(math.pi - 0.2)
    assert Ellipse(0, 0, 3, 2, math.pi).theta == pytest.approx(0.0)
    assert Ellipse(0, 0, 3, 2, 7 * math.pi + 0.3).theta == pytest.approx(0.3)
    assert E.major_px == 240 and E.minor_px == 170
    with pytest.raises(ValueError):
        Ellipse(0, 0, -1, 1, 0)
    with pytest.raises(ValueError):
        Ellipse(float("nan"), 0, 1, 1, 0)


@pytest.mark.parametrize(
    ("rect", "expected"),
    [
        (((10, 20), (60, 30), 0.0), (30, 15, 0.0)),
        (((10, 20), (30, 60), 0.0), (30, 15, math.pi / 2)),  # w < h: major is h, at +90°
        (((10, 20), (60, 30), 90.0), (30, 15, math.pi / 2)),
        (((10, 20), (30, 60), 90.0), (30, 15, 0.0)),  # 180° wraps to 0
        (((10, 20), (60, 30), 179.9), (30, 15, math.radians(179.9))),
        (((10, 20), (30, 60), 179.9), (30, 15, math.radians(89.9))),
        (((10, 20), (30, 60), 0.1), (30, 15, math.radians(90.1))),
        (((10, 20), (60, 30), 180.0), (30, 15, 0.0)),
        (((10, 20), (60, 30), -30.0), (30, 15, math.radians(150))),
    ],
)
def test_ellipse_from_cv2_axes_and_angles(rect, expected):
    e = ellipse_from_cv2(rect)
    a, b, theta = expected
    assert (e.cx, e.cy) == (10, 20)
    assert (e.a, e.b) == (a, b)
    assert angle_diff(e.theta, theta) < 1e-9
    assert 0 <= e.theta < math.pi


@pytest.mark.parametrize("theta_deg", [0.0, 0.3, 45.0, 89.7, 90.0, 90.3, 135.0, 179.7])
@pytest.mark.parametrize("swap", [False, True])
def test_cv2_round_trip_through_fit_ellipse(theta_deg, swap):
    # cv2.fitEllipse may report the major axis as width or height and angles in [0, 180):
    # the conversion must recover the ellipse whatever it chose
    ref = Ellipse(150.5, 120.25, 90.0, 60.0, math.radians(theta_deg))
    pts = sample(ref, 200)
    rect = cv2.fitEllipse(pts.astype(np.float32))
    if swap:  # the equivalent rectangle with w/h exchanged and the angle turned by 90°
        (c, (w, h), ang) = rect
        rect = (c, (h, w), ang + 90.0)
    assert_close(ellipse_from_cv2(rect), ref, 1e-2, 1e-2)
    assert_close(ellipse_from_cv2(ellipse_to_cv2(ref)), ref, 1e-9, 1e-9)


def test_cv2_angle_convention_matches_drawing():
    # a point on the major axis drawn by cv2.ellipse must be on the converted ellipse
    img = np.zeros((300, 300), np.uint8)
    cv2.ellipse(img, ((150, 150), (200, 80), 30.0), 255, 1)
    ys, xs = np.nonzero(img)
    e = ellipse_from_cv2(((150, 150), (200, 80), 30.0))
    d = point_ellipse_distance(np.stack([xs, ys], 1), e)
    assert np.median(d) < 0.5 and d.max() < 1.5
    assert e.theta == pytest.approx(math.radians(30))


# -- endpoints and landmarks ----------------------------------------------------------------


def test_ellipse_endpoints_known_and_canonical():
    pts = ellipse_endpoints(Ellipse(100, 50, 20, 10, 0.0))
    np.testing.assert_allclose(pts, [[80, 50], [120, 50], [100, 40], [100, 60]], atol=1e-12)
    # vertical major axis: tie in x broken by the upper point first; the OFD then points down,
    # its normal (-d_y, d_x) points to -x, so BPD point 1 is the right-hand endpoint
    pts = ellipse_endpoints(Ellipse(100, 50, 20, 10, math.pi / 2))
    np.testing.assert_allclose(pts, [[100, 30], [100, 70], [110, 50], [90, 50]], atol=1e-12)
    pts = ellipse_endpoints(E)
    np.testing.assert_allclose(pts, canonicalize(pts).points)
    d = pts[1] - pts[0]
    normal = np.array([-d[1], d[0]])
    assert pts[0, 0] < pts[1, 0] and pts[2] @ normal < pts[3] @ normal
    assert np.linalg.norm(pts[1] - pts[0]) == pytest.approx(240)
    assert np.linalg.norm(pts[3] - pts[2]) == pytest.approx(170)
    np.testing.assert_allclose(pts[:2].mean(0), [E.cx, E.cy])
    np.testing.assert_allclose(pts[2:].mean(0), [E.cx, E.cy])
    assert abs(np.dot(pts[1] - pts[0], pts[3] - pts[2])) < 1e-9  # perpendicular
    # each endpoint lies on the ellipse
    assert point_ellipse_distance(pts, E).max() < 1e-9


@pytest.mark.parametrize("theta", [0.0, 0.6, math.pi / 2, 2.5, math.pi - 1e-3])
def test_ellipse_from_points_inverts_endpoints(theta):
    e = Ellipse(200.3, 150.7, 120, 85, theta)
    back = ellipse_from_points(ellipse_endpoints(e))
    assert_close(back, e, 1e-9, 1e-7)
    # the order of the pairs and of the endpoints does not matter
    shuffled = ellipse_endpoints(e)[[3, 2, 1, 0]]
    assert_close(ellipse_from_points(shuffled), e, 1e-9, 1e-7)


def test_ellipse_from_points_non_perpendicular_and_parallel():
    # OFD horizontal through (100, 50); BPD tilted, crossing it at x = 110
    pts = np.array([[40, 50], [160, 50], [110 - 5, 10], [110 + 5, 90]], float)
    e = ellipse_from_points(pts)
    assert (e.cx, e.cy) == pytest.approx((110, 50))
    assert e.a == pytest.approx(60) and e.b == pytest.approx(math.hypot(10, 80) / 2)
    assert e.theta == pytest.approx(0.0)  # theta follows the OFD, not the BPD
    # nearly parallel diameters: mean of the two midpoints
    pts = np.array([[0, 0], [100, 0], [10, 10], [70, 10.5]], float)
    e = ellipse_from_points(pts)
    assert (e.cx, e.cy) == pytest.approx(((50 + 40) / 2, (0 + 10.25) / 2))
    with pytest.raises(ValueError):
        ellipse_from_points(np.zeros((4, 2)))


def test_transform_ellipse_anisotropic_scale():
    m = np.array([[2.0, 0.0, 0.5], [0.0, 1.5, 0.25]])
    out = transform_ellipse(E, m)
    pts = sample(E, 300)
    mapped = pts @ m[:, :2].T + m[:, 2]
    assert point_ellipse_distance(mapped, out).max() < 1e-8
    # the naive transform of the endpoints is not the answer for an oblique ellipse
    naive = ellipse_from_points(ellipse_endpoints(E) @ m[:, :2].T + m[:, 2])
    assert point_ellipse_distance(mapped, naive).max() > 1.0


# -- perimeter ------------------------------------------------------------------------------


def test_ramanujan_perimeter_known_values():
    assert ramanujan_perimeter(5.0, 5.0) == pytest.approx(2 * math.pi * 5.0, rel=1e-15)
    assert ramanujan_perimeter(2.0, 1.0) == pytest.approx(9.68845, abs=5e-6)
    assert ramanujan_perimeter(1.0, 2.0) == pytest.approx(9.68845, abs=5e-6)
    assert ramanujan_perimeter(0.0, 0.0) == 0.0
    # exact perimeter of a = 1, b = 0 is 4
    assert ramanujan_perimeter(1.0, 0.0) == pytest.approx(4.0, rel=5e-4)
    out = ramanujan_perimeter(np.array([1.0, 2.0, 5.0]), np.array([[1.0], [0.5]]))
    assert out.shape == (2, 3)
    assert out[0, 0] == pytest.approx(2 * math.pi)
    assert np.isnan(ramanujan_perimeter(np.nan, 1.0))


def test_hc_from_diameters():
    assert hc_from_diameters(240.0, 170.0) == pytest.approx(ramanujan_perimeter(120.0, 85.0))
    assert hc_from_diameters(10.0, 10.0) == pytest.approx(10 * math.pi)
    np.testing.assert_allclose(hc_from_diameters(np.array([4.0, 2.0]), np.array([2.0, 2.0])), [9.68845, 2 * math.pi], atol=1e-5)
    assert E.perimeter_px == pytest.approx(hc_from_diameters(E.major_px, E.minor_px))


# -- distances ------------------------------------------------------------------------------


def test_point_ellipse_distance_matches_dense_sampling():
    rng = np.random.default_rng(0)
    q = rng.uniform([40, 20], [360, 300], size=(300, 2))
    q = np.vstack([q, [[E.cx, E.cy]], ellipse_endpoints(E)])  # centre and on-axis points
    dense = sample(E, 200_000)  # 0.003 px apart
    nearest = cKDTree(dense).query(q)[0]
    d = point_ellipse_distance(q, E)
    assert np.all(d <= nearest + 1e-9)  # never farther than some point of the curve
    np.testing.assert_allclose(d, nearest, atol=1e-4)
    s = point_ellipse_distance(q, E, signed=True)
    inside = ellipse_to_mask(E, (400, 320))[np.round(q[:, 1]).astype(int).clip(0, 319), np.round(q[:, 0]).astype(int).clip(0, 399)]
    far = d > 1.0
    assert np.all((s[far] < 0) == inside[far].astype(bool))
    assert point_ellipse_distance(np.array([[E.cx, E.cy]]), E)[0] == pytest.approx(85.0)


@pytest.mark.parametrize("a, b", [(60.0, 45.0), (80.0, 20.0), (50.0, 49.9), (300.0, 200.0)])
def test_newton_foot_points_equal_bisection(a, b, monkeypatch):
    """The safeguarded Newton solve of the foot-point equation lands on the root that Eberly's
    bisection finds (to round-off), near the curve, far from it, inside and near the centre."""
    rng = np.random.default_rng(1)
    t = rng.uniform(0.0, 2.0 * np.pi, 2000)
    r = np.concatenate([1.0 + rng.normal(0.0, 0.02, 1000), rng.uniform(0.0, 3.0, 1000)])
    u, v = a * np.cos(t) * r, b * np.sin(t) * r
    newton = ellipse_mod._closest_on_axis_aligned(u, v, a, b)
    monkeypatch.setattr(ellipse_mod, "_foot_root", lambda n0, z1, r0, lo, hi, g: ellipse_mod._foot_root_bisect(n0, z1, r0, lo, hi))
    bisect = ellipse_mod._closest_on_axis_aligned(u, v, a, b)
    for q_newton, q_bisect in zip(newton, bisect):
        np.testing.assert_allclose(q_newton, q_bisect, rtol=0, atol=1e-9 * a)


def test_sampson_distances_equal_the_ellipse_frame_formula():
    rng = np.random.default_rng(2)
    pts = rng.uniform(0.0, 400.0, size=(300, 2))
    params = np.array([[200.0, 150.0, 90.0, 60.0, 0.3], [180.0, 170.0, 40.0, 39.0, 2.0], [100.0, 50.0, 300.0, 20.0, 1.2]])
    got = robust_fit._sampson_distances(pts, params)
    for k, (cx, cy, a, b, th) in enumerate(params):
        c, s = math.cos(th), math.sin(th)
        u = c * (pts[:, 0] - cx) + s * (pts[:, 1] - cy)
        v = -s * (pts[:, 0] - cx) + c * (pts[:, 1] - cy)
        q = (u / a) ** 2 + (v / b) ** 2 - 1.0
        grad = 2.0 * np.hypot(u / a**2, v / b**2)
        np.testing.assert_allclose(got[k], np.abs(q) / grad, rtol=1e-9, atol=1e-9)


def test_null_vectors_are_the_conics_through_five_points():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(50, 5, 2))
    x, y = p[..., 0], p[..., 1]
    rows = np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], axis=2)
    null = robust_fit._null_vectors(rows)
    np.testing.assert_allclose(np.linalg.norm(null, axis=1), 1.0)
    assert np.abs(np.einsum("kij,kj->ki", rows, null)).max() < 1e-9
    svd = np.linalg.svd(rows)[2][:, -1, :]
    np.testing.assert_allclose(np.abs(np.sum(svd * null, axis=1)), 1.0, atol=1e-9)
    repeated = rows.copy()
    repeated[:, 1] = repeated[:, 0]  # a repeated point: no unique conic
    assert np.all(robust_fit._null_vectors(repeated) == 0.0)


# -- fitting --------------------------------------------------------------------------------


def test_fit_ellipse_exact_points_and_errors():
    assert_close(fit_ellipse(sample(E, 50)), E, 1e-3, 1e-3)
    assert_close(fit_ellipse(sample(E, 50), algorithm="lsq"), E, 1e-3, 1e-3)
    with pytest.raises(ValueError, match="at least 5"):
        fit_ellipse(sample(E, 4))
    with pytest.raises(ValueError, match="collinear"):
        fit_ellipse(np.stack([np.arange(10.0), 2 * np.arange(10.0)], 1))
    with pytest.raises(ValueError):
        fit_ellipse(np.full((10, 2), 3.0))
    with pytest.raises(ValueError):
        fit_ellipse(np.full((10, 3), 3.0))


def contaminated_points(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arc = sample(E, 600, 0.0, 1.6 * math.pi) + rng.normal(0, 0.3, (600, 2))
    clutter = rng.uniform([60, 40], [340, 280], size=(200, 2))
    line = np.stack([np.linspace(E.cx, E.cx + 150, 100), np.full(100, E.cy)], 1)
    return np.vstack([arc, clutter, line])


@pytest.mark.parametrize("method", ["ransac", "irls"])
def test_fit_ellipse_robust_recovers_and_plain_does_not(method):
    pts = contaminated_points()
    fit = fit_ellipse_robust(pts, method, seed=3)
    assert_close(fit.ellipse, E, 0.2, 0.2)
    assert fit.n_points == len(pts)
    assert 0.6 < fit.inlier_fraction < 0.8  # 600 of 900 points are on the arc
    assert 0.1 < fit.residual_px < 0.4  # median |N(0, 0.3)| projected on the normal ≈ 0.2
    assert fit.inliers.shape == (len(pts),) and fit.inliers[:600].mean() > 0.99
    plain = fit_ellipse(pts)
    assert max(abs(plain.cx - E.cx), abs(plain.cy - E.cy), abs(plain.a - E.a), abs(plain.b - E.b)) > 5.0


def test_fit_ellipse_robust_deterministic_with_seed():
    pts = contaminated_points(1)
    f1 = fit_ellipse_robust(pts, "ransac", seed=7, max_trials=60)
    f2 = fit_ellipse_robust(pts, "ransac", seed=7, max_trials=60)
    assert f1.ellipse == f2.ellipse and f1.residual_px == f2.residual_px
    np.testing.assert_array_equal(f1.inliers, f2.inliers)
    g1, g2 = fit_ellipse_robust(pts, "irls"), fit_ellipse_robust(pts, "irls")
    assert g1.ellipse == g2.ellipse


def test_ransac_takes_the_consensus_of_all_points_only_when_it_is_one():
    rng = np.random.default_rng(5)
    clean = sample(E, 400) + rng.normal(0, 0.2, (400, 2))
    fast = fit_ellipse_robust(clean, "ransac", threshold_px=1.0)
    sampled = fit_ellipse_robust(clean, "ransac", threshold_px=1.0, consensus_first=None)
    assert_close(fast.ellipse, E, 0.1, 0.1)
    assert_close(fast.ellipse, sampled.ellipse, 0.02, 0.02)
    assert fast.inlier_fraction > 0.98
    # with a third of the points off the curve the all-points fit is no consensus: sampling
    # runs and still finds the arc (the all-points fit alone is > 5 px off, see above)
    dirty = fit_ellipse_robust(contaminated_points(), "ransac", seed=3)
    assert_close(dirty.ellipse, E, 0.2, 0.2)
    # a 2 % spur is within the accepted share: it is left out of the inliers, not fitted
    spur = np.vstack([clean, np.stack([np.full(8, E.cx + E.a * math.cos(E.theta) + 12.0), np.linspace(E.cy, E.cy + 4, 8)], 1)])
    withspur = fit_ellipse_robust(spur, "ransac", threshold_px=1.0)
    assert_close(withspur.ellipse, E, 0.1, 0.1)
    assert not withspur.inliers[-8:].any()


def test_fit_ellipse_robust_errors():
    with pytest.raises(ValueError):
        fit_ellipse_robust(sample(E, 4))
    with pytest.raises(ValueError):
        fit_ellipse_robust(sample(E, 50), method="lmeds")
    with pytest.raises(ValueError):
        fit_ellipse_robust(np.stack([np.arange(20.0), np.arange(20.0)], 1))


# -- rasterisation --------------------------------------------------------------------------


def test_ellipse_to_mask_area_and_pixels():
    m = ellipse_to_mask(E, (400, 320))
    assert m.shape == (320, 400) and m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    assert m.sum() == pytest.approx(E.area_px, rel=2e-3)
    ys, xs = np.nonzero(m)
    # every pixel centre of the mask is inside; every outside centre is outside
    assert point_ellipse_distance(np.stack([xs, ys], 1), E, signed=True).max() <= 1e-9
    ys, xs = np.nonzero(m == 0)
    assert point_ellipse_distance(np.stack([xs, ys], 1), E, signed=True).min() > 0
    # clipped at the border, empty when degenerate or outside
    yy, xx = np.mgrid[0:40, 0:50]
    np.testing.assert_array_equal(ellipse_to_mask(Ellipse(0, 0, 10, 10, 0), (50, 40)), xx**2 + yy**2 <= 100)
    assert ellipse_to_mask(Ellipse(500, 500, 10, 10, 0), (50, 40)).sum() == 0
    assert ellipse_to_mask(Ellipse(20, 20, 10, 0, 0), (50, 40)).sum() == 0
