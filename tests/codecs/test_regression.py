"""Coordinate-regression codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fetalbio.codecs import build_codec
from fetalbio.codecs.regression import RegressionCodec


def test_round_trip_exact():
    codec = build_codec("regression", (160, 120), 4)
    assert codec.kind == "regression" and codec.target_key == "coords"
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-0.5, 159.5, 4), rng.uniform(-0.5, 119.5, 4)])
    out = codec.encode(pts)
    assert out["coords"].shape == (4, 2) and out["coords"].dtype == np.float32
    assert np.all((out["coords"] >= 0) & (out["coords"] <= 1))
    np.testing.assert_array_equal(out["weights"], 1.0)
    decoded, unc = codec.decode(out["coords"][None])
    np.testing.assert_allclose(decoded[0], pts, rtol=0, atol=1e-5)  # float32 targets
    assert unc.shape == (1, 4) and np.isnan(unc).all()


def test_normalisation_convention():
    codec = RegressionCodec((100, 50))
    out = codec.encode(np.array([[-0.5, -0.5], [99.5, 49.5], [49.5, 24.5], [0.0, 0.0]]))
    np.testing.assert_allclose(out["coords"][:3], [[0, 0], [1, 1], [0.5, 0.5]], atol=1e-7)
    np.testing.assert_allclose(out["coords"][3], [0.005, 0.01], atol=1e-7)


def test_invalid_points():
    codec = RegressionCodec((64, 64))
    pts = np.array([[np.nan, 3.0], [10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    out = codec.encode(pts, visible=np.array([True, True, False, True]))
    np.testing.assert_array_equal(out["weights"], [0, 1, 0, 1])
    assert np.isfinite(out["coords"]).all()
    np.testing.assert_array_equal(out["coords"][[0, 2]], 0.0)


def test_decode_torch_differentiable_and_consistent():
    codec = RegressionCodec((64, 32))
    pred = torch.rand(2, 4, 2, dtype=torch.float64, requires_grad=True)
    out = codec.decode_torch(pred)
    np.testing.assert_allclose(out.detach().numpy(), codec.decode(pred.detach().numpy())[0])
    out.sum().backward()
    np.testing.assert_allclose(pred.grad[..., 0].numpy(), 64.0)
    np.testing.assert_allclose(pred.grad[..., 1].numpy(), 32.0)


def test_errors():
    with pytest.raises(TypeError, match="sigma"):
        build_codec("regression", (64, 64), 1, sigma=2.0)
    with pytest.raises(ValueError):
        RegressionCodec((64, 64)).decode(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        RegressionCodec((64, 64)).encode(np.zeros((4, 3)))
