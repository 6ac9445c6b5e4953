"""Ellipse geometry: parametrisation, plain fitting, distances, masks, perimeter (the robust fits:
:mod:`fetalbio.geometry.robust_fit`).

Conventions (shared with :mod:`fetalbio.geometry.points`):

* points are ``(x, y)`` float pixels, origin top-left, pixel centres at integer coordinates
  (OpenCV's convention); arrays of points have shape ``(N, 2)``;
* image sizes are ``(W, H)``; numpy images are ``(H, W)``;
* an :class:`Ellipse` has centre ``(cx, cy)`` in px, **semi**-axes ``a >= b`` in px and the
  angle ``theta`` of its major axis in radians, measured from ``+x`` toward ``+y`` (i.e.
  clockwise on screen, since ``y`` points down), normalised to ``[0, pi)``.

Only numpy and OpenCV are used (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from fetalbio.geometry.points import canonicalize

__all__ = [
    "Ellipse",
    "ellipse_endpoints",
    "ellipse_from_cv2",
    "ellipse_from_points",
    "ellipse_to_cv2",
    "ellipse_to_mask",
    "fit_ellipse",
    "hc_from_diameters",
    "point_ellipse_distance",
    "ramanujan_perimeter",
    "transform_ellipse",
]

_MIN_POINTS = 5


# --------------------------------------------------------------------------------------------
# The parametrisation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in image pixels.

    Attributes:
        cx, cy: centre in px.
        a, b: semi-axes in px, ``a >= b >= 0``.
        theta: angle of the major axis in radians from ``+x`` toward ``+y``, in ``[0, pi)``.

    The constructor normalises its input, so ``Ellipse(cx, cy, 50, 80, 0.1)`` (``b > a``) is
    stored as ``a=80, b=50, theta=0.1 + pi/2`` and any ``theta`` is wrapped into ``[0, pi)``.
    Non-finite values or negative semi-axes raise ``ValueError``.
    """

    cx: float
    cy: float
    a: float
    b: float
    theta: float

    def __post_init__(self) -> None:
        cx, cy, a, b, theta = (float(v) for v in (self.cx, self.cy, self.a, self.b, self.theta))
        if not all(math.isfinite(v) for v in (cx, cy, a, b, theta)):
            raise ValueError(f"ellipse parameters must be finite, got {(cx, cy, a, b, theta)}")
        if a < 0 or b < 0:
            raise ValueError(f"semi-axes must be non-negative, got a={a}, b={b}")
        if b > a:
            a, b, theta = b, a, theta + math.pi / 2
        theta = math.fmod(theta, math.pi)
        if theta < 0:
            theta += math.pi
        if theta >= math.pi:  # fmod/addition rounding
            theta = 0.0
        for name, value in (("cx", cx), ("cy", cy), ("a", a), ("b", b), ("theta", theta)):
            object.__setattr__(self, name, value)

    @property
    def major_px(self) -> float:
        """Full major axis ``2a`` in px (the OFD of a head ellipse)."""
        return 2.0 * self.a

    @property
    def minor_px(self) -> float:
        """Full minor axis ``2b`` in px (the BPD of a head ellipse)."""
        return 2.0 * self.b

    @property
    def centre(self) -> np.ndarray:
        """``(2,)`` centre ``(cx, cy)`` in px."""
        return np.array([self.cx, self.cy])

    @property
    def area_px(self) -> float:
        """Area ``pi a b`` in px²."""
        return math.pi * self.a * self.b

    @property
    def perimeter_px(self) -> float:
        """Perimeter in px (Ramanujan II, see :func:`ramanujan_perimeter`)."""
        return float(ramanujan_perimeter(self.a, self.b))

    @property
    def axis_ratio(self) -> float:
        """``b / a`` in ``[0, 1]`` (0 for a degenerate ``a = 0``)."""
        return self.b / self.a if self.a > 0 else 0.0

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        """``(cx, cy, a, b, theta)``."""
        return (self.cx, self.cy, self.a, self.b, self.theta)


def ellipse_from_cv2(rotated_rect) -> Ellipse:
    """Convert OpenCV's ``((cx, cy), (w, h), angle_deg)`` (e.g. from ``cv2.fitEllipse``).

    OpenCV gives *full* axes; ``w`` lies along the direction ``angle_deg`` (degrees from
    ``+x`` toward ``+y``) and ``h`` perpendicular to it. Either may be the larger one, so when
    ``w < h`` the major axis is ``h`` and lies at ``angle_deg + 90``.
    """
    (cx, cy), (w, h), angle = rotated_rect
    w, h, theta = float(w), float(h), math.radians(float(angle))
    if w >= h:
        return Ellipse(cx, cy, w / 2.0, h / 2.0, theta)
    return Ellipse(cx, cy, h / 2.0, w / 2.0, theta + math.pi / 2.0)


def ellipse_to_cv2(e: Ellipse) -> tuple[tuple[float, float], tuple[float, float], float]:
    """``((cx, cy), (2a, 2b), theta_deg)``: the ``RotatedRect`` form OpenCV uses."""
    return ((e.cx, e.cy), (2.0 * e.a, 2.0 * e.b), math.degrees(e.theta))


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def ellipse_endpoints(e: Ellipse) -> np.ndarray:
    """``(4, 2)`` axis endpoints in canonical order ``[ofd_1, ofd_2, bpd_1, bpd_2]``.

    OFD = major-axis endpoints ``c ± a (cos θ, sin θ)``, BPD = minor-axis endpoints
    ``c ± b (-sin θ, cos θ)``; the order inside each pair comes from
    :func:`fetalbio.geometry.points.canonicalize` (OFD leftmost first, BPD by the side of the OFD).
    """
    c = e.centre
    u = np.array([math.cos(e.theta), math.sin(e.theta)])
    v = np.array([-u[1], u[0]])
    pts = np.stack([c - e.a * u, c + e.a * u, c - e.b * v, c + e.b * v])
    return canonicalize(pts).points


def ellipse_from_points(points: np.ndarray, parallel_tol_deg: float = 5.0) -> Ellipse:
    """The ellipse implied by four landmarks ``(4, 2)`` px (any order of the two pairs).

    The set is first canonicalised (OFD = longer diameter). Centre: intersection of the two
    diameter lines, or the mean of the two diameter midpoints when the lines are within
    ``parallel_tol_deg`` degrees of parallel. ``a`` = half the OFD length, ``b`` = half the BPD
    length, ``theta`` = direction of the OFD (landmark sets need not be exactly perpendicular;
    the BPD direction is ignored). Inverse of :func:`ellipse_endpoints` for a consistent set.

    Raises ``ValueError`` for non-finite points or a zero-length OFD.
    """
    pts = canonicalize(points).points
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmarks must be finite")
    p0, p1, q0, q1 = pts
    d1, d2 = p1 - p0, q1 - q0
    n1, n2 = float(np.linalg.norm(d1)), float(np.linalg.norm(d2))
    if n1 <= 0:
        raise ValueError("the OFD has zero length")
    cross = float(d1[0] * d2[1] - d1[1] * d2[0])
    if n2 > 0 and abs(cross) > math.sin(math.radians(parallel_tol_deg)) * n1 * n2:
        # p0 + s d1 = q0 + t d2  ->  s = cross(q0 - p0, d2) / cross(d1, d2)
        w = q0 - p0
        s = float(w[0] * d2[1] - w[1] * d2[0]) / cross
        centre = p0 + s * d1
    else:
        centre = 0.5 * ((p0 + p1) / 2.0 + (q0 + q1) / 2.0)
    theta = math.atan2(float(d1[1]), float(d1[0]))
    return Ellipse(centre[0], centre[1], n1 / 2.0, n2 / 2.0, theta)


def transform_ellipse(e: Ellipse, matrix: np.ndarray) -> Ellipse:
    """Exact image of ``e`` under a ``(2, 3)`` affine map ``x' = M[:, :2] x + M[:, 2]``.

    Useful to bring an ellipse found on a resized image back to the original one: for a resize
    from ``(W, H)`` to ``(W', H')`` with pixel centres at integers, the map to the original is
    ``sx = W / W'``, ``sy = H / H'``, ``M = [[sx, 0, 0.5 sx - 0.5], [0, sy, 0.5 sy - 0.5]]``.
    An anisotropic scale changes the axis directions, so transforming the four endpoints would
    *not* give the new axes; this uses the shape matrix ``L Lᵀ`` with ``L = A R diag(a, b)``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"expected a (2, 3) affine matrix, got {m.shape}")
    lin, t = m[:, :2], m[:, 2]
    centre = lin @ e.centre + t
    ell = lin @ _rotation(e.theta) @ np.diag([e.a, e.b])
    evals, evecs = np.linalg.eigh(ell @ ell.T)  # ascending
    evals = np.clip(evals, 0.0, None)
    major = evecs[:, 1]
    return Ellipse(centre[0], centre[1], math.sqrt(evals[1]), math.sqrt(evals[0]), math.atan2(major[1], major[0]))


# --------------------------------------------------------------------------------------------
# Perimeter
# --------------------------------------------------------------------------------------------


def ramanujan_perimeter(a, b):
    """Perimeter of an ellipse with semi-axes ``a``, ``b`` (Ramanujan's second approximation).

    ``h = ((a - b) / (a + b))**2``, ``P = pi (a + b) (1 + 3h / (10 + sqrt(4 - 3h)))``. Exact for
    a circle (``2 pi r``), relative error below 4e-5 even for ``b/a = 0.1`` and far smaller for
    head-like ratios. Vectorised over numpy arrays (broadcasting); same unit as the inputs;
    ``a = b = 0`` gives 0; NaN propagates. Returns a numpy float or array.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(s == 0, 0.0, ((a - b) / np.where(s == 0, 1.0, s)) ** 2)
    return np.pi * s * (1.0 + 3.0 * h / (10.0 + np.sqrt(4.0 - 3.0 * h)))


def hc_from_diameters(ofd, bpd):
    """Head circumference from the full diameters: ``ramanujan_perimeter(ofd / 2, bpd / 2)``.

    Same unit as the inputs (px in, px out; mm in, mm out); vectorised.
    """
    return ramanujan_perimeter(np.asarray(ofd, dtype=np.float64) / 2.0, np.asarray(bpd, dtype=np.float64) / 2.0)


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------


def _to_frame(points: np.ndarray, e: Ellipse) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of ``points`` in the ellipse frame (``u`` along the major axis)."""
    c, s = math.cos(e.theta), math.sin(e.theta)
    dx = points[:, 0] - e.cx
    dy = points[:, 1] - e.cy
    return c * dx + s * dy, -s * dx + c * dy


def _foot_root_bisect(n0: np.ndarray, z1: np.ndarray, r0: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Root of :func:`_foot_root`'s function by bisection of ``[lo, hi]`` (to float64 round-off)."""
    s = 0.5 * (lo + hi)
    for _ in range(200):
        s = 0.5 * (lo + hi)
        val = (n0 / (s + r0)) ** 2 + (z1 / (s + 1.0)) ** 2 - 1.0
        pos = val > 0
        lo = np.where(pos, s, lo)
        hi = np.where(pos, hi, s)
        if np.all(hi - lo <= 1e-14 * np.maximum(1.0, np.abs(s))):
            break
    return 0.5 * (lo + hi)


def _foot_root(n0: np.ndarray, z1: np.ndarray, r0: float, lo: np.ndarray, hi: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Root in ``[lo, hi]`` of ``f(s) = (n0 / (s + r0))² + (z1 / (s + 1))² - 1`` (Eberly's foot-point
    equation; ``g = f(0)``).

    ``f`` is decreasing and convex on the bracket, so Newton's method started left of the root
    climbs to it monotonically, without overshoot, and quadratically once close. Points near the
    ellipse (the boundary points this module fits) have their root near ``s = 0``: outside points
    (``g > 0``) start there; inside points start one Newton step left of 0 (below the root by
    convexity), clamped to ``lo``. 4-9 iterations reach float64 round-off where bisection needs
    ~50; the rare entries still moving after 40 iterations finish by bisection.
    """
    s = np.zeros_like(n0)
    inside = g < 0
    if inside.any():
        p, q = n0 / r0, z1
        step = (p * p + q * q - 1.0) / (2.0 * (p * p / r0 + q * q))  # -f(0) / f'(0) < 0
        s = np.where(inside, np.maximum(step, lo), s)
    s = np.clip(s, lo, hi)
    moving = np.ones(s.shape, dtype=bool)
    for _ in range(40):
        p, q = n0 / (s + r0), z1 / (s + 1.0)
        f = p * p + q * q - 1.0
        df = -2.0 * (p * p / (s + r0) + q * q / (s + 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            s_new = np.minimum(s + np.maximum(-f / df, 0.0), hi)
        s_new = np.where(np.isfinite(s_new), s_new, s)
        moving = np.abs(s_new - s) > 4e-16 * np.maximum(1.0, np.abs(s))
        s = s_new
        if not moving.any():
            return s
    s[moving] = _foot_root_bisect(n0[moving], z1[moving], r0, s[moving], hi[moving])
    return s


def _closest_on_axis_aligned(u: np.ndarray, v: np.ndarray, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Closest points ``(qu, qv)`` on the ellipse ``(u/a)² + (v/b)² = 1`` to points ``(u, v)``.

    Eberly's method ("Distance from a point to an ellipse", Geometric Tools, 2013): reflect into
    the first quadrant and solve a monotone scalar equation for the foot point, here by
    safeguarded Newton (:func:`_foot_root`; exact to float64 round-off, like Eberly's bisection,
    at a fifth of its cost). Handles ``a < b`` by swapping the roles of the axes; requires
    ``a, b > 0``.
    """
    if a < b:
        qv, qu = _closest_on_axis_aligned(v, u, b, a)
        return qu, qv
    y0, y1 = np.abs(u), np.abs(v)
    e0, e1 = float(a), float(b)
    x0 = np.empty_like(y0)
    x1 = np.empty_like(y1)

    gen = (y0 > 0) & (y1 > 0)
    if gen.any():
        g0, g1 = y0[gen], y1[gen]
        z0, z1 = g0 / e0, g1 / e1
        g = z0 * z0 + z1 * z1 - 1.0
        r0 = (e0 / e1) ** 2
        n0 = r0 * z0
        lo = z1 - 1.0
        hi = np.where(g < 0, 0.0, np.hypot(n0, z1) - 1.0)
        s = _foot_root(n0, z1, r0, lo, hi, g)
        x0[gen] = r0 * g0 / (s + r0)
        x1[gen] = g1 / (s + 1.0)

    on_v = (y0 == 0) & (y1 > 0)  # on the minor axis line: closest is the co-vertex
    x0[on_v] = 0.0
    x1[on_v] = e1

    on_u = y1 == 0  # on the major axis line
    if on_u.any():
        numer = e0 * y0[on_u]
        denom = e0 * e0 - e1 * e1
        inner = numer < denom
        xde = np.where(inner, numer / denom if denom > 0 else 0.0, 1.0)
        x0[on_u] = np.where(inner, e0 * xde, e0)
        x1[on_u] = np.where(inner, e1 * np.sqrt(np.clip(1.0 - xde * xde, 0.0, None)), 0.0)

    return np.copysign(x0, u), np.copysign(x1, v)


def _signed_distance_and_foot(points: np.ndarray, e: Ellipse):
    """Signed orthogonal distances (``> 0`` outside) and feet in the ellipse frame."""
    u, v = _to_frame(points, e)
    qu, qv = _closest_on_axis_aligned(u, v, e.a, e.b)
    dist = np.hypot(u - qu, v - qv)
    inside = (u / e.a) ** 2 + (v / e.b) ** 2 < 1.0
    return np.where(inside, -dist, dist), u, v, qu, qv


def point_ellipse_distance(points: np.ndarray, e: Ellipse, signed: bool = False) -> np.ndarray:
    """Orthogonal (geometric) distance in px from each of ``points`` ``(N, 2)`` to the ellipse.

    Computed *exactly* (to float64 round-off) with Eberly's bisection on the foot-point
    equation rather than the Sampson first-order approximation, which is biased away from the
    curve and useless near the centre. ``signed=True`` returns negative values inside the
    ellipse. Returns ``(N,)`` float64. A degenerate ellipse (``b = 0``) raises ``ValueError``.
    """
    pts = _as_points(points, min_points=0)
    if e.b <= 0:
        raise ValueError("distance to a degenerate ellipse (b = 0) is not defined here")
    d = _signed_distance_and_foot(pts, e)[0]
    return d if signed else np.abs(d)


# --------------------------------------------------------------------------------------------
# Plain fitting
# --------------------------------------------------------------------------------------------


def _as_points(points: np.ndarray, min_points: int = _MIN_POINTS) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"expected points of shape (N, 2), got {pts.shape}")
    if len(pts) < min_points:
        raise ValueError(f"need at least {min_points} points to fit an ellipse, got {len(pts)}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points must be finite")
    return pts


def _check_spread(pts: np.ndarray) -> float:
    """Raise if the points are (nearly) collinear or coincident; return their RMS spread."""
    centred = pts - pts.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    spread = float(sv[0] / math.sqrt(len(pts)))
    if spread == 0 or sv[1] <= 1e-6 * sv[0]:
        raise ValueError("degenerate point set: points are coincident or collinear")
    return spread


def _validate_fit(e: Ellipse, pts: np.ndarray) -> Ellipse:
    extent = float(np.ptp(pts, axis=0).max())
    if not (e.b > 1e-6 * max(extent, 1e-12)) or e.a > 1e3 * max(extent, 1.0):
        raise ValueError(f"degenerate ellipse fit (a={e.a:.4g}, b={e.b:.4g} px for a point extent of {extent:.4g} px)")
    return e


def fit_ellipse(points: np.ndarray, algorithm: Literal["direct", "ams", "lsq"] = "direct") -> Ellipse:
    """Plain least-squares ellipse through ``(N, 2)`` px points (N >= 5).

    ``algorithm``: ``"direct"`` = ``cv2.fitEllipseDirect`` (Fitzgibbon's direct method, always
    an ellipse), ``"ams"`` = ``cv2.fitEllipseAMS``, ``"lsq"`` = ``cv2.fitEllipse``. Points are
    centred before the call (OpenCV works in float32). Every point has the same weight, so
    outliers pull the fit; see :func:`~fetalbio.geometry.robust_fit.fit_ellipse_robust`.

    Raises ``ValueError`` for fewer than 5 points, non-finite, coincident or collinear points,
    or a degenerate/unbounded result.
    """
    pts = _as_points(points)
    _check_spread(pts)
    mean = pts.mean(axis=0)
    fitter = {"direct": cv2.fitEllipseDirect, "ams": cv2.fitEllipseAMS, "lsq": cv2.fitEllipse}.get(algorithm)
    if fitter is None:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    try:
        rect = fitter((pts - mean).astype(np.float32).reshape(-1, 1, 2))
        (cx, cy), axes, angle = rect
        e = ellipse_from_cv2(((cx + mean[0], cy + mean[1]), axes, angle))
    except (cv2.error, ValueError) as exc:
        raise ValueError(f"ellipse fit failed: {exc}") from exc
    return _validate_fit(e, pts)


# --------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------


def ellipse_to_mask(e: Ellipse, size: tuple[int, int]) -> np.ndarray:
    """Filled ellipse as a ``uint8`` ``(H, W)`` mask in ``{0, 1}``; ``size = (W, H)``.

    A pixel is in the mask iff its centre ``(x, y)`` (integer coordinates) lies inside or on
    the ellipse: an exact, unbiased rasterisation (area ≈ ``pi a b``), evaluated analytically
    on the ellipse's bounding box. (``cv2.ellipse`` approximates the curve by a polygon with
    5°+ steps and includes every boundary pixel it touches, i.e. is biased outward by about
    half a pixel; the analytic test needs no sub-pixel shift.) Parts outside the image are
    clipped; ``b = 0`` gives an empty mask.
    """
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive (W, H), got {size}")
    mask = np.zeros((h, w), np.uint8)
    if e.a <= 0 or e.b <= 0:
        return mask
    c, s = math.cos(e.theta), math.sin(e.theta)
    ex = math.sqrt((e.a * c) ** 2 + (e.b * s) ** 2)
    ey = math.sqrt((e.a * s) ** 2 + (e.b * c) ** 2)
    x0, x1 = max(0, math.floor(e.cx - ex)), min(w - 1, math.ceil(e.cx + ex))
    y0, y1 = max(0, math.floor(e.cy - ey)), min(h - 1, math.ceil(e.cy + ey))
    if x0 > x1 or y0 > y1:
        return mask
    xs = np.arange(x0, x1 + 1, dtype=np.float64) - e.cx
    ys = np.arange(y0, y1 + 1, dtype=np.float64)[:, None] - e.cy
    u = c * xs + s * ys
    v = -s * xs + c * ys
    mask[y0 : y1 + 1, x0 : x1 + 1] = ((u / e.a) ** 2 + (v / e.b) ** 2 <= 1.0).astype(np.uint8)
    return mask
