"""The write-ups' networks (issue 22): training step, checkpoint round trip, structure, bad options.

The shape / gradient / input-size contract of every registered model is in ``test_models.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.model_file import StageWeights, fold_payload, load_stage, read_model_file, save_model
from fetalbio.models import build_model
from fetalbio.tasks import build_task

torch.set_num_threads(1)

# small but non-trivial configurations (dropout off, so that one step is comparable)
TINY = {
    "multihead_unet": {"base_width": 4, "depth": 2},
    "hybrid_hourglass": {"width": 8, "depth": 2, "hidden": 16},
    "attention_fpn": {"layers": [1, 1, 1, 1], "base_width": 4, "fpn_width": 8},
    "vit_landmark": {"patch_size": 8, "embed_dim": 16, "depth": 2, "heads": 2, "pos_grid": [4, 4]},
    "alexnet_regression": {"conv_widths": [4, 8, 8, 8, 8], "hidden": 16, "dropout": 0.0},
    "efficientnet_regression": {"width_mult": 0.1, "depth_mult": 0.25, "hidden": 16, "dropout": 0.0},
}
NEW = sorted(TINY)
SIZE = 32
# the variant that trains each network (for the model-file round trip)
VARIANT_OF = {"multihead_unet": "multihead_unet", "hybrid_hourglass": "hybrid_hourglass", "attention_fpn": "attention_fpn",
              "vit_landmark": "vit_landmark", "alexnet_regression": "coord_alexnet", "efficientnet_regression": "coord_efficientnet"}


def _parts(model: nn.Module, y) -> list[torch.Tensor]:
    if model.output_kind == "hybrid":
        return [*y[:-1], y[-1]]
    return y if isinstance(y, list) else [y]


def _targets(model: nn.Module, y) -> list[torch.Tensor]:
    """A fixed random target shaped like each output (heatmap-like maps, coordinates in [0.2, 0.8])."""
    g = torch.Generator().manual_seed(1)
    out = []
    for part in _parts(model, y):
        if part.ndim == 3:
            out.append(0.2 + 0.6 * torch.rand(part.shape, generator=g))
        else:
            out.append(torch.rand(part.shape, generator=g) ** 4)
    return out


def _loss(model: nn.Module, y, targets: list[torch.Tensor]) -> torch.Tensor:
    return sum(nn.functional.mse_loss(p, t) for p, t in zip(_parts(model, y), targets))


@pytest.mark.parametrize("name", NEW)
def test_one_training_step_lowers_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1, 4, **TINY[name]).train()
    x = torch.randn(4, 1, SIZE, SIZE)
    targets = _targets(model, model(x))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = _loss(model, model(x), targets)
    opt.zero_grad()
    before.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    with torch.no_grad():
        after = _loss(model, model(x), targets)
    b, a = before.item(), after.item()
    assert a < b, f"{name}: {b:.6g} -> {a:.6g}"


@pytest.mark.parametrize("name", NEW)
def test_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    """Saved as a fold's model file and rebuilt by the model file's stage loader: same outputs."""
    variant = VARIANT_OF[name]
    vcfg, tcfg = VariantConfig(arch=TINY[name]), TrainConfig(input_width=SIZE, input_height=SIZE)
    torch.manual_seed(0)
    model = build_task(variant, vcfg, tcfg).model
    model.train()
    model(torch.randn(4, 1, SIZE, SIZE))  # move the BatchNorm running statistics off their start
    path = tmp_path / "model.pt"
    save_model(path, fold_payload(StageWeights("coarse", variant, vcfg, tcfg, [model.state_dict()], {}), {"fold": 0}))
    torch.manual_seed(1)
    other = load_stage(path, read_model_file(path)["stages"][0], "cpu").tasks[0].model
    x = torch.randn(2, 1, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        for a, b in zip(_parts(model, model(x)), _parts(other, other(x))):
            assert torch.equal(a, b)


@pytest.mark.parametrize("points", [4, 6])
def test_vit_landmark_tokens_match_the_points(points: int) -> None:
    torch.manual_seed(0)
    model = build_model("vit_landmark", 1, points, patch_size=8, embed_dim=16, depth=1, heads=2).eval()
    assert model.landmark_tokens.shape == (1, points, 16)
    for h, w in ((96, 128), (32, 64)):  # the learned grid as it is, and resized
        x = torch.randn(3, 1, h, w)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (3, points, 2)
        # point k is read from landmark token k
        with torch.no_grad():
            saved = model.landmark_tokens.clone()
            model.landmark_tokens[0, 1] = torch.randn(16)
            y2 = model(x)
            model.landmark_tokens.copy_(saved)
        assert not torch.equal(y2[:, 1], y[:, 1])


def test_multihead_unet_has_one_decoder_per_pair() -> None:
    torch.manual_seed(0)
    model = build_model("multihead_unet", 1, 4, base_width=4, depth=2).train()
    assert model.head_channels == (2, 2) and len(model.decoders) == 2
    assert build_model("multihead_unet", 1, 5, base_width=4, depth=2).head_channels == (2, 2, 1)
    y = model(torch.randn(2, 1, SIZE, SIZE))
    y[:, :2].square().mean().backward()  # the OFD channels only
    def moved(module: nn.Module) -> bool:
        return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())

    assert not moved(model.decoders[1]) and not moved(model.heads[1])
    assert moved(model.decoders[0]) and moved(model.heads[0]) and moved(model.downs)


def test_hybrid_hourglass_outputs() -> None:
    torch.manual_seed(0)
    model = build_model("hybrid_hourglass", 1, 4, stacks=2, width=8, depth=2)
    x = torch.randn(2, 1, SIZE, SIZE)
    model.train()
    ys = model(x)
    assert len(ys) == 3 and [tuple(y.shape) for y in ys] == [(2, 4, 8, 8), (2, 4, 8, 8), (2, 4, 2)]
    model.eval()
    with torch.no_grad():
        ys = model(x)
    assert isinstance(ys, list) and [tuple(y.shape) for y in ys] == [(2, 4, 8, 8), (2, 4, 2)]


def test_attention_fpn_level_weights_are_a_softmax() -> None:
    torch.manual_seed(0)
    model = build_model("attention_fpn", 1, 4, **TINY["attention_fpn"]).eval()
    with torch.no_grad():
        levels = model.pyramid(torch.randn(2, 1, 64, 96))
        assert [tuple(p.shape[-2:]) for p in levels] == [(16, 24), (8, 12), (4, 6), (2, 3)]
        w = model.fusion.level_weights([nn.functional.interpolate(p, size=(16, 24)) for p in levels])
    assert w.shape == (2, 4, 16, 24)
    assert torch.allclose(w.sum(dim=1), torch.ones(2, 16, 24), atol=1e-6)


def test_efficientnet_regression_scales_the_b0_table() -> None:
    b0 = build_model("efficientnet_regression", 1, 4, width_mult=1.0, depth_mult=1.0)
    assert len(b0.blocks) == 16 and b0.top[0].out_channels == 1280
    small = build_model("efficientnet_regression", 1, 4)
    assert len(small.blocks) == 10 and small.top[0].out_channels == 320


def test_alexnet_regression_reaches_stride_32() -> None:
    model = build_model("alexnet_regression", 1, 4).eval()
    with torch.no_grad():
        assert model.features(torch.randn(1, 1, 96, 128)).shape[-2:] == (3, 4)


@pytest.mark.parametrize(
    ("name", "arch", "option"),
    [
        ("vit_landmark", {"embed_dim": 30, "heads": 4}, "embed_dim"),
        ("vit_landmark", {"patch_size": 12}, "patch_size"),
        ("vit_landmark", {"heads": 0}, "heads"),
        ("vit_landmark", {"depth": 0}, "depth"),
        ("vit_landmark", {"pos_grid": [0, 3]}, "pos_grid"),
        ("multihead_unet", {"head_points": 0}, "head_points"),
        ("multihead_unet", {"depth": 0}, "depth"),
        ("hybrid_hourglass", {"reduce_convs": 5}, "reduce_convs"),
        ("hybrid_hourglass", {"pool": [3]}, "pool"),
        ("attention_fpn", {"levels": 5}, "levels"),
        ("attention_fpn", {"fpn_width": 0}, "fpn_width"),
        ("alexnet_regression", {"conv_widths": [8, 8, 8]}, "conv_widths"),
        ("alexnet_regression", {"dropout": 1.0}, "dropout"),
        ("efficientnet_regression", {"width_mult": 0}, "width_mult"),
        ("efficientnet_regression", {"drop_path": 1.0}, "drop_path"),
    ],
)
def test_bad_arch_values_name_the_option(name: str, arch: dict, option: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: arch option '{option}'"):
        build_model(name, 1, 4, **arch)
