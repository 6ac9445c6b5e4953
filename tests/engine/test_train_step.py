"""Every registered variant can learn: a few optimiser steps on a fixed batch lower its loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.engine.run import make_dataset
from fetalbio.models import arch_options
from fetalbio.tasks import build_task
from fetalbio.variants import VARIANTS, get_variant

REPO = Path(__file__).resolve().parents[2]
TCFG = TrainConfig(input_width=64, input_height=64, device="cpu", batch_size=4)


def _variant_cfg(name: str, tiny_arch) -> VariantConfig:
    """The variant's params.yaml settings (codec, loss, ...) with a tiny architecture."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw = dict(params.get("variants", {}).get(name) or {})
    raw.pop("train", None)
    raw["arch"] = tiny_arch(get_variant(name).model)
    return VariantConfig(**raw)


def test_every_model_has_a_tiny_configuration(tiny_arch) -> None:
    for name, spec in VARIANTS.items():
        opts = arch_options(spec.model)
        arch = tiny_arch(spec.model)
        assert not opts or arch, f"{name}: no tiny arch option applies to model {spec.model!r} ({list(opts)})"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_optimiser_steps_lower_the_loss(name: str, synth_clean, tiny_arch) -> None:
    clean, d = synth_clean
    torch.manual_seed(0)
    task = build_task(name, _variant_cfg(name, tiny_arch), TCFG)
    ds = make_dataset(task, clean.iloc[:4], d, TCFG, train=False)  # the task's own inputs (letterboxed, or head crops)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    model = task.model
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        out = model(batch["image"])
        return task.loss(out, batch)

    with torch.no_grad():
        before = float(loss())
    assert before > 0 and torch.isfinite(torch.tensor(before))
    for _ in range(6):
        opt.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), f"{name}: no gradient reached the weights"
        opt.step()
    with torch.no_grad():
        after = float(loss())
    assert after < before, f"{name}: loss {before:.6g} -> {after:.6g}"

    # decoding a batch in eval mode gives one prediction per image in original pixels
    model.eval()
    with torch.no_grad():
        preds = task.decode(model(batch["image"]), [s.letterbox for s in ds.samples])
    assert len(preds) == len(ds)
    for p in preds:
        assert p.points.shape == (4, 2) and p.uncertainty.shape == (4,)
        assert p.status in ("ok", "failed")
        if task.needs_mask:
            assert p.full_mask() is not None and p.full_mask().shape == (140, 200)
