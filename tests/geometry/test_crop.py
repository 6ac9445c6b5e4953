"""Head-aligned crops: exact round trips of points and ellipses, jitter, refusal of bad ellipses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fetalbio.geometry.crop import CropJitter, HeadCrop, crop_problem
from fetalbio.geometry.ellipse import Ellipse, transform_ellipse

SRC, DST = (800, 540), (160, 128)


@pytest.mark.parametrize("theta", [0.0, 0.4, 1.3, math.pi / 2, 2.9])
@pytest.mark.parametrize("mirror", [False, True])
def test_points_and_ellipses_round_trip_within_0_05_px(theta: float, mirror: bool) -> None:
    e = Ellipse(311.7, 240.2, 130.0, 98.5, theta)
    fr = HeadCrop.from_ellipse(e, SRC, DST, 1.35)
    fr = HeadCrop(fr.cx, fr.cy, fr.k, fr.theta, fr.src_size, fr.dst_size, mirror)
    pts = np.random.default_rng(0).uniform(0, 800, size=(50, 2))
    assert np.abs(fr.to_original(fr.to_crop(pts)) - pts).max() < 0.05
    back = transform_ellipse(transform_ellipse(e, fr.matrix()), fr.inverse())
    assert np.allclose([back.cx, back.cy, back.a, back.b], [e.cx, e.cy, e.a, e.b], atol=0.05)
    assert abs(math.remainder(back.theta - e.theta, math.pi)) < 1e-6


def test_the_head_is_centred_horizontal_and_spans_the_crop() -> None:
    e = Ellipse(300.0, 260.0, 90.0, 70.0, 1.1)
    c = transform_ellipse(e, HeadCrop.from_ellipse(e, SRC, DST, 1.35).matrix())
    assert c.cx == pytest.approx((DST[0] - 1) / 2) and c.cy == pytest.approx((DST[1] - 1) / 2)
    assert min(c.theta, math.pi - c.theta) < 1e-9  # long axis horizontal
    assert 2 * c.a * 1.35 == pytest.approx(DST[0])  # scale-normalised: any head, the same size
    small = transform_ellipse(Ellipse(100, 100, 20, 15, 0.3), HeadCrop.from_ellipse(Ellipse(100, 100, 20, 15, 0.3), SRC, DST, 1.35).matrix())
    assert small.a == pytest.approx(c.a)


def test_jitter_is_reproducible_from_its_seed_and_has_the_asked_spread() -> None:
    e = Ellipse(400.0, 270.0, 100.0, 80.0, 0.2)
    fr = HeadCrop.from_ellipse(e, SRC, DST, 1.35)
    j = CropJitter(centre_frac=0.05, log_scale=0.1, angle_deg=10.0, turn=0.5, flip=0.5)
    a = [fr.jittered(np.random.default_rng(np.random.SeedSequence([3, i])), e.a, j) for i in range(400)]
    b = [fr.jittered(np.random.default_rng(np.random.SeedSequence([3, i])), e.a, j) for i in range(400)]
    assert a == b
    assert np.std([math.log(x.k / fr.k) for x in a]) == pytest.approx(0.1, rel=0.15)
    assert np.std([x.cx - fr.cx for x in a]) == pytest.approx(5.0, rel=0.15)
    assert 0.4 < np.mean([x.mirror for x in a]) < 0.6


def test_degenerate_or_outside_coarse_ellipses_are_named() -> None:
    assert crop_problem(None, None) == "no coarse ellipse"
    assert "degenerate" in crop_problem(Ellipse(10, 10, 2.0, 1.0, 0.0), None)
    far = Ellipse(2000.0, 2000.0, 80.0, 60.0, 0.0)
    assert "mostly outside the image" in crop_problem(far, HeadCrop.from_ellipse(far, SRC, DST, 1.35))
    inside = Ellipse(400.0, 270.0, 80.0, 60.0, 0.0)
    assert crop_problem(inside, HeadCrop.from_ellipse(inside, SRC, DST, 1.35)) == ""


@pytest.mark.parametrize("bad", [{"centre_frac": -1.0}, {"turn": 1.5}, {"angle_deg": float("nan")}])
def test_bad_jitter_is_refused_with_the_option_named(bad: dict) -> None:
    with pytest.raises(ValueError, match=f"jitter.{next(iter(bad))}"):
        CropJitter(**bad)
