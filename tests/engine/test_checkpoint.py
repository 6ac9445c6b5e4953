"""A fold's networks are a one-stage model file: exact round trip, atomic write, safe loading
(no arbitrary unpickling), old and foreign files refused with the file named."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.model_file import StageWeights, concatenate_stages, fold_payload, load_model, load_stage, read_model_file, save_model
from fetalbio.tasks import build_task


def _touch(path: str) -> None:
    """Side effect an unsafe unpickler would run (module level, so it pickles by reference)."""
    Path(path).write_text("pwned")


class Payload:
    """A plain custom class: unpickling it would import and call module code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


TCFG = TrainConfig(input_width=64, input_height=32)


def _stage(variant: str = "hm_unet", n: int = 1, role: str = "coarse", cal: dict | None = None) -> StageWeights:
    vcfg = VariantConfig(arch={"base_width": 4, "depth": 2})
    sds = []
    for i in range(n):
        torch.manual_seed(i)
        task = build_task(variant, vcfg, TCFG)
        task.model.train()(torch.randn(2, 1, 32, 64))  # update BN running stats
        sds.append(task.model.state_dict())
    return StageWeights(role, variant, vcfg, TCFG, sds, cal if cal is not None else ({} if variant == "hm_unet" else {"edge_offset_px": 0.5}))


def test_round_trip_restores_identical_weights_and_networks(tmp_path: Path) -> None:
    st = _stage(variant="seg_unet", n=2)
    p = tmp_path / "deep" / "dir" / "model.pt"
    save_model(p, fold_payload(st, {"fold": 2, "member_seeds": [42, 7]}))
    assert p.is_file() and not list(p.parent.glob(".*tmp*"))
    raw = read_model_file(p)
    assert raw["provenance"] == {"fold": 2, "member_seeds": [42, 7]} and raw["method"] == "seg_unet"
    stage = raw["stages"][0]
    assert stage["role"] == "coarse" and stage["calibration"] == {"edge_offset_px": 0.5}
    assert stage["variant_cfg"] == dataclasses.asdict(st.vcfg) and stage["train_cfg"] == dataclasses.asdict(TCFG)
    for got, ref in zip(stage["state_dicts"], st.state_dicts, strict=True):
        assert list(got) == list(ref)
        for k, v in ref.items():
            assert got[k].dtype == v.dtype and torch.equal(got[k], v.cpu()), k
    # rebuilt by the same loader as an exported model: both members, identical outputs
    loaded = load_stage(p, stage, "cpu")
    x = torch.randn(3, 1, 32, 64)
    for task, sd in zip(loaded.tasks, st.state_dicts):
        ref = build_task("seg_unet", st.vcfg, TCFG)
        ref.model.load_state_dict(sd)
        ref.model.eval()
        assert torch.equal(task.model(x), ref.model(x))
    # a first stage's fold file measures like an exported model
    assert len(load_model(p).tasks) == 2


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    save_model(p, fold_payload(_stage(), {"fold": 0}))
    save_model(p, fold_payload(_stage(variant="seg_unet"), {"fold": 1}))
    raw = read_model_file(p)
    assert raw["provenance"]["fold"] == 1 and raw["stages"][0]["variant"] == "seg_unet"


def test_a_refinement_fold_file_loads_as_a_stage_but_cannot_measure(tmp_path: Path) -> None:
    vcfg = VariantConfig(arch={"base_width": 4, "depth": 2})
    task = build_task("refine", vcfg, TCFG)
    p = tmp_path / "model.pt"
    save_model(p, fold_payload(StageWeights("refine", "refine", vcfg, TCFG, [task.model.state_dict()], {}), {"fold": 3}))
    raw = read_model_file(p)
    assert [s["role"] for s in raw["stages"]] == ["refine"]
    assert len(load_stage(p, raw["stages"][0], "cpu").tasks) == 1
    with pytest.raises(ValueError, match=r"later stage alone.*cannot measure") as exc:
        load_model(p)
    assert str(p) in str(exc.value)


def test_folds_concatenate_and_calibration_averages(tmp_path: Path) -> None:
    files = []
    for k, (n, off, cnt) in enumerate([(2, 0.25, 10), (1, 0.75, 30)]):
        p = tmp_path / f"fold{k}" / "model.pt"
        save_model(p, fold_payload(_stage(variant="seg_unet", n=n, cal={"edge_offset_px": off, "edge_offset_n": cnt}), {"fold": k}))
        files.append((p, read_model_file(p)))
    sds, cal = concatenate_stages(files)
    assert len(sds) == 3  # every member of every fold, in order
    expected = [sd for _, raw in files for sd in raw["stages"][0]["state_dicts"]]
    assert all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(sds, expected))
    assert cal == {"edge_offset_px": 0.5, "edge_offset_n": 40}  # each fold counts once, whatever its member count
    other = tmp_path / "other.pt"
    save_model(other, fold_payload(_stage(), {"fold": 9}))
    with pytest.raises(ValueError, match=r"holds variant 'hm_unet'"):
        concatenate_stages([*files, (other, read_model_file(other))])


def test_an_old_fold_checkpoint_is_refused_with_what_to_do(tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    torch.save({"format": "fetalbio-checkpoint", "state_dict": {"w": torch.zeros(1)}, "config": {}}, p)
    with pytest.raises(ValueError, match=r"fold checkpoint of an older fetalbio.*retrain") as exc:
        read_model_file(p)
    assert str(p) in str(exc.value)


def test_refuses_pickled_custom_object_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "side_effect.txt"
    p = tmp_path / "evil.pt"
    torch.save({"format": "fetalbio-model", "stages": [], "x": Payload(str(marker))}, p)
    with pytest.raises(ValueError) as exc:
        read_model_file(p)
    assert str(p) in str(exc.value)
    assert not marker.exists(), "read_model_file executed pickled code"


def test_refuses_pickled_arbitrary_class_instance(tmp_path: Path) -> None:
    p = tmp_path / "obj.pt"
    torch.save(torch.nn.Linear(2, 2), p)  # a whole module object, not plain data
    with pytest.raises(ValueError, match=re.escape(str(p))):
        read_model_file(p)


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"state_dict": {"w": torch.zeros(1)}, "config": {}}, "not a fetalbio model file"),
        ([torch.zeros(1)], "not a fetalbio model file"),
        ({"format": "fetalbio-model", "format_version": 2, "stages": []}, "no stages"),
        ({"format": "fetalbio-model", "format_version": 2, "stages": [{"role": "refine"}, {"role": "coarse"}]}, r"must be \[coarse\]"),
        ({"format": "fetalbio-model", "format_version": 99, "stages": []}, "version 99"),
    ],
)
def test_refuses_wrong_structure(tmp_path: Path, payload, message: str) -> None:
    p = tmp_path / "wrong.pt"
    torch.save(payload, p)
    with pytest.raises(ValueError, match=message) as exc:
        read_model_file(p)
    assert str(p) in str(exc.value)


def test_refuses_garbage_file(tmp_path: Path) -> None:
    p = tmp_path / "garbage.pt"
    p.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError) as exc:
        read_model_file(p)
    assert str(p) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_model_file(p)
    with pytest.raises(FileNotFoundError):
        read_model_file(tmp_path)  # a directory is not a model file either
