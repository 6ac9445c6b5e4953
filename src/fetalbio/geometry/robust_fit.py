"""Robust ellipse fits (RANSAC, IRLS) for boundaries with spurs: used when a variant's
``postprocess.method`` is ``ransac`` or ``irls`` (:func:`fetalbio.geometry.masks.mask_to_ellipse`);
the plain fit and the shared geometry are in :mod:`fetalbio.geometry.ellipse` (same conventions)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fetalbio.geometry.ellipse import _MIN_POINTS, Ellipse, _as_points, _check_spread, _closest_on_axis_aligned, _validate_fit, fit_ellipse, point_ellipse_distance

__all__ = ["EllipseFit", "fit_ellipse_robust"]


def _params_to_conics(params: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """``(K, 5)`` ellipses → ``(K, 6)`` conics ``A x² + B xy + C y² + D x + E y + F`` in coordinates
    relative to ``origin``, equal to ``(u/a)² + (v/b)² - 1`` in each ellipse frame."""
    cx, cy, a, b, th = (params[:, i] for i in range(5))
    cx, cy = cx - origin[0], cy - origin[1]
    c, s = np.cos(th), np.sin(th)
    ia2, ib2 = 1.0 / (a * a), 1.0 / (b * b)
    A = c * c * ia2 + s * s * ib2
    B = 2.0 * c * s * (ia2 - ib2)
    C = s * s * ia2 + c * c * ib2
    D = -2.0 * A * cx - B * cy
    E = -B * cx - 2.0 * C * cy
    F = A * cx * cx + B * cx * cy + C * cy * cy - 1.0
    return np.stack([A, B, C, D, E, F], axis=1)


def _sampson_distances(points: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Sampson distances ``|Q| / |∇Q|`` of ``(N, 2)`` points to ``(K, 5)`` ellipses → ``(K, N)``.

    ``Q(u, v) = (u/a)² + (v/b)² - 1`` in each ellipse frame; a cheap first-order approximation
    of the orthogonal distance, used only to score RANSAC hypotheses. Evaluated as the general
    conic (the same polynomial after a rigid change of frame, so the same ``|Q| / |∇Q|``) on
    centred points: three small contractions (``einsum``; BLAS threading costs more than it
    gains at an inner size of 3-6) instead of per-ellipse trigonometry on ``(K, N)`` arrays.
    """
    origin = points.mean(axis=0)
    x, y = points[:, 0] - origin[0], points[:, 1] - origin[1]
    one = np.ones_like(x)
    conics = _params_to_conics(np.asarray(params, dtype=np.float64), origin)
    A, B, C, D, E = (conics[:, i] for i in range(5))
    q = np.einsum("kj,jn->kn", conics, np.stack([x * x, x * y, y * y, x, y, one]))
    lin = np.stack([x, y, one])
    gx = np.einsum("kj,jn->kn", np.stack([2.0 * A, B, D], axis=1), lin)
    gy = np.einsum("kj,jn->kn", np.stack([B, 2.0 * C, E], axis=1), lin)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(q) / np.sqrt(gx * gx + gy * gy)



@dataclass(frozen=True)
class EllipseFit:
    """Result of :func:`fit_ellipse_robust`.

    Attributes:
        ellipse: the fitted :class:`Ellipse`.
        residual_px: median absolute orthogonal distance (px) of the inliers (NaN if none).
        inlier_fraction: fraction of the input points within ``threshold_px`` of the ellipse.
        n_points: number of input points.
        inliers: ``(n_points,)`` bool mask of the inliers.
    """

    ellipse: Ellipse
    residual_px: float
    inlier_fraction: float
    n_points: int
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), compare=False, repr=False)


def _conics_to_params(coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, 6)`` conics ``A x² + B xy + C y² + D x + E y + F`` → ``(K, 5)`` params + validity."""
    A, B, C, D, E, F = coef.T
    disc = B * B - 4.0 * A * C
    with np.errstate(divide="ignore", invalid="ignore"):
        x0 = (2.0 * C * D - B * E) / disc
        y0 = (2.0 * A * E - B * D) / disc
        f0 = F + 0.5 * (D * x0 + E * y0)  # conic value at the centre
        mean = 0.5 * (A + C)
        root = np.hypot(0.5 * (A - C), 0.5 * B)
        l1, l2 = mean - root, mean + root  # eigenvalues of [[A, B/2], [B/2, C]]
        phi = 0.5 * np.arctan2(B, A - C)  # eigenvector direction of eigenvalue l2
        s1, s2 = -f0 / l1, -f0 / l2
        # the major axis belongs to the eigenvalue of smaller magnitude
        small_is_l1 = np.abs(l1) <= np.abs(l2)
        a = np.sqrt(np.where(small_is_l1, s1, s2))
        b = np.sqrt(np.where(small_is_l1, s2, s1))
        theta = np.where(small_is_l1, phi + np.pi / 2.0, phi)
    params = np.stack([x0, y0, a, b, theta], axis=1)
    valid = (disc < 0) & (s1 > 0) & (s2 > 0) & np.all(np.isfinite(params), axis=1)
    return params, valid


def _null_vectors(rows: np.ndarray) -> np.ndarray:
    """``(K, 6)`` null vectors of ``(K, 5, 6)`` matrices: the signed 5x5 minors (generalised cross
    product), the conic through each sample's 5 points. Equal to the last right singular vector
    up to scale and sign where the rank is 5, at a third of a batched SVD's cost; zero (no
    valid conic) where the 5 points are degenerate."""
    cols = np.arange(6)
    minors = np.stack([np.linalg.det(rows[:, :, cols != i]) for i in range(6)], axis=1)
    null = minors * np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    norm = np.linalg.norm(null, axis=1, keepdims=True)
    # Hadamard: every minor is at most the product of the row norms; far below it, rank < 5
    bound = np.prod(np.linalg.norm(rows, axis=2), axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 1e-12 * bound, null / norm, 0.0)


def _minimal_hypotheses(pts: np.ndarray, rng: np.random.Generator, n_trials: int) -> np.ndarray:
    """``(K, 5)`` ellipses through random 5-point samples (batched SVD on normalised points)."""
    n = len(pts)
    idx = rng.integers(0, n, size=(n_trials, 5))
    srt = np.sort(idx, axis=1)
    idx = idx[np.all(np.diff(srt, axis=1) > 0, axis=1)]
    mean = pts.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((pts - mean) ** 2, axis=1)))) or 1.0
    q = (pts - mean) / scale
    x, y = q[idx, 0], q[idx, 1]
    design = np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], axis=2)  # (K, 5, 6)
    params, valid = _conics_to_params(_null_vectors(design))
    params = params[valid]
    params[:, 0] = params[:, 0] * scale + mean[0]
    params[:, 1] = params[:, 1] * scale + mean[1]
    params[:, 2:4] *= scale
    # swap so that a >= b (theta follows)
    swap = params[:, 3] > params[:, 2]
    params[swap, 2], params[swap, 3] = params[swap, 3].copy(), params[swap, 2].copy()
    params[swap, 4] += np.pi / 2.0
    extent = float(np.ptp(pts, axis=0).max())
    ok = (params[:, 3] > 1e-3 * extent) & (params[:, 2] < 10.0 * extent)
    return params[ok]


def _refine_geometric(pts: np.ndarray, e: Ellipse, weights: np.ndarray | None = None, max_nfev: int = 50) -> Ellipse:
    """Minimise ``Σ w_i d_i²`` (orthogonal distances) over ``(cx, cy, a, b, θ)`` from ``e``.

    Trust-region least squares (scipy) with the analytic Jacobian of the orthogonal distance:
    with foot point ``q = c + R(θ)(a cos t, b sin t)`` and unit outward normal ``n``,
    ``∂d/∂β = -n · ∂q/∂β`` at fixed ``t`` (the ``∂q/∂t`` term vanishes as it is ⟂ ``n``).
    """
    from scipy.optimize import least_squares  # here: 0.2 s of import that predict does not need

    sw = np.ones(len(pts)) if weights is None else np.sqrt(np.clip(weights, 0.0, None))
    keep = sw > 0
    if keep.sum() < _MIN_POINTS:
        return e
    p, sw = pts[keep], sw[keep]
    extent = float(np.ptp(p, axis=0).max())

    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def residuals_and_jac(x: np.ndarray):
        key = x.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = _residuals_and_jac(x)
        return cache[key]

    def _residuals_and_jac(x: np.ndarray):
        cx, cy, a, b, th = x
        c, s = math.cos(th), math.sin(th)
        dx, dy = p[:, 0] - cx, p[:, 1] - cy
        u, v = c * dx + s * dy, -s * dx + c * dy
        qu, qv = _closest_on_axis_aligned(u, v, a, b)
        nu, nv = qu / (a * a), qv / (b * b)
        nn = np.hypot(nu, nv)
        nu, nv = nu / nn, nv / nn
        d = nu * (u - qu) + nv * (v - qv)
        cos_t, sin_t = qu / a, qv / b
        jac = np.empty((len(p), 5))
        jac[:, 0] = -(nu * c - nv * s)  # -n_image · (1, 0)
        jac[:, 1] = -(nu * s + nv * c)  # -n_image · (0, 1)
        jac[:, 2] = -nu * cos_t
        jac[:, 3] = -nv * sin_t
        jac[:, 4] = -(nv * qu - nu * qv)  # -n · J (q - c), J = +90° rotation
        return d * sw, jac * sw[:, None]

    x0 = np.array(e.as_tuple())
    lower = [-np.inf, -np.inf, 1e-6 * extent, 1e-6 * extent, -np.inf]
    try:
        res = least_squares(
            lambda x: residuals_and_jac(x)[0],
            x0,
            jac=lambda x: residuals_and_jac(x)[1],
            bounds=(lower, np.inf),
            method="trf",
            x_scale="jac",
            max_nfev=max_nfev,
        )
        out = Ellipse(*res.x)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return e
    return out if np.isfinite(res.cost) and res.cost <= 0.5 * float(np.sum((residuals_and_jac(x0)[0]) ** 2)) + 1e-12 else e


def _robust_weights(r: np.ndarray, kind: str) -> np.ndarray:
    """Weights of scaled residuals ``r = d / (c σ)``: Huber (``c=1.345``) or Tukey (``c=4.685``)."""
    ar = np.abs(r)
    if kind == "huber":
        return np.where(ar <= 1.0, 1.0, 1.0 / np.maximum(ar, 1e-12))
    if kind == "tukey":
        return np.where(ar < 1.0, (1.0 - ar * ar) ** 2, 0.0)
    raise ValueError(f"unknown weight function {kind!r}")


_TUNING = {"huber": 1.345, "tukey": 4.685}


def _summarise(pts: np.ndarray, e: Ellipse, threshold_px: float) -> EllipseFit:
    d = point_ellipse_distance(pts, e)
    inl = d <= threshold_px
    resid = float(np.median(d[inl])) if inl.any() else float("nan")
    return EllipseFit(e, resid, float(inl.mean()), len(pts), inl)


def _consensus_of_all(pts: np.ndarray, threshold_px: float, min_share: float) -> Ellipse | None:
    """The plain fit of all points when ``min_share`` of them lie within ``threshold_px`` of it
    (Sampson distance), else ``None``."""
    try:
        e = fit_ellipse(pts)
    except ValueError:
        return None
    d = _sampson_distances(pts, np.array([e.as_tuple()]))[0]
    return e if np.mean(np.nan_to_num(d, nan=np.inf) <= threshold_px) >= min_share else None


def _ransac_best(pts: np.ndarray, threshold_px: float, seed: int, max_trials: int) -> Ellipse:
    """The 5-point hypothesis with the lowest MSAC cost (truncated squared Sampson distance)."""
    rng = np.random.default_rng(seed)
    hyps = _minimal_hypotheses(pts, rng, max_trials)
    if len(hyps) == 0:
        raise ValueError("RANSAC found no valid ellipse hypothesis")
    best_cost, best = np.inf, None
    thr2 = threshold_px * threshold_px
    for start in range(0, len(hyps), 512):  # chunks bound memory: (512, N) arrays
        chunk = hyps[start : start + 512]
        d = _sampson_distances(pts, chunk)
        cost = np.sum(np.fmin(d * d, thr2), axis=1)  # fmin: a NaN distance costs thr2
        k = int(np.argmin(cost))
        if cost[k] < best_cost:
            best_cost, best = float(cost[k]), chunk[k]
    return Ellipse(*best)


def _ransac_fit(pts: np.ndarray, threshold_px: float, seed: int, max_trials: int, refine: bool, consensus_first: float | None) -> Ellipse:
    """``fit_ellipse_robust(method="ransac")``: consensus or MSAC hypothesis, inlier refits, refinement."""
    e = _consensus_of_all(pts, threshold_px, consensus_first) if consensus_first is not None else None
    if e is None:
        e = _ransac_best(pts, threshold_px, seed, max_trials)
    inl = point_ellipse_distance(pts, e) <= threshold_px
    for _ in range(10):
        if inl.sum() < _MIN_POINTS:
            break
        try:
            e_new = fit_ellipse(pts[inl])
        except ValueError:
            break
        inl_new = point_ellipse_distance(pts, e_new) <= threshold_px
        if inl_new.sum() < inl.sum():
            break
        e, same, inl = e_new, np.array_equal(inl_new, inl), inl_new
        if same:
            break
    if refine and inl.sum() >= _MIN_POINTS:
        e = _refine_geometric(pts, e, weights=inl.astype(float))
        # one more round: the refined curve may admit / reject a few points
        inl2 = point_ellipse_distance(pts, e) <= threshold_px
        if not np.array_equal(inl2, inl) and inl2.sum() >= _MIN_POINTS:
            e = _refine_geometric(pts, e, weights=inl2.astype(float))
    return e


def _irls_fit(pts: np.ndarray, threshold_px: float, weights: str, max_iter: int, anneal: float, min_scale_px: float) -> Ellipse:
    """``fit_ellipse_robust(method="irls")``: robust weights and weighted orthogonal fits in turn."""
    if weights not in _TUNING:
        raise ValueError(f"unknown weight function {weights!r}")
    e = fit_ellipse(pts)
    final_cutoff = 2.0 * threshold_px
    cutoff = max(float(np.max(point_ellipse_distance(pts, e))), final_cutoff)
    for _ in range(max_iter):
        d = point_ellipse_distance(pts, e, signed=True)
        if weights == "tukey":
            w = _robust_weights(d / cutoff, "tukey")
        else:
            sigma = max(1.4826 * float(np.median(np.abs(d))), min_scale_px)
            w = _robust_weights(d / (_TUNING["huber"] * sigma), "huber")
        e_new = _refine_geometric(pts, e, weights=w, max_nfev=20)
        change = max(
            abs(e_new.cx - e.cx), abs(e_new.cy - e.cy), abs(e_new.a - e.a), abs(e_new.b - e.b),
            abs(math.remainder(e_new.theta - e.theta, math.pi)) * e.a,
        )
        e = e_new
        if weights == "tukey" and cutoff > final_cutoff:
            cutoff = max(cutoff * anneal, final_cutoff)
        elif change < 1e-3:
            break
    return e


def fit_ellipse_robust(
    points: np.ndarray,
    method: Literal["ransac", "irls"] = "ransac",
    *,
    threshold_px: float = 1.5,
    seed: int = 0,
    max_trials: int = 500,
    weights: Literal["tukey", "huber"] = "tukey",
    max_iter: int = 60,
    anneal: float = 0.8,
    min_scale_px: float = 0.25,
    refine: bool = True,
    consensus_first: float | None = 0.98,
) -> EllipseFit:
    """Outlier-resistant ellipse fit of ``(N, 2)`` px points (N >= 5).

    ``method="ransac"`` (MSAC scoring + local optimisation):
        ``max_trials`` random 5-point samples (``np.random.default_rng(seed)``) each define a
        conic through the 5 points (batched SVD, non-ellipses dropped); each hypothesis is
        scored by ``Σ min(d², threshold_px²)`` with Sampson distances ``d``; the best one's
        inliers (exact orthogonal distance ``<= threshold_px``) are refitted with
        ``cv2.fitEllipseDirect`` and the inlier set re-estimated until it stops changing; with
        ``refine`` a final orthogonal-distance least-squares fit on the inliers follows.
    ``method="irls"``:
        starts from OpenCV's plain fit (:func:`fit_ellipse`) and alternates robust weights of
        the orthogonal distances ``d`` with a weighted orthogonal-distance least-squares fit
        (at most ``max_iter`` rounds, until the parameters move < 1e-3 px).
        ``weights="tukey"`` (default): biweight ``w = (1 - (d/c)²)²`` for ``|d| < c``, else 0,
        with *graduated non-convexity*: the cutoff ``c`` starts at the largest distance from
        the plain fit (≈ least squares) and shrinks by ``anneal`` per round down to
        ``2 * threshold_px``, so the fit slides from the contaminated start to the majority
        structure instead of locking onto the nearest local minimum (a fixed MAD-based Tukey
        scale fails with ~30% structured outliers, e.g. a wedge cut out of a mask).
        ``weights="huber"``: Huber weights with ``c = 1.345 σ``, ``σ = max(1.4826 · MAD,
        min_scale_px)``; not redescending, so it only damps outliers (biased when they are
        many and one-sided).
    ``consensus_first`` (RANSAC only): before sampling, the plain fit of all points is tried;
        when at least this share of the points lie within ``threshold_px`` of it (Sampson
        distance), that share is the consensus set and the 5-point sampling is skipped (a clean
        mask boundary, the common case, costs one plain fit instead of ``max_trials``
        hypotheses); ``None`` always samples.
    In both cases the result reports the inliers as the points within ``threshold_px`` of the
    final ellipse, ``residual_px`` as their median absolute distance and ``inlier_fraction`` as
    their share. Deterministic for a given ``seed`` (IRLS uses no randomness).
    Raises ``ValueError`` if the points are too few or degenerate or no ellipse is found.
    """
    pts = _as_points(points)
    _check_spread(pts)
    if threshold_px <= 0:
        raise ValueError("threshold_px must be positive")
    if method == "ransac":
        e = _ransac_fit(pts, threshold_px, seed, max_trials, refine, consensus_first)
    elif method == "irls":
        e = _irls_fit(pts, threshold_px, weights, max_iter, anneal, min_scale_px)
    else:
        raise ValueError(f"unknown robust method {method!r} (expected 'ransac' or 'irls')")
    return _summarise(pts, _validate_fit(e, pts), threshold_px)
