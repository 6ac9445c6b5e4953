"""Gaussian heatmap codec (one channel per landmark).

Pixel-centre convention
-----------------------
Input pixel ``i`` has its centre at ``x = i`` and covers ``[i - 0.5, i + 0.5]``. With output
stride ``s``, heatmap pixel ``j`` covers input pixels ``[j*s, (j+1)*s)``, so its centre is at

    x = (j + 0.5) * s - 0.5          and conversely          u = (x + 0.5) / s - 0.5

(:func:`input_to_heatmap` / :func:`heatmap_to_input`; same for ``y``/``v``). For ``s = 1`` the
two grids coincide. ``encode`` and every decoder use this one mapping, so an encode -> decode
round trip has no systematic offset. ``heatmap_size = (W // s, H // s)``.

Target
------
Channel ``k`` is the (untruncated) Gaussian ``exp(-((j-u_k)^2 + (i-v_k)^2) / (2 sigma^2))``
sampled on the heatmap grid, with a sub-pixel centre (never rounded) and continuous peak value
1, so the sampled maximum is 1 only for a centre on a pixel. ``sigma`` is in heatmap pixels.

Decoders (all return input pixels)
----------------------------------
``argmax``
    Centre of the maximal heatmap pixel (error up to ``0.5 * s`` per axis).
``argmax_refine``
    DARK-style refinement (Zhang et al., CVPR 2020, without the Gaussian modulation step): a
    second-order Taylor expansion of ``log(max(h, 1e-10))`` on a 3x3 neighbourhood gives the
    peak as ``x - H^{-1} g``. The 3x3 stencil is centred on the argmax pixel, shifted inwards
    by one pixel when the peak lies on the border (a quadratic is fitted exactly by any three
    consecutive samples, so border peaks stay exact). If the Hessian is not negative definite
    the classic quarter offset towards the larger neighbour is used instead. The refined point
    is kept within one heatmap pixel of the argmax.
``soft_argmax``
    Integral regression in a local window: the window is the square of radius
    ``R = ceil(3 sigma)`` heatmap pixels around the argmax, clipped to the map; the
    clipped-positive map is normalised in the window and its centroid ``c`` is taken per axis.
    Where the window is clipped by the border (or is not centred on the true peak) a plain
    centroid is biased towards the inside, so ``c`` is *de-truncated*: the estimate is the
    centre ``mu`` of a Gaussian of the codec's ``sigma`` whose centroid over the very same
    window equals ``c`` (the window centroid is strictly increasing in ``mu``, so ``mu`` is
    unique; found by safeguarded Newton per axis, ``d centroid / d mu = Var_window / sigma^2``).
    Far from the border this correction is negligible and the decoder is the plain windowed
    centroid; for a Gaussian of the codec's width it is unbiased everywhere, the border
    included. :meth:`HeatmapCodec.decode_torch` is the same computation made differentiable:
    gradients flow through the window centroid, and through the de-truncation by the implicit
    function theorem (``d mu / d c = sigma^2 / Var_window(mu)``).

Uncertainty (per point)
-----------------------
``variance``
    ``sqrt((Var_x + Var_y) / 2) * s`` in *input pixels*, where the variances are those of the
    clipped-positive heatmap normalised over the same ``R = ceil(3 sigma)`` window around the
    argmax. A target heatmap gives about ``sigma * s`` (slightly less: the window truncates at
    3 sigma, and a window clipped by the map border truncates more, so points within ~3 sigma
    of the border read somewhat more certain); flatter maps give larger values.
``entropy``
    Normalised Shannon entropy ``-sum p log p / log(H*W)`` in ``[0, 1]`` of the whole
    clipped-positive map normalised to sum 1; 1 for a flat map.

A map with no positive value is treated as uniform (maximal uncertainty).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from fetalbio.registry import CODECS

DECODERS = ("soft_argmax", "argmax", "argmax_refine")
UNCERTAINTIES = ("variance", "entropy")

_LOG_FLOOR = 1e-10  # floor of heatmap values before the log in argmax_refine
_NEWTON_ITERS = 30


def input_to_heatmap(xy: np.ndarray, stride: int) -> np.ndarray:
    """Input-pixel coordinates -> heatmap-pixel coordinates (``u = (x + 0.5) / s - 0.5``)."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / stride - 0.5


def heatmap_to_input(uv: np.ndarray, stride: int) -> np.ndarray:
    """Heatmap-pixel coordinates -> input-pixel coordinates (``x = (u + 0.5) * s - 0.5``)."""
    return (np.asarray(uv, dtype=np.float64) + 0.5) * stride - 0.5


# --------------------------------------------------------------------------------------------
# Decoding core (torch, maps flattened to (M, H, W); coordinates in heatmap pixels)
# --------------------------------------------------------------------------------------------


def _argmax2d(h: Tensor) -> tuple[Tensor, Tensor]:
    """Integer peak ``(ix, iy)``, each ``(M,)`` long, of maps ``(M, H, W)``."""
    w = h.shape[-1]
    flat = h.reshape(h.shape[0], -1).argmax(dim=1)
    return flat % w, torch.div(flat, w, rounding_mode="floor")


def _window_masks(ix: Tensor, iy: Tensor, h: int, w: int, radius: int) -> tuple[Tensor, Tensor]:
    """Boolean window masks ``(M, W)`` along x and ``(M, H)`` along y: ``|i - peak| <= radius``."""
    xs = torch.arange(w, device=ix.device)
    ys = torch.arange(h, device=iy.device)
    mx = (xs[None, :] - ix[:, None]).abs() <= radius
    my = (ys[None, :] - iy[:, None]).abs() <= radius
    return mx, my


def _window_marginals(h: Tensor, mx: Tensor, my: Tensor) -> tuple[Tensor, Tensor]:
    """Marginals ``(M, W)``, ``(M, H)`` (each summing to 1) of the clipped-positive map in the
    window; an all-non-positive window is replaced by a uniform one. Differentiable in ``h``."""
    win = my[:, :, None] & mx[:, None, :]
    p = h.clamp_min(0) * win
    mass = p.sum(dim=(1, 2))
    empty = (mass <= 0)[:, None, None]
    p = torch.where(empty, win.to(h.dtype), p)
    p = p / p.sum(dim=(1, 2), keepdim=True)
    return p.sum(dim=1), p.sum(dim=2)


def _centroid_var(p: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance ``(M,)`` of 1-D distributions ``p (M, L)`` over the grid ``0..L-1``."""
    grid = torch.arange(p.shape[1], dtype=p.dtype, device=p.device)
    mean = (p * grid).sum(dim=1)
    var = (p * (grid[None, :] - mean[:, None]) ** 2).sum(dim=1)
    return mean, var


def _gaussian_window_moments(mu: Tensor, mask: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Centroid and variance over the window ``mask (M, L)`` of a sampled Gaussian centred at
    ``mu (M,)`` (stable for centres far outside the window)."""
    grid = torch.arange(mask.shape[1], dtype=mu.dtype, device=mu.device)
    e = -((grid[None, :] - mu[:, None]) ** 2) / (2.0 * sigma**2)
    e = e.masked_fill(~mask, -math.inf)
    e = e - e.max(dim=1, keepdim=True).values
    p = e.exp()
    return _centroid_var(p / p.sum(dim=1, keepdim=True))


@torch.no_grad()
def _detruncate(c_obs: Tensor, mask: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Solve ``centroid_window(Gaussian(mu, sigma)) = c_obs`` for ``mu`` per row.

    Args:
        c_obs: ``(M,)`` observed window centroids (heatmap px).
        mask: ``(M, L)`` bool window along this axis.
        sigma: Gaussian sigma in heatmap pixels.

    Returns:
        ``mu (M,)`` and the model window variance at ``mu`` (``(M,)``, for the implicit
        gradient). Safeguarded Newton: a step leaving the current bracket is replaced by
        bisection, so it converges even for windows of two or three pixels.
    """
    grid = torch.arange(mask.shape[1], dtype=c_obs.dtype, device=c_obs.device)
    lo_w = torch.where(mask, grid, torch.full_like(grid, math.inf)).amin(dim=1)
    hi_w = torch.where(mask, grid, torch.full_like(grid, -math.inf)).amax(dim=1)
    lo = lo_w - 3.0 * sigma - 1.0
    hi = hi_w + 3.0 * sigma + 1.0
    mu = c_obs.clone()
    for _ in range(_NEWTON_ITERS):
        c, var = _gaussian_window_moments(mu, mask, sigma)
        g = c - c_obs
        lo = torch.where(g < 0, mu, lo)
        hi = torch.where(g > 0, mu, hi)
        cand = mu - g * sigma**2 / var.clamp_min(1e-300)
        bad = ~torch.isfinite(cand) | (cand <= lo) | (cand >= hi)
        new = torch.where(g == 0, mu, torch.where(bad, 0.5 * (lo + hi), cand))
        if torch.all((new - mu).abs() < 1e-12):
            mu = new
            break
        mu = new
    _, var = _gaussian_window_moments(mu, mask, sigma)
    return mu, var


def _soft_argmax(h: Tensor, sigma: float, radius: int) -> Tensor:
    """De-truncated local-window integral regression (module docstring).

    Args:
        h: ``(M, H, W)`` float maps (may require grad).

    Returns:
        ``(M, 2)`` ``(u, v)`` in heatmap pixels, differentiable in ``h``.
    """
    ix, iy = _argmax2d(h.detach())
    mx, my = _window_masks(ix, iy, h.shape[1], h.shape[2], radius)
    px, py = _window_marginals(h, mx, my)
    out = []
    for p, mask in ((px, mx), (py, my)):
        c, _ = _centroid_var(p)
        mu, var = _detruncate(c.detach(), mask, sigma)
        # Implicit gradient: d mu / d c = sigma^2 / Var_window(mu); guarded for windows whose
        # model variance collapses (a centre far outside a tiny window).
        gain = sigma**2 / var.clamp_min(1e-3 * sigma**2)
        out.append(mu + (c - c.detach()) * gain)
    return torch.stack(out, dim=1)


def _argmax_refine(h: Tensor) -> Tensor:
    """DARK-style Taylor refinement around the argmax (module docstring). ``(M, 2)`` u, v."""
    m, hh, ww = h.shape
    ix, iy = _argmax2d(h)
    rows = torch.arange(m, device=h.device)
    cx = ix.clamp(1, ww - 2)
    cy = iy.clamp(1, hh - 2)
    logh = torch.log(h.clamp_min(_LOG_FLOOR))

    def at(dx: int, dy: int) -> Tensor:
        return logh[rows, cy + dy, cx + dx]

    l00 = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = at(1, 0) - 2.0 * l00 + at(-1, 0)
    hyy = at(0, 1) - 2.0 * l00 + at(0, -1)
    hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = hxx * hyy - hxy**2
    ok = (hxx < 0) & (det > 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    # offset = -H^{-1} g
    ox = -(hyy * gx - hxy * gy) / safe_det
    oy = -(hxx * gy - hxy * gx) / safe_det
    u = cx.to(h.dtype) + ox
    v = cy.to(h.dtype) + oy
    fx, fy = ix.to(h.dtype), iy.to(h.dtype)
    u = torch.minimum(torch.maximum(u, fx - 1), fx + 1)
    v = torch.minimum(torch.maximum(v, fy - 1), fy + 1)
    # Fallback: quarter offset towards the larger neighbour (raw values, clamped indices).
    qx = 0.25 * torch.sign(h[rows, iy, (ix + 1).clamp(max=ww - 1)] - h[rows, iy, (ix - 1).clamp(min=0)])
    qy = 0.25 * torch.sign(h[rows, (iy + 1).clamp(max=hh - 1), ix] - h[rows, (iy - 1).clamp(min=0), ix])
    u = torch.where(ok, u, fx + qx)
    v = torch.where(ok, v, fy + qy)
    return torch.stack([u, v], dim=1)


def _entropy(h: Tensor) -> Tensor:
    """Normalised entropy ``(M,)`` in [0, 1] of the clipped-positive maps ``(M, H, W)``."""
    p = h.clamp_min(0).reshape(h.shape[0], -1)
    n = p.shape[1]
    mass = p.sum(dim=1, keepdim=True)
    p = torch.where(mass > 0, p / mass.clamp_min(1e-300), torch.full_like(p, 1.0 / n))
    ent = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1)
    return ent / math.log(n) if n > 1 else torch.zeros_like(ent)


# --------------------------------------------------------------------------------------------
# Codec
# --------------------------------------------------------------------------------------------


@CODECS.register("heatmap")
class HeatmapCodec:
    """Points <-> Gaussian heatmaps; see the module docstring for every convention.

    Args:
        input_size: network input size ``(W, H)`` in pixels.
        output_stride: input pixels per heatmap pixel ``s``; ``heatmap_size = (W//s, H//s)``.
        sigma: Gaussian sigma in *heatmap* pixels.
        decoder: ``"soft_argmax"`` | ``"argmax"`` | ``"argmax_refine"``.
        uncertainty: ``"variance"`` (input px) | ``"entropy"`` (unitless, [0, 1]).
    """

    kind = "heatmap"
    target_key = "heatmaps"

    def __init__(
        self,
        input_size: tuple[int, int],
        output_stride: int = 4,
        sigma: float = 2.0,
        decoder: str = "soft_argmax",
        uncertainty: str = "variance",
    ) -> None:
        w, h = (int(v) for v in input_size)
        s = int(output_stride)
        if s < 1:
            raise ValueError(f"output_stride must be >= 1, got {output_stride}")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive number of heatmap pixels, got {sigma}")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; valid: {', '.join(DECODERS)}")
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"unknown uncertainty {uncertainty!r}; valid: {', '.join(UNCERTAINTIES)}")
        self.input_size = (w, h)
        self.output_stride = s
        self.heatmap_size = (w // s, h // s)
        if min(self.heatmap_size) < 3:
            raise ValueError(
                f"heatmap_size {self.heatmap_size} (input {input_size} / stride {s}) "
                "must be at least 3x3"
            )
        self.sigma = float(sigma)
        self.decoder = decoder
        self.uncertainty = uncertainty
        self.radius = int(math.ceil(3.0 * self.sigma))  # local window, heatmap px

    def __repr__(self) -> str:
        return (
            f"HeatmapCodec(input_size={self.input_size}, output_stride={self.output_stride}, "
            f"sigma={self.sigma}, decoder={self.decoder!r}, uncertainty={self.uncertainty!r})"
        )

    # ------------------------------------------------------------------ encode

    def encode(self, points: np.ndarray, visible: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Encode one landmark set.

        Args:
            points: ``(K, 2)`` ``(x, y)`` in input pixels; NaN marks a missing point.
            visible: ``(K,)`` bool, or None for all visible.

        Returns:
            ``heatmaps``: ``(K, Hh, Wh)`` float32 Gaussians of continuous peak 1 (all zero
            where the weight is 0); ``weights``: ``(K,)`` float32, 0 for invisible or
            non-finite points and for points whose Gaussian lies fully outside the map (centre
            more than ``3 sigma`` beyond the outermost pixel centres), else 1.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"expected points of shape (K, 2), got {pts.shape}")
        k = pts.shape[0]
        vis = np.ones(k, bool) if visible is None else np.asarray(visible, bool).reshape(k)
        wh, hh = self.heatmap_size
        uv = input_to_heatmap(np.where(np.isfinite(pts), pts, 0.0), self.output_stride)
        reach = 3.0 * self.sigma
        inside = (uv[:, 0] >= -reach) & (uv[:, 0] <= wh - 1 + reach) & (uv[:, 1] >= -reach) & (uv[:, 1] <= hh - 1 + reach)
        valid = vis & np.isfinite(pts).all(axis=1) & inside
        den = 2.0 * self.sigma**2
        gx = np.exp(-((np.arange(wh)[None, :] - uv[:, :1]) ** 2) / den)  # (K, Wh)
        gy = np.exp(-((np.arange(hh)[None, :] - uv[:, 1:]) ** 2) / den)  # (K, Hh)
        heatmaps = gy[:, :, None] * gx[:, None, :]
        heatmaps[~valid] = 0.0
        return {"heatmaps": heatmaps.astype(np.float32), "weights": valid.astype(np.float32)}

    # ------------------------------------------------------------------ decode

    def _check_maps(self, shape: tuple[int, ...]) -> None:
        wh, hh = self.heatmap_size
        if len(shape) != 4 or tuple(shape[-2:]) != (hh, wh):
            raise ValueError(f"expected heatmaps of shape (N, K, {hh}, {wh}) for {self!r}, got {tuple(shape)}")

    def _decode_uv(self, h: Tensor) -> Tensor:
        """``(M, H, W)`` float64 maps -> ``(M, 2)`` heatmap-pixel coordinates."""
        if self.decoder == "argmax":
            ix, iy = _argmax2d(h)
            return torch.stack([ix, iy], dim=1).to(h.dtype)
        if self.decoder == "argmax_refine":
            return _argmax_refine(h)
        return _soft_argmax(h, self.sigma, self.radius)

    def _uncertainty(self, h: Tensor) -> Tensor:
        """``(M, H, W)`` maps -> ``(M,)`` uncertainty (module docstring)."""
        if self.uncertainty == "entropy":
            return _entropy(h)
        ix, iy = _argmax2d(h)
        mx, my = _window_masks(ix, iy, h.shape[1], h.shape[2], self.radius)
        px, py = _window_marginals(h, mx, my)
        _, vx = _centroid_var(px)
        _, vy = _centroid_var(py)
        return torch.sqrt(0.5 * (vx + vy)) * self.output_stride

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode predicted heatmaps with the configured decoder.

        Args:
            heatmaps: ``(N, K, Hh, Wh)`` array (any float dtype).

        Returns:
            ``points``: ``(N, K, 2)`` float64 ``(x, y)`` in input pixels;
            ``uncertainty``: ``(N, K)`` float64 (input px for ``variance``, [0, 1] for
            ``entropy``).
        """
        arr = np.asarray(heatmaps)
        self._check_maps(arr.shape)
        n, k, hh, wh = arr.shape
        if n * k == 0:
            return np.zeros((n, k, 2)), np.zeros((n, k))
        h = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64)).reshape(n * k, hh, wh)
        with torch.no_grad():
            uv = self._decode_uv(h).numpy()
            unc = self._uncertainty(h).numpy()
        points = heatmap_to_input(uv, self.output_stride).reshape(n, k, 2)
        return points, unc.reshape(n, k)

    def decode_torch(self, heatmaps: Tensor) -> Tensor:
        """Differentiable soft-argmax (the ``soft_argmax`` decoder, whatever ``decoder`` is).

        Args:
            heatmaps: ``(B, K, Hh, Wh)`` predicted heatmaps (values, not logits; negative
                values are clipped to 0 before normalisation).

        Returns:
            ``(B, K, 2)`` ``(x, y)`` in input pixels, same dtype/device as the input, with
            gradients w.r.t. the heatmap values inside the local window (computed in float64).
        """
        self._check_maps(tuple(heatmaps.shape))
        b, k, hh, wh = heatmaps.shape
        h = heatmaps.reshape(b * k, hh, wh).to(torch.float64)
        uv = _soft_argmax(h, self.sigma, self.radius)
        xy = (uv + 0.5) * self.output_stride - 0.5
        return xy.reshape(b, k, 2).to(heatmaps.dtype)
