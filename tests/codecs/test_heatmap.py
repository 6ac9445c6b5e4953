"""Heatmap codec: encode/decode geometry, decoders, uncertainty, torch decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fetalbio.codecs import CODECS, build_codec
from fetalbio.codecs.heatmap import HeatmapCodec, heatmap_to_input, input_to_heatmap

INPUT_SIZE = (96, 80)  # (W, H); stride 4 -> 24 x 20 heatmaps


def _test_points(input_size: tuple[int, int]) -> np.ndarray:
    """Sub-pixel points: interior, and 2 px (+ a fraction) from every border and corner."""
    w, h = input_size
    rng = np.random.default_rng(0)
    interior = np.column_stack([rng.uniform(10, w - 11, 8), rng.uniform(10, h - 11, 8)])
    border = np.array(
        [
            [2.0, 2.0],
            [2.37, h / 2 + 0.21],
            [w - 3.0, h - 3.0],
            [w - 3.41, h / 3 + 0.66],
            [w / 2 + 0.13, 2.29],
            [w / 3 - 0.45, h - 3.17],
            [2.12, h - 3.48],
            [w - 3.0, 2.0],
        ]
    )
    return np.concatenate([interior, border])


def _gaussian_maps(uv: np.ndarray, size_wh: tuple[int, int], sigma: float, amp: float = 1.0):
    """Analytic Gaussians ``(K, H, W)`` centred at heatmap coordinates ``uv (K, 2)``."""
    w, h = size_wh
    xs, ys = np.arange(w), np.arange(h)
    gx = np.exp(-((xs[None] - uv[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((ys[None] - uv[:, 1:]) ** 2) / (2 * sigma**2))
    return amp * gy[:, :, None] * gx[:, None, :]


def test_centre_convention_round_trip():
    x = np.array([-0.5, 0.0, 1.5, 3.0, 7.25])
    for s in (1, 2, 4):
        np.testing.assert_allclose(heatmap_to_input(input_to_heatmap(x, s), s), x)
    # stride 4: heatmap pixel 0 covers input pixels 0..3, whose centre is 1.5
    assert input_to_heatmap(np.array(1.5), 4) == pytest.approx(0.0)
    assert input_to_heatmap(np.array(-0.5), 4) == pytest.approx(-0.5)


def test_encode_shapes_dtype_and_peak():
    codec = HeatmapCodec(INPUT_SIZE, output_stride=4, sigma=2.0)
    assert codec.heatmap_size == (24, 20)
    # input (9.5, 13.5) -> heatmap (2, 3): on a pixel centre, so the sampled peak is exactly 1
    pts = np.array([[9.5, 13.5], [40.3, 30.9], [0.0, 0.0], [95.0, 79.0]])
    out = codec.encode(pts)
    hm, w = out["heatmaps"], out["weights"]
    assert hm.shape == (4, 20, 24) and hm.dtype == np.float32
    assert w.shape == (4,) and w.dtype == np.float32
    np.testing.assert_array_equal(w, 1.0)
    assert hm[0].max() == pytest.approx(1.0)
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (3, 2)  # (row=v, col=u)
    assert hm.max() <= 1.0 + 1e-6
    # sub-pixel centre is not rounded: the sampled peak is below 1
    assert hm[1].max() < 0.99


def test_encode_invalid_points_get_zero_weight_and_map():
    codec = HeatmapCodec(INPUT_SIZE, output_stride=4, sigma=2.0)
    pts = np.array([[np.nan, 10.0], [40.0, 30.0], [50.0, 40.0], [-200.0, 30.0]])
    out = codec.encode(pts, visible=np.array([True, True, False, True]))
    np.testing.assert_array_equal(out["weights"], [0.0, 1.0, 0.0, 0.0])
    assert np.all(out["heatmaps"][[0, 2, 3]] == 0.0)
    assert np.isfinite(out["heatmaps"]).all()
    assert out["heatmaps"][1].max() > 0.5
    # slightly outside the input, Gaussian still reaching in: kept
    out = codec.encode(np.array([[-3.0, 40.0]]))
    assert out["weights"][0] == 1.0 and out["heatmaps"][0].max() > 0.1


@pytest.mark.parametrize("decoder", ["soft_argmax", "argmax_refine", "argmax"])
@pytest.mark.parametrize("stride", [1, 4])
@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_round_trip(decoder, stride, sigma):
    input_size = (48, 40) if stride == 1 else INPUT_SIZE
    codec = build_codec("heatmap", input_size, stride, sigma=sigma, decoder=decoder)
    pts = _test_points(input_size)
    out = codec.encode(pts)
    assert np.all(out["weights"] == 1.0)
    decoded, unc = codec.decode(out["heatmaps"][None])
    assert decoded.shape == (1, len(pts), 2) and unc.shape == (1, len(pts))
    err = np.abs(decoded[0] - pts).max()
    tol = 0.5 * stride if decoder == "argmax" else 0.05
    assert err <= tol, f"{decoder} stride={stride} sigma={sigma}: max error {err:.4f} px"


def test_soft_argmax_recovers_analytic_gaussian_centre():
    sigma = 2.5
    codec = HeatmapCodec((40, 32), output_stride=1, sigma=sigma, decoder="soft_argmax")
    # interior, truncated by the border (centre 0.7 px from the edge), and a corner
    uv = np.array([[17.3, 11.8], [0.7, 15.4], [38.6, 30.9]])
    maps = _gaussian_maps(uv, (40, 32), sigma, amp=0.7)
    decoded, _ = codec.decode(maps[None])
    np.testing.assert_allclose(decoded[0], uv, atol=1e-4)
    # the de-truncation matters: a plain centroid of the border map is biased by > 0.5 px
    p = maps[1] / maps[1].sum()
    plain_x = (p.sum(0) * np.arange(40)).sum()
    assert plain_x - uv[1, 0] > 0.5


def test_uncertainty_grows_with_sigma():
    sigmas = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
    uv = np.array([[20.2, 16.7]])
    maps = np.stack([_gaussian_maps(uv, (40, 32), s) for s in sigmas])  # (N, 1, H, W)
    for mode in ("variance", "entropy"):
        codec = HeatmapCodec((160, 128), output_stride=4, sigma=2.0, uncertainty=mode)
        _, unc = codec.decode(maps)
        assert np.all(np.diff(unc[:, 0]) > 0), f"{mode}: {unc[:, 0]}"
    # variance mode is ~sigma in input px for a map of the codec's own sigma
    for s in (1.5, 2.0, 3.0):
        codec = HeatmapCodec((160, 128), output_stride=4, sigma=s)
        _, unc = codec.decode(_gaussian_maps(uv, (40, 32), s)[None])
        assert unc[0, 0] == pytest.approx(4 * s, rel=0.05)


def test_uncertainty_flat_and_empty_maps():
    codec = HeatmapCodec((64, 64), output_stride=4, sigma=2.0, uncertainty="entropy")
    peaked = codec.encode(np.array([[30.0, 30.0]]))["heatmaps"]
    flat = np.full_like(peaked, 0.3)
    empty = np.zeros_like(peaked)
    _, unc = codec.decode(np.stack([peaked, flat, empty]))
    assert unc[0, 0] < 0.85  # log(2 pi e sigma^2) / log(16 * 16) ~ 0.76
    assert unc[1, 0] == pytest.approx(1.0) and unc[2, 0] == pytest.approx(1.0)


def test_decode_argmax_refine_handles_flat_and_noisy_maps():
    codec = HeatmapCodec((64, 64), output_stride=4, sigma=2.0, decoder="argmax_refine")
    rng = np.random.default_rng(1)
    maps = rng.normal(0, 0.05, size=(3, 2, 16, 16))
    maps[:, 0] = 0.0  # degenerate: no peak
    pts, unc = codec.decode(maps)
    assert np.isfinite(pts).all() and np.isfinite(unc).all()


def test_decode_rejects_wrong_shape():
    codec = HeatmapCodec((64, 64), output_stride=4)
    with pytest.raises(ValueError, match="16, 16"):
        codec.decode(np.zeros((1, 4, 32, 32)))
    with pytest.raises(ValueError):
        codec.decode(np.zeros((4, 16, 16)))
    with pytest.raises(ValueError):
        codec.decode_torch(torch.zeros(1, 4, 8, 16))


def test_decode_torch_matches_decode_and_has_gradients():
    codec = HeatmapCodec(INPUT_SIZE, output_stride=4, sigma=2.0, decoder="soft_argmax")
    pts = _test_points(INPUT_SIZE)[:12].reshape(3, 4, 2)
    clean = np.stack([codec.encode(p)["heatmaps"] for p in pts])
    rng = np.random.default_rng(2)
    # also maps that are not the codec's Gaussian: wider peaks plus noise
    wide = np.stack(
        [_gaussian_maps(input_to_heatmap(p, 4), codec.heatmap_size, 3.0) for p in pts]
    )
    noisy = wide + rng.normal(0, 0.03, wide.shape)
    for maps in (clean, noisy.astype(np.float32)):
        ref, _ = codec.decode(maps)
        t = torch.tensor(maps, requires_grad=True)
        out = codec.decode_torch(t)
        assert out.shape == (3, 4, 2) and out.dtype == torch.float32
        np.testing.assert_allclose(out.detach().numpy(), ref, atol=0.1)
        out.sum().backward()
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # the decoder setting does not change decode_torch
    argmax_codec = HeatmapCodec(INPUT_SIZE, output_stride=4, sigma=2.0, decoder="argmax")
    np.testing.assert_allclose(
        argmax_codec.decode_torch(torch.tensor(clean)).numpy(), pts, atol=0.01
    )


def test_decode_torch_gradient_is_correct():
    """Analytic (window + implicit) gradient against finite differences, near a border."""
    codec = HeatmapCodec((36, 36), output_stride=3, sigma=1.5)
    maps = _gaussian_maps(np.array([[0.6, 6.3]]), codec.heatmap_size, 1.5)[None]
    maps = maps + np.random.default_rng(3).uniform(0, 0.05, maps.shape)
    t = torch.tensor(maps, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: codec.decode_torch(h), (t,), atol=1e-5)


def test_build_codec_errors():
    assert {"heatmap", "regression"} <= set(CODECS.names())
    with pytest.raises(KeyError, match="heatmap"):
        build_codec("gaussian", (64, 64), 4)
    with pytest.raises(TypeError, match="sigmaa"):
        build_codec("heatmap", (64, 64), 4, sigmaa=2.0, foo=1)
    with pytest.raises(ValueError, match="decoder"):
        build_codec("heatmap", (64, 64), 4, decoder="dark")
    with pytest.raises(ValueError, match="uncertainty"):
        build_codec("heatmap", (64, 64), 4, uncertainty="std")
    codec = build_codec("heatmap", (64, 48), 4, sigma=1.5)
    assert codec.kind == "heatmap" and codec.target_key == "heatmaps"
    assert codec.heatmap_size == (16, 12)
