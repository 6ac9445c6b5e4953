"""Checkpoints: exact round trip, atomic write, and safe loading (no arbitrary unpickling)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from fetalbio.engine.train import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint


def _touch(path: str) -> None:
    """Side effect an unsafe unpickler would run (module level, so it pickles by reference)."""
    Path(path).write_text("pwned")


class Payload:
    """A plain custom class: unpickling it would import and call module code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_round_trip_restores_identical_weights(tmp_path: Path) -> None:
    m = _model()
    m(torch.randn(2, 1, 8, 8))  # materialise the lazy layer, update BN running stats
    cfg = {"variant": "hm_unet", "fold": 2, "arch": {"base_width": 4}, "sizes": [1, 2.5], "flag": True, "none": None}
    p = tmp_path / "deep" / "dir" / "model.pt"
    save_checkpoint(p, m, cfg)
    assert p.is_file() and not list(p.parent.glob(".*tmp*"))
    ck = load_checkpoint(p)
    assert ck["format"] == CHECKPOINT_FORMAT and ck["config"] == cfg
    ref = m.state_dict()
    assert list(ck["state_dict"]) == list(ref)
    for k, v in ref.items():
        assert ck["state_dict"][k].dtype == v.dtype
        assert torch.equal(ck["state_dict"][k], v.cpu()), k
    m2 = _model()
    m2(torch.randn(1, 1, 8, 8))
    m2.load_state_dict(ck["state_dict"])
    x = torch.randn(3, 1, 8, 8)
    m.eval(), m2.eval()
    assert torch.equal(m(x), m2(x))


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    save_checkpoint(p, nn.Linear(2, 2), {"v": 1})
    save_checkpoint(p, nn.Linear(3, 1), {"v": 2})
    ck = load_checkpoint(p)
    assert ck["config"] == {"v": 2} and ck["state_dict"]["weight"].shape == (1, 3)


def test_refuses_pickled_custom_object_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "side_effect.txt"
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "config": {}, "x": Payload(str(marker))}, p)
    with pytest.raises(ValueError) as exc:
        load_checkpoint(p)
    assert str(p) in str(exc.value)
    assert not marker.exists(), "load_checkpoint executed pickled code"


def test_refuses_pickled_arbitrary_class_instance(tmp_path: Path) -> None:
    p = tmp_path / "obj.pt"
    torch.save(nn.Linear(2, 2), p)  # a whole module object, not a state_dict
    with pytest.raises(ValueError, match=re.escape(str(p))):
        load_checkpoint(p)


@pytest.mark.parametrize(
    "payload",
    [
        {"config": {}},  # no state_dict
        {"state_dict": {"w": torch.zeros(1)}},  # no config
        {"state_dict": [torch.zeros(1)], "config": {}},  # state_dict not a dict
        [torch.zeros(1)],  # not a dict at all
    ],
)
def test_refuses_wrong_structure(tmp_path: Path, payload) -> None:
    p = tmp_path / "wrong.pt"
    torch.save(payload, p)
    with pytest.raises(ValueError, match="not a fetalbio checkpoint") as exc:
        load_checkpoint(p)
    assert str(p) in str(exc.value)


def test_refuses_garbage_file(tmp_path: Path) -> None:
    p = tmp_path / "garbage.pt"
    p.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError) as exc:
        load_checkpoint(p)
    assert str(p) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(p)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path)  # a directory is not a checkpoint either
