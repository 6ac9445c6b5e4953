"""Contract tests for every registered architecture (tiny inputs, CPU)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from fetalbio.models import MODELS, arch_options, build_model, count_parameters

torch.set_num_threads(2)

ALL = MODELS.names()
SIZE = 64
# out_channels: 4 landmark heatmaps / points, 1 for segmentation-type use
CASES = [(name, out) for name in ALL for out in (4, 1)]


def _final(y: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return y[-1] if isinstance(y, list) else y


def _parts(model: nn.Module, y: torch.Tensor | list[torch.Tensor]) -> list[tuple[torch.Tensor, str]]:
    """The final output(s) with their kind: a hybrid network's (heatmaps, coords), else one."""
    if model.output_kind == "hybrid":
        assert isinstance(y, list) and len(y) >= 2
        return [(y[-2], "dense"), (y[-1], "vector")]
    return [(_final(y), model.output_kind)]


def _expected_shape(model: nn.Module, batch: int, out: int, h: int, w: int, kind: str | None = None) -> tuple[int, ...]:
    kind = kind or model.output_kind
    if kind == "vector":
        return (batch, out, 2)
    assert kind == "dense"
    s = model.output_stride
    return (batch, out, h // s, w // s)


def test_expected_models_are_registered() -> None:
    expected = {"unet", "attention_unet", "deeplabv3plus", "hourglass", "hrnet_lite", "resnet_deconv", "coord_regression",
                "multihead_unet", "hybrid_hourglass", "attention_fpn", "vit_landmark", "alexnet_regression", "efficientnet_regression"}
    assert expected <= set(ALL)


@pytest.mark.parametrize(("name", "out"), CASES)
def test_contract_shapes_and_gradients(name: str, out: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1, out)
    assert model.output_kind in ("dense", "vector", "hybrid")
    assert isinstance(model.output_stride, int) and model.output_stride >= 1
    assert 32 % model.input_multiple == 0, "every model must accept multiples of 32"

    x = torch.randn(2, 1, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        y = model(x)
    if model.output_kind == "hybrid":
        assert isinstance(y, list) and len(y) == 2
    else:
        assert isinstance(y, torch.Tensor)
    for part, kind in _parts(model, y):
        assert part.shape == _expected_shape(model, 2, out, SIZE, SIZE, kind)
        assert torch.isfinite(part).all()
        if kind == "vector":
            assert ((part >= 0) & (part <= 1)).all()

    model.train()
    parts = _parts(model, model(x))
    for part, kind in parts:
        assert part.shape == _expected_shape(model, 2, out, SIZE, SIZE, kind)
    sum(part.square().mean() for part, _ in parts).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", ALL)
def test_non_square_input(name: str) -> None:
    model = build_model(name, 1, 4).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, 64, 96))
    for part, kind in _parts(model, y):
        assert part.shape == _expected_shape(model, 2, 4, 64, 96, kind)


@pytest.mark.parametrize("name", [n for n in ALL if build_model(n, 1, 1).output_kind in ("dense", "hybrid")])
def test_initial_dense_outputs_near_zero(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1, 4).train()
    y = _parts(model, model(torch.randn(2, 1, SIZE, SIZE)))[0][0]
    assert y.abs().max() < 0.5, f"{name}: initial outputs should be near 0, max |y| = {y.abs().max():.3f}"


@pytest.mark.parametrize("name", [n for n in ALL if build_model(n, 1, 1).output_kind in ("vector", "hybrid")])
def test_coordinate_outputs_start_at_centre(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1, 4).train()
    y = _parts(model, model(torch.randn(2, 1, SIZE, SIZE)))[-1][0]
    assert torch.allclose(y, torch.full_like(y, 0.5), atol=0.05)


def test_hourglass_deep_supervision() -> None:
    model = build_model("hourglass", 1, 4, stacks=2)
    x = torch.randn(2, 1, SIZE, SIZE)
    model.train()
    ys = model(x)
    assert isinstance(ys, list) and len(ys) == 2
    assert all(y.shape == (2, 4, SIZE // 4, SIZE // 4) for y in ys)
    sum(y.square().mean() for y in ys).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4, SIZE // 4, SIZE // 4)


def test_single_stack_hourglass_returns_tensor_in_training() -> None:
    y = build_model("hourglass", 1, 4).train()(torch.randn(2, 1, SIZE, SIZE))
    assert isinstance(y, torch.Tensor)


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("unet", {"bilinear": True, "depth": 3, "base_width": 8}),
        ("attention_unet", {"bilinear": True}),
        ("deeplabv3plus", {"encoder_stride": 8}),
        ("deeplabv3plus", {"block": "bottleneck", "layers": [1, 1, 1, 1], "base_width": 8}),
        ("resnet_deconv", {"layers": [1, 1, 1, 1], "deconv_widths": [32, 32, 32]}),
        ("coord_regression", {"hidden": 0, "dropout": 0.1}),
        ("hrnet_lite", {"widths": [8, 16, 32], "modules": [1, 1, 1], "blocks": 1}),
        ("hourglass", {"depth": 2, "width": 16, "blocks": 2}),
        ("multihead_unet", {"base_width": 4, "depth": 3, "bilinear": True, "head_points": 1}),
        ("hybrid_hourglass", {"stacks": 2, "depth": 2, "width": 16, "reduce_convs": 0, "pool": [2, 2], "hidden": 0, "dropout": 0.1}),
        ("attention_fpn", {"layers": [1, 1, 1, 1], "base_width": 8, "block": "bottleneck", "fpn_width": 16, "levels": 2, "reduction": 2}),
        ("vit_landmark", {"patch_size": 16, "embed_dim": 24, "depth": 1, "heads": 3, "mlp_ratio": 1.0, "dropout": 0.1, "pos_grid": [2, 2]}),
        ("alexnet_regression", {"conv_widths": [4, 8, 8, 8, 8], "batch_norm": False, "pool": 1, "hidden": 8, "dropout": 0.0}),
        ("efficientnet_regression", {"width_mult": 0.5, "depth_mult": 0.3, "se_ratio": 0.0, "drop_path": 0.2, "pool": [2, 2], "hidden": 0}),
    ],
)
def test_arch_options(name: str, arch: dict) -> None:
    model = build_model(name, 1, 3, **arch).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, SIZE, SIZE))
    for part, kind in _parts(model, y):
        assert part.shape == _expected_shape(model, 2, 3, SIZE, SIZE, kind)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(KeyError) as info:
        build_model("no_such_net", 1, 4)
    msg = str(info.value)
    assert "no_such_net" in msg
    assert all(name in msg for name in ALL)


@pytest.mark.parametrize("name", ALL)
def test_unknown_arch_kwarg(name: str) -> None:
    with pytest.raises(TypeError, match=rf"{name}.*widht"):
        build_model(name, 1, 4, widht=3)


def test_arch_options_have_defaults() -> None:
    for name in ALL:
        for key, default in arch_options(name).items():
            assert default is not inspect.Parameter.empty, f"{name}.{key} has no default"


@pytest.mark.parametrize("name", ALL)
def test_bad_input_size_raises(name: str) -> None:
    model = build_model(name, 1, 4).eval()
    with pytest.raises(ValueError, match="multiples of"):
        model(torch.randn(2, 1, 66, 64))
    with pytest.raises(ValueError, match="input channel"):
        model(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.randn(1, 64, 64))


def test_parameter_counts_are_small() -> None:
    counts = {name: count_parameters(build_model(name, 1, 4)) for name in ALL}
    for name, n in counts.items():
        print(f"{name:18s} {n:>10,d} parameters")
    too_big = {name: n for name, n in counts.items() if n >= 5_000_000}
    assert not too_big, too_big


def test_unet_can_learn() -> None:
    torch.manual_seed(0)
    model = build_model("unet", 1, 2, base_width=8, depth=3).train()
    x = torch.randn(2, 1, 32, 32)
    target = torch.rand(2, 2, 32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
