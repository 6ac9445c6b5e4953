"""Landmark and segmentation losses, and the geometric prior."""

from __future__ import annotations

import math

import pytest
import torch

from fetalbio.losses import LOSSES, boundary_band, build_loss, geometric_prior

HEATMAP_LOSSES = ["heatmap_mse", "adaptive_wing"]
COORD_LOSSES = ["smooth_l1", "wing"]
SEG_LOSSES = ["dice_bce", "focal_dice", "boundary_dice_bce"]
ALL_LOSSES = HEATMAP_LOSSES + COORD_LOSSES + SEG_LOSSES


def _gauss_maps(b: int = 3, k: int = 4, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(b, k, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * 2.0**2))


def _disc_masks(b: int = 3, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cx, cy = (torch.rand(b, 2, generator=g) * 8 + size / 2 - 4).unbind(1)
    r = torch.rand(b, generator=g) * 4 + 5
    d = ((xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2).sqrt()
    return (d <= r[:, None, None]).float()[:, None]


def _case(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(perfect prediction, target, imperfect prediction) for a loss."""
    g = torch.Generator().manual_seed(seed + 100)
    if name in HEATMAP_LOSSES:
        t = _gauss_maps(seed=seed)
        return t.clone(), t, t + 0.2 * torch.randn(t.shape, generator=g)
    if name in COORD_LOSSES:
        t = torch.rand(3, 4, 2, generator=g)
        return t.clone(), t, t + 0.05 * torch.randn(t.shape, generator=g)
    t = _disc_masks(seed=seed)
    perfect = (t * 2 - 1) * 30.0  # saturated logits
    return perfect, t, torch.randn(t.shape, generator=g)


# ------------------------------------------------------------------ registry / build


def test_registry_and_build_errors():
    assert set(LOSSES.names()) == set(ALL_LOSSES) | {"heatmap_coord"}
    for name in ALL_LOSSES:
        assert isinstance(build_loss(name), torch.nn.Module)
    with pytest.raises(KeyError, match="adaptive_wing"):
        build_loss("awing")
    with pytest.raises(TypeError, match="gama"):
        build_loss("focal_dice", gama=2.0)
    with pytest.raises(TypeError, match="point_weight"):
        build_loss("heatmap_mse", point_weight=[1, 1, 1, 1])


# ------------------------------------------------------------------ shared behaviour


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_perfect_prediction_is_minimal(name):
    loss = build_loss(name)
    perfect, target, worse = _case(name)
    best = loss(perfect, target)
    assert best.ndim == 0
    assert best.item() < 1e-3
    assert loss(worse, target).item() > 10 * max(best.item(), 1e-6)
    if name in HEATMAP_LOSSES + COORD_LOSSES:
        assert best.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_sample_weight_zero_removes_sample(name):
    loss = build_loss(name)
    _, target, pred = _case(name)
    alone = loss(pred[:1], target[:1])
    for sw in ([1.0, 0.0], [2.5, 0.0]):
        weighted = loss(pred[:2], target[:2], sample_weight=torch.tensor(sw))
        assert weighted.item() == pytest.approx(alone.item(), rel=1e-5)
    # the unweighted loss of both samples differs (the test above can fail)
    assert loss(pred[:2], target[:2]).item() != pytest.approx(alone.item(), rel=1e-3)
    # relative weights: (1*l0 + 3*l1) / 4
    l1 = loss(pred[1:2], target[1:2])
    mixed = loss(pred[:2], target[:2], sample_weight=torch.tensor([1.0, 3.0]))
    assert mixed.item() == pytest.approx((alone.item() + 3 * l1.item()) / 4, rel=1e-5)
    zero = loss(pred[:2], target[:2], sample_weight=torch.zeros(2))
    assert zero.item() == 0.0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_list_input_is_mean(name):
    loss = build_loss(name)
    _, target, pred = _case(name)
    other = _case(name, seed=1)[2]  # a different imperfect prediction, same shape
    both = loss([pred, other], target)
    mean = 0.5 * (loss(pred, target) + loss(other, target))
    assert both.item() == pytest.approx(mean.item(), rel=1e-6)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_finite_gradients(name):
    loss = build_loss(name)
    perfect, target, pred = _case(name)
    for p in (perfect, pred, [perfect, pred]):
        leaves = [q.clone().requires_grad_(True) for q in (p if isinstance(p, list) else [p])]
        value = loss(leaves if isinstance(p, list) else leaves[0], target,
                     sample_weight=torch.tensor([1.0, 0.5, 0.0]),
                     channel_weight=torch.ones(target.shape[:2]))
        value.backward()
        assert math.isfinite(value.item())
        for leaf in leaves:
            assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    # the imperfect prediction gets a non-zero gradient
    q = pred.clone().requires_grad_(True)
    loss(q, target).backward()
    assert q.grad.abs().sum() > 0


@pytest.mark.parametrize("name", HEATMAP_LOSSES + COORD_LOSSES)
def test_channel_weight_zero_ignores_channel(name):
    loss = build_loss(name)
    _, target, pred = _case(name)
    cw = torch.ones(target.shape[:2])
    cw[:, 2] = 0.0
    changed = pred.clone()
    changed[:, 2] += 5.0
    assert loss(pred, target, channel_weight=cw).item() == pytest.approx(
        loss(changed, target, channel_weight=cw).item(), rel=1e-6
    )
    assert loss(pred, target).item() != pytest.approx(loss(changed, target).item(), rel=1e-3)


def test_point_weights():
    target = _gauss_maps()
    pred = target.clone()
    pred[:, 3] += 0.5
    plain = build_loss("heatmap_mse")
    assert build_loss("heatmap_mse", point_weights=[1, 1, 1, 0])(pred, target).item() == 0.0
    doubled = build_loss("heatmap_mse", point_weights=[1, 1, 1, 2])(pred, target)
    assert doubled.item() == pytest.approx(2 * plain(pred, target).item(), rel=1e-6)
    assert plain(pred, target).item() == pytest.approx(0.25 / 4, rel=1e-5)
    with pytest.raises(ValueError, match="point_weights"):
        build_loss("heatmap_mse", point_weights=[1, 1])(pred, target)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        build_loss("heatmap_mse")(torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 16, 16))


# ------------------------------------------------------------------ landmark specifics


def test_adaptive_wing_smaller_for_better_predictions():
    loss = build_loss("adaptive_wing")
    target = _gauss_maps()
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(5))
    values = [loss(target + a * noise, target).item() for a in (1.0, 0.5, 0.2, 0.05, 0.0)]
    assert all(x > y for x, y in zip(values, values[1:])), values
    # a shifted peak is worse than a slightly shifted one
    near = torch.roll(target, shifts=1, dims=3)
    far = torch.roll(target, shifts=4, dims=3)
    assert loss(far, target).item() > loss(near, target).item() > 0


def test_adaptive_wing_formula():
    """Single-pixel maps without the weight map against the paper's formula."""
    loss = build_loss("adaptive_wing", use_weight_map=False)
    alpha, omega, eps, theta = 2.1, 14.0, 1.0, 0.5

    def ref(y: float, yhat: float) -> float:
        d, p = abs(y - yhat), alpha - y
        if d < theta:
            return omega * math.log1p((d / eps) ** p)
        a = omega / (1 + (theta / eps) ** p) * p * (theta / eps) ** (p - 1) / eps
        c = theta * a - omega * math.log1p((theta / eps) ** p)
        return a * d - c

    for y, yhat in [(0.0, 0.3), (0.0, 0.9), (1.0, 0.8), (1.0, -0.2), (0.4, 0.45)]:
        value = loss(torch.tensor([[[[yhat]]]]), torch.tensor([[[[y]]]])).item()
        assert value == pytest.approx(ref(y, yhat), rel=1e-5)
    # continuity at d = theta
    lo = loss(torch.tensor([[[[theta - 1e-4]]]]), torch.zeros(1, 1, 1, 1)).item()
    hi = loss(torch.tensor([[[[theta + 1e-4]]]]), torch.zeros(1, 1, 1, 1)).item()
    assert abs(hi - lo) < 1e-2
    # the weighted loss map multiplies foreground errors by W + 1 = 11
    t = torch.zeros(1, 1, 9, 9)
    t[0, 0, 4, 4] = 1.0
    fg = t.clone()
    fg[0, 0, 4, 3] += 0.3  # next to the peak: inside the dilated foreground
    bg = t.clone()
    bg[0, 0, 0, 0] += 0.3  # far corner: background
    weighted = build_loss("adaptive_wing")
    assert weighted(fg, t).item() == pytest.approx(11 * weighted(bg, t).item(), rel=1e-5)


def test_wing_formula_and_scale():
    loss = build_loss("wing", w=10.0, epsilon=2.0, scale=100.0)
    target = torch.zeros(1, 1, 2)
    small = loss(torch.tensor([[[0.03, 0.0]]]), target).item()  # 3 px
    assert small == pytest.approx(10 * math.log1p(3 / 2), rel=1e-5)
    large = loss(torch.tensor([[[0.0, 0.25]]]), target).item()  # 25 px
    c = 10 - 10 * math.log1p(10 / 2)
    assert large == pytest.approx(25 - c, rel=1e-5)
    at_w = [loss(torch.tensor([[[0.1 + d, 0.0]]]), target).item() for d in (-1e-6, 1e-6)]
    assert abs(at_w[0] - at_w[1]) < 1e-3
    # per-axis scale = input size (W, H) gives pixel errors
    per_axis = build_loss("wing", scale=(200.0, 50.0))
    a = per_axis(torch.tensor([[[0.01, 0.0]]]), target).item()
    b = per_axis(torch.tensor([[[0.0, 0.04]]]), target).item()
    assert a == pytest.approx(b, rel=1e-5)  # both 2 px


def test_smooth_l1_scale():
    loss = build_loss("smooth_l1", beta=1.0, scale=100.0)
    target = torch.zeros(1, 1, 2)
    assert loss(torch.tensor([[[0.05, 0.0]]]), target).item() == pytest.approx(4.5, rel=1e-5)
    assert loss(torch.tensor([[[0.005, 0.0]]]), target).item() == pytest.approx(0.125, rel=1e-5)


def _cross(centre, ofd_len, bpd_len, angle, skew=0.0, shift=0.0):
    """Landmarks of an OFD at ``angle`` and a BPD at ``angle + 90deg + skew`` through points
    ``shift * ofd_len`` along the OFD from its midpoint."""
    c = torch.tensor(centre, dtype=torch.float64)
    u = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
    v = torch.tensor([math.cos(angle + math.pi / 2 + skew), math.sin(angle + math.pi / 2 + skew)],
                     dtype=torch.float64)
    m = c + shift * ofd_len * u
    return torch.stack(
        [c - u * ofd_len / 2, c + u * ofd_len / 2, m - v * bpd_len / 2, m + v * bpd_len / 2]
    )


def test_geometric_prior():
    perfect = torch.stack([
        _cross((100, 80), 120, 90, 0.0),
        _cross((30.5, 200.2), 60, 50, 0.7),
        _cross((0.5, 0.5), 0.8, 0.6, -1.2),  # normalised units, tiny scale
    ])
    assert torch.all(geometric_prior(perfect) < 1e-4)
    skewed = _cross((100, 80), 120, 90, 0.3, skew=math.pi / 4)[None]
    assert geometric_prior(skewed).item() == pytest.approx(math.cos(math.pi / 4), abs=1e-4)
    offset = _cross((100, 80), 120, 90, 0.3, shift=0.25)[None]
    assert geometric_prior(offset).item() == pytest.approx(0.25, abs=1e-4)
    both = _cross((100, 80), 120, 90, 0.3, skew=0.2, shift=0.1)[None]
    less = _cross((100, 80), 120, 90, 0.3, skew=0.1)[None]
    assert geometric_prior(both).item() > geometric_prior(less).item() > 0.05
    # scale and translation invariance
    scaled = offset * 3.0 + 17.0
    assert geometric_prior(scaled).item() == pytest.approx(geometric_prior(offset).item(), rel=1e-6)
    # differentiable, finite even for degenerate (collapsed) predictions
    collapsed = torch.zeros(1, 4, 2, dtype=torch.float64)
    coords = torch.cat([perfect, skewed, collapsed]).requires_grad_(True)
    geometric_prior(coords).sum().backward()
    assert torch.isfinite(coords.grad).all()
    assert coords.grad[3].abs().sum() > 0
    with pytest.raises(ValueError):
        geometric_prior(torch.zeros(2, 3, 2))


# ------------------------------------------------------------------ segmentation specifics


def test_dice_bce_decreases_under_optimisation():
    target = _disc_masks(b=2, size=24)
    logits = torch.zeros_like(target, requires_grad=True)
    loss = build_loss("dice_bce")
    opt = torch.optim.Adam([logits], lr=0.2)
    history = []
    for _ in range(15):
        opt.zero_grad()
        value = loss(logits, target)
        value.backward()
        opt.step()
        history.append(value.item())
    assert history[-1] < 0.3 * history[0]
    assert all(b <= a + 1e-6 for a, b in zip(history, history[1:]))


def test_focal_dice_reduces_to_dice_bce_for_gamma_zero():
    _, target, pred = _case("focal_dice")
    focal = build_loss("focal_dice", gamma=0.0)
    dice_bce = build_loss("dice_bce")(pred, target)
    assert focal(pred, target).item() == pytest.approx(dice_bce.item(), rel=1e-6)
    # gamma > 0 down-weights easy pixels
    assert build_loss("focal_dice", gamma=2.0)(pred, target).item() < focal(pred, target).item()


def test_boundary_band():
    t = torch.zeros(1, 1, 12, 12)
    t[..., 0:6, 3:9] = 1.0  # touches the top image border
    band = boundary_band(t, width=1)
    assert band[0, 0, 3, 2] == 1 and band[0, 0, 3, 3] == 1 and band[0, 0, 5, 5] == 1  # side/bottom
    assert band[0, 0, 2, 5] == 0  # interior
    assert band[0, 0, 0, 5] == 0  # the image border is not a boundary
    assert band[0, 0, 10, 10] == 0  # far background
    assert boundary_band(t, width=2).sum() > band.sum()


def test_boundary_term_weights_contour_errors_up():
    target = _disc_masks(b=1, size=32)
    perfect = (target * 2 - 1) * 8.0
    band = boundary_band(target, 2)
    on_contour = perfect.clone()
    in_interior = perfect.clone()
    idx_contour = torch.nonzero(band[0, 0] > 0)[:10]
    interior = (target[0, 0] > 0) & (band[0, 0] == 0)
    idx_interior = torch.nonzero(interior)[:10]
    assert len(idx_interior) == 10
    for y, x in idx_contour:
        on_contour[0, 0, y, x] *= -1
    for y, x in idx_interior:
        in_interior[0, 0, y, x] *= -1
    boundary = build_loss("boundary_dice_bce")
    plain = build_loss("dice_bce")
    gap_plain = plain(on_contour, target) - plain(in_interior, target)
    gap_boundary = boundary(on_contour, target) - boundary(in_interior, target)
    assert gap_boundary.item() > 0.1 and abs(gap_plain.item()) < 0.02
    # zero boundary weight reduces to dice_bce
    no_boundary = build_loss("boundary_dice_bce", boundary_weight=0.0)
    assert no_boundary(on_contour, target).item() == pytest.approx(
        plain(on_contour, target).item(), rel=1e-6
    )


# ------------------------------------------------------------------ joint heatmap + coordinate loss


def _joint_case(seed: int = 0):
    heat_t = _gauss_maps(seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    coords_t = torch.rand(3, 4, 2, generator=g)
    heat_p = heat_t + 0.2 * torch.randn(heat_t.shape, generator=g)
    coords_p = coords_t + 0.05 * torch.randn(coords_t.shape, generator=g)
    return (heat_p, coords_p), (heat_t, coords_t)


def test_heatmap_coord_is_the_weighted_sum_of_its_terms():
    pred, target = _joint_case()
    sw, cw = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([[1.0, 1.0, 0.0, 1.0]] * 3)
    loss = build_loss("heatmap_coord", heatmap="adaptive_wing", coord="smooth_l1", coord_cfg={"scale": [64, 48]},
                      heatmap_weight=2.0, coord_weight=0.01)
    heat = build_loss("adaptive_wing")(pred[0], target[0], sw, cw)
    coord = build_loss("smooth_l1", scale=[64, 48])(pred[1], target[1], sw, cw)
    assert loss(pred, target, sw, cw).item() == pytest.approx(2.0 * heat.item() + 0.01 * coord.item(), rel=1e-6)
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-7)
    # defaults: heatmap MSE + 0.001 x wing
    default = build_loss("heatmap_coord")
    expected = build_loss("heatmap_mse")(*(t for t in (pred[0], target[0]))) + 1e-3 * build_loss("wing")(pred[1], target[1])
    assert default(pred, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_heatmap_coord_deep_supervision_and_point_weights():
    (heat, coords), target = _joint_case()
    other = heat + 0.1
    loss = build_loss("heatmap_coord")
    both = loss(([heat, other], coords), target)
    mean = 0.5 * (loss((heat, coords), target) + loss((other, coords), target))
    assert both.item() == pytest.approx(mean.item(), rel=1e-6)
    pw = [2.0, 1.0, 0.0, 1.0]
    weighted = build_loss("heatmap_coord", point_weights=pw)((heat, coords), target)
    per_term = build_loss("heatmap_mse", point_weights=pw)(heat, target[0]) + 1e-3 * build_loss("wing", point_weights=pw)(coords, target[1])
    assert weighted.item() == pytest.approx(per_term.item(), rel=1e-6)
    leaves = [heat.clone().requires_grad_(True), coords.clone().requires_grad_(True)]
    loss((leaves[0], leaves[1]), target).backward()
    assert all(leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0 for leaf in leaves)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"heatmap": "wing"}, "heatmap must be one of"),
        ({"coord": "heatmap_mse"}, "coord must be one of"),
        ({"coord_weight": -1.0}, "coord_weight"),
        ({"point_weights": [1, 1, 1, 1], "coord_cfg": {"point_weights": [1, 1, 1, 1]}}, "point_weights once"),
    ],
)
def test_heatmap_coord_bad_options(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_loss("heatmap_coord", **cfg)
    with pytest.raises(TypeError, match="gamma"):
        build_loss("heatmap_coord", gamma=1.0)
