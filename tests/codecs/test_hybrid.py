"""Hybrid (heatmap + coordinate regression) codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fetalbio.codecs import build_codec

SIZE = (128, 96)


def _points() -> np.ndarray:
    return np.array([[20.3, 47.9], [107.6, 50.2], [63.1, 18.4], [61.7, 80.8]])


def test_encode_gives_both_targets_and_one_weight() -> None:
    codec = build_codec("hybrid", SIZE, 4, sigma=1.5)
    assert codec.kind == "hybrid" and codec.target_key == "heatmaps" and codec.heatmap_size == (32, 24)
    pts = _points()
    pts[2] = np.nan
    enc = codec.encode(pts)
    assert enc["heatmaps"].shape == (4, 24, 32) and enc["coords"].shape == (4, 2)
    np.testing.assert_array_equal(enc["weights"], [1, 1, 0, 1])
    np.testing.assert_array_equal(enc["coords"][2], 0.0)
    np.testing.assert_allclose(enc["coords"][[0, 1, 3]], (pts[[0, 1, 3]] + 0.5) / np.array(SIZE), atol=1e-6)


@pytest.mark.parametrize("source", ["heatmap", "regression", "average"])
def test_decode_point_source(source: str) -> None:
    codec = build_codec("hybrid", SIZE, 4, sigma=1.5, point_source=source)
    pts = _points()
    enc = codec.encode(pts)
    shifted = enc["coords"] + np.float32(4.0) / np.array(SIZE, dtype=np.float32)  # regression head 4 px off
    out, unc = codec.decode([enc["heatmaps"][None], shifted[None]])
    expected = {"heatmap": pts, "regression": pts + 4.0, "average": pts + 2.0}[source]
    np.testing.assert_allclose(out[0], expected, atol=0.05)
    assert unc.shape == (1, 4) and np.isfinite(unc).all()
    # the differentiable decode agrees, and deep-supervision lists decode their last maps
    hm = torch.from_numpy(enc["heatmaps"][None]).requires_grad_(True)
    xy = torch.from_numpy(shifted[None]).requires_grad_(True)
    t = codec.decode_torch([hm * 0.5, hm, xy])
    np.testing.assert_allclose(t.detach().numpy()[0], expected, atol=0.05)
    t.sum().backward()
    assert (hm.grad is not None) == (source != "regression")
    assert (xy.grad is not None) == (source != "heatmap")


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="point_source"):
        build_codec("hybrid", SIZE, 4, point_source="mean")
    with pytest.raises(TypeError, match="bogus"):
        build_codec("hybrid", SIZE, 4, bogus=1)
    codec = build_codec("hybrid", SIZE, 4)
    with pytest.raises(ValueError, match="list"):
        codec.decode(np.zeros((1, 4, 24, 32)))
