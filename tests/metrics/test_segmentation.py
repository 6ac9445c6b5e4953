"""Dice, IoU and HD95 of binary masks."""

import math

import numpy as np
import pytest

from fetalbio.metrics import dice, hausdorff95, iou


def _square(r0, c0, size=10, shape=(20, 20)):
    m = np.zeros(shape, dtype=np.uint8)
    m[r0 : r0 + size, c0 : c0 + size] = 1
    return m


def _disc(radius, shape=(64, 64), center=(32, 32)):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius**2


def test_dice_iou_offset_squares():
    a = _square(0, 0)
    b = _square(5, 0)  # shifted 5 rows: overlap 5 x 10 = 50
    assert dice(a, b) == pytest.approx(0.5)  # 2 * 50 / (100 + 100)
    assert iou(a, b) == pytest.approx(1 / 3)  # 50 / 150
    c = _square(5, 5)  # diagonal shift: overlap 5 x 5 = 25
    assert dice(a, c) == pytest.approx(0.25)  # 50 / 200
    assert iou(a, c) == pytest.approx(1 / 7)  # 25 / 175
    assert dice(a, a.astype(bool)) == 1.0 and iou(a, a) == 1.0


def test_empty_masks():
    e = np.zeros((5, 5), bool)
    full = np.ones((5, 5), bool)
    assert dice(e, e) == 1.0 and iou(e, e) == 1.0
    assert dice(e, full) == 0.0 and iou(full, e) == 0.0
    assert hausdorff95(e, e) == 0.0
    assert math.isinf(hausdorff95(e, full)) and math.isinf(hausdorff95(full, e))


def test_hd95_concentric_discs():
    assert hausdorff95(_disc(10), _disc(13)) == pytest.approx(3.0, abs=1.0)
    # at 0.5 mm/px the same pixels are half as far apart
    assert hausdorff95(_disc(10), _disc(13), spacing_mm=0.5) == pytest.approx(1.5, abs=0.5)
    assert hausdorff95(_disc(10), _disc(10)) == 0.0


def test_hd95_single_pixels_anisotropic_spacing():
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[2, 2] = True
    b[2, 5] = True  # 3 columns apart
    assert hausdorff95(a, b) == pytest.approx(3.0)
    assert hausdorff95(a, b, spacing_mm=(1.0, 0.5)) == pytest.approx(1.5)  # (row, col) mm
    b2 = np.zeros((8, 8), bool)
    b2[6, 2] = True  # 4 rows apart
    assert hausdorff95(a, b2, spacing_mm=(0.25, 1.0)) == pytest.approx(1.0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


def test_hd95_is_the_95th_percentile_of_pooled_distances():
    a = np.zeros((3, 20), bool)
    a[0, :] = True  # a 1-px line: every pixel is boundary
    b = np.zeros((3, 20), bool)
    b[0, 0] = True
    # a -> b distances 0, 1, ..., 19; b -> a: 0. Pooled sorted (21 values): [0, 0, 1, ..., 19];
    # 95th percentile (linear): position 0.95 * 20 = 19 -> value 18 (max would be 19, median 9)
    assert hausdorff95(a, b) == pytest.approx(18.0)
