"""Resume after a kill, and bit-for-bit reproducibility of a micro training (CPU).

A "kill" is simulated by the per-epoch ``log`` callback raising right after an epoch's resume
file was written (``fit`` writes it before it logs). A rerun with the same ``resume_dir`` must
continue after that epoch and end with exactly the weights, ``oof.csv`` and metrics of an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fold_files import fold_weights

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.folds import assign_folds
from fetalbio.engine import run as run_mod
from fetalbio.engine import train as train_mod
from fetalbio.engine.run import default_resume_dir, inner_split, resume_key, train_fold
from fetalbio.engine.train import RESUME_FILE
from fetalbio.io import read_oof_folds, write_json
from fetalbio.reporting.evaluate import evaluate, per_image_table

HELD = 1
SEED = 5
EPOCHS = 3
TCFG = TrainConfig(input_width=64, input_height=64, batch_size=4, epochs=EPOCHS, warmup_epochs=1, patience=EPOCHS,
                   device="cpu", cpu_threads=1, progress=False, amp=False)
# landmark heatmaps, a network with dropout (global torch RNG), masks moving with the image
CASES = {"hm_unet": "unet", "coord_regression": "coord_regression", "seg_unet": "unet"}


class Killed(RuntimeError):
    """Stands for SIGKILL after an epoch's resume file was written."""


class Foreign:
    """A plain class: ``weights_only=True`` refuses to unpickle it."""


def _vcfg(variant: str, tiny_arch, **arch: Any) -> VariantConfig:
    a = tiny_arch(CASES[variant])
    if variant == "coord_regression":
        a = {**a, "dropout": 0.3}
    return VariantConfig(arch={**a, **arch})


def _train(ctx: dict[str, Any], variant: str, out: Path, resume_dir: Path | None, *, kill_after: int | None = None,
           vcfg: VariantConfig | None = None, tcfg: TrainConfig = TCFG) -> dict[str, Any]:
    """train_fold into ``out`` (laid out as models/<variant>/fold<k>). Returns the summary, the
    0-based epochs actually trained and what ``fit`` said; with ``kill_after=n`` the run dies
    after epoch n's resume file is written (summary None)."""
    trained: list[int] = []
    said: list[str] = []
    real_fit, real_epoch_seed = train_mod.fit, train_mod.epoch_seed

    def epoch_seed(seed: int, epoch: int) -> int:
        trained.append(epoch)
        return real_epoch_seed(seed, epoch)

    def fit(*args, **kwargs):
        log = args[7]

        def dying_log(epoch: int, row: dict[str, float]) -> None:
            log(epoch, row)
            if kill_after is not None and epoch + 1 == kill_after:
                raise Killed(f"killed after epoch {epoch + 1}")

        return real_fit(*args[:7], dying_log, *args[8:], say=said.append, **kwargs)

    summary = None
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ctx["base"])  # dvclive looks for a DVC/Git repo from the working directory
        mp.setattr(train_mod, "epoch_seed", epoch_seed)
        mp.setattr(run_mod, "fit", fit)
        args = (ctx["clean"], ctx["folds"], ctx["table_dir"], variant, vcfg or ctx["vcfg"][variant], tcfg, HELD, SEED, out)
        if kill_after is None:
            summary = train_fold(*args, resume_dir=resume_dir)
        else:
            with pytest.raises(Killed):
                train_fold(*args, resume_dir=resume_dir)
    return {"dir": out, "summary": summary, "trained": trained, "said": said}


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return fold_weights(d / "model.pt")


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different[:5]}"


def _metrics(ctx: dict[str, Any], variant_dir: Path, out: Path) -> bytes:
    """The evaluate step (as the stage runs it) on one variant folder; the metrics JSON's bytes."""
    family = "segmentation" if variant_dir.name.startswith("seg") else "landmark"
    pi = per_image_table(ctx["clean"], read_oof_folds(variant_dir), ctx["table_dir"], variant_dir)
    write_json(out, evaluate(pi, family, [2.0, 4.0]).summary)
    return out.read_bytes()


@pytest.fixture(scope="module")
def ctx(synth_clean, tiny_arch, tmp_path_factory) -> dict[str, Any]:
    clean, d = synth_clean
    return {"clean": clean, "folds": assign_folds(clean, k=3, size_bins=1, seed=0), "table_dir": d,
            "base": tmp_path_factory.mktemp("resume"), "vcfg": {v: _vcfg(v, tiny_arch) for v in CASES}, "cache": {}}


def _reference(ctx: dict[str, Any], variant: str) -> dict[str, Any]:
    """The uninterrupted run of ``variant`` (trained once per module), with a resume dir."""
    if variant not in ctx["cache"]:
        base: Path = ctx["base"]
        ctx["cache"][variant] = _train(ctx, variant, base / "ref" / variant / f"fold{HELD}", base / "resume_ref" / variant)
    return ctx["cache"][variant]


@pytest.mark.parametrize("variant", list(CASES))
def test_killed_training_resumes_after_the_last_epoch_and_ends_bit_identical(ctx, variant: str) -> None:
    ref = _reference(ctx, variant)
    assert ref["trained"] == list(range(EPOCHS)) and ref["summary"]["resumed_from_epoch"] == 0
    base: Path = ctx["base"]
    resume_dir = base / "resume_kill" / variant

    killed = _train(ctx, variant, base / "killed" / variant / f"fold{HELD}", resume_dir, kill_after=1)
    assert killed["trained"] == [0]
    state = torch.load(resume_dir / RESUME_FILE, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert {"model", "optimizer", "scheduler", "scaler", "best_state", "best_score", "best_epoch", "stale", "n_seen", "elapsed", "key"} <= set(state)
    assert not list(resume_dir.glob(".*.tmp")), "temporary resume file left behind"

    # DVC deletes the stage's outs before it reruns it: the rerun writes into a fresh folder
    out = base / "resumed" / variant / f"fold{HELD}"
    resumed = _train(ctx, variant, out, resume_dir)
    assert resumed["trained"] == list(range(1, EPOCHS)), "the rerun must train epochs 2.. only"
    assert resumed["summary"]["resumed_from_epoch"] == 1
    assert any("continuing" in s and "after epoch 1/" in s for s in resumed["said"])
    assert not (resume_dir / RESUME_FILE).exists() and not resume_dir.exists()

    _assert_same_weights(ref["dir"], out)
    assert (out / "oof.csv").read_bytes() == (ref["dir"] / "oof.csv").read_bytes()
    # the per-epoch log is the uninterrupted run's (the replayed epoch included)
    assert json.loads((out / "dvclive" / "metrics.json").read_text()) == json.loads((ref["dir"] / "dvclive" / "metrics.json").read_text())
    timing = ("train_seconds", "train_images_per_s", "resumed_from_epoch")
    assert {k: v for k, v in resumed["summary"].items() if k not in timing} == {k: v for k, v in ref["summary"].items() if k not in timing}
    if variant.startswith("seg"):
        masks = sorted(p.name for p in (out / "masks").glob("*.png"))
        assert masks and all((out / "masks" / m).read_bytes() == (ref["dir"] / "masks" / m).read_bytes() for m in masks)


def test_kill_after_the_last_epoch_trains_nothing_more(ctx) -> None:
    ref = _reference(ctx, "hm_unet")
    base: Path = ctx["base"]
    resume_dir = base / "resume_last"
    _train(ctx, "hm_unet", base / "killed_last" / "hm_unet" / f"fold{HELD}", resume_dir, kill_after=EPOCHS)
    assert (resume_dir / RESUME_FILE).is_file()
    out = base / "resumed_last" / "hm_unet" / f"fold{HELD}"
    resumed = _train(ctx, "hm_unet", out, resume_dir)
    assert resumed["trained"] == [] and resumed["summary"]["resumed_from_epoch"] == EPOCHS
    assert resumed["summary"]["epochs_run"] == EPOCHS and resumed["summary"]["best_epoch"] == ref["summary"]["best_epoch"]
    _assert_same_weights(ref["dir"], out)
    assert (out / "oof.csv").read_bytes() == (ref["dir"] / "oof.csv").read_bytes()
    assert not resume_dir.exists()


def test_a_resume_file_of_another_training_is_not_used(ctx, tiny_arch) -> None:
    ref = _reference(ctx, "hm_unet")
    base: Path = ctx["base"]
    resume_dir = base / "resume_foreign"
    # interrupted with other params: another learning rate, another architecture
    other_lr = dataclasses.replace(TCFG, lr=TCFG.lr / 2)
    _train(ctx, "hm_unet", base / "foreign_a" / "hm_unet" / f"fold{HELD}", resume_dir, kill_after=1, tcfg=other_lr)
    foreign = (resume_dir / RESUME_FILE).read_bytes()
    out = base / "foreign_b" / "hm_unet" / f"fold{HELD}"
    run = _train(ctx, "hm_unet", out, resume_dir, kill_after=1, vcfg=_vcfg("hm_unet", tiny_arch, bilinear=True))
    assert run["trained"] == [0], "a foreign resume file must not skip epochs"
    assert any("ignoring" in s and "another training" in s for s in run["said"])
    assert (resume_dir / RESUME_FILE).read_bytes() != foreign, "the foreign file is overwritten"

    # the real training (ref's params) ignores the file of the other architecture too, trains
    # every epoch and ends exactly like the uninterrupted run
    out = base / "foreign_c" / "hm_unet" / f"fold{HELD}"
    run = _train(ctx, "hm_unet", out, resume_dir)
    assert run["trained"] == list(range(EPOCHS)) and run["summary"]["resumed_from_epoch"] == 0
    assert any("ignoring" in s for s in run["said"])
    _assert_same_weights(ref["dir"], out)
    assert not resume_dir.exists()


def test_an_unreadable_resume_file_is_ignored(tmp_path: Path) -> None:
    say: list[str] = []
    (tmp_path / RESUME_FILE).write_bytes(b"PK\x03\x04 truncated by a crash")
    assert train_mod._load_resume(tmp_path / RESUME_FILE, "k", say.append) is None
    assert say and "unreadable" in say[0]
    # an object that weights_only refuses to unpickle
    torch.save({"format": train_mod.RESUME_FORMAT, "key": "k", "x": Foreign()}, tmp_path / RESUME_FILE)
    say.clear()
    assert train_mod._load_resume(tmp_path / RESUME_FILE, "k", say.append) is None and "unreadable" in say[0]
    assert train_mod._load_resume(tmp_path / "missing.pt", "k", say.append) is None


def test_resume_file_is_removed_after_success(ctx) -> None:
    ref = _reference(ctx, "hm_unet")
    resume_dir = ctx["base"] / "resume_ref" / "hm_unet"
    assert ref["summary"] is not None and not (resume_dir / RESUME_FILE).exists() and not resume_dir.exists()


def test_resume_key_identifies_the_training(ctx, tiny_arch) -> None:
    clean, folds = ctx["clean"], ctx["folds"]
    table = clean.merge(folds[["image_name", "fold"]], on="image_name")
    tr, va = inner_split(table[table["fold"] != HELD], TCFG.inner_val_frac, SEED + HELD)
    vcfg = ctx["vcfg"]["hm_unet"]
    key = resume_key("hm_unet", vcfg, TCFG, SEED, HELD, tr, va)
    assert key == resume_key("hm_unet", vcfg, dataclasses.replace(TCFG, progress=True), SEED, HELD, tr.copy(), va.copy())
    moved = tr.copy()
    moved.loc[0, "ofd_1_x"] += 0.5
    repainted = tr.copy()
    repainted.loc[0, "image_sha256"] = "0" * 64  # same name and labels, other pixels
    others = [
        resume_key("hm_unet_x", vcfg, TCFG, SEED, HELD, tr, va),
        resume_key("hm_unet", _vcfg("hm_unet", tiny_arch, bilinear=True), TCFG, SEED, HELD, tr, va),
        resume_key("hm_unet", vcfg, dataclasses.replace(TCFG, epochs=EPOCHS + 1), SEED, HELD, tr, va),
        resume_key("hm_unet", vcfg, TCFG, SEED + 1, HELD, tr, va),
        resume_key("hm_unet", vcfg, TCFG, SEED, HELD + 1, tr, va),
        resume_key("hm_unet", vcfg, TCFG, SEED, HELD, moved, va),
        resume_key("hm_unet", vcfg, TCFG, SEED, HELD, repainted, va),
        resume_key("hm_unet", vcfg, TCFG, SEED, HELD, tr.iloc[1:], va),
    ]
    assert len({key, *others}) == len(others) + 1
    assert default_resume_dir("hm_unet", 3) == Path(".resume") / "hm_unet" / "fold3"


def test_micro_training_is_reproducible_bit_for_bit(ctx) -> None:
    """Twice from scratch (once without a resume dir): identical weights, oof.csv, metrics."""
    ref = _reference(ctx, "hm_unet")
    base: Path = ctx["base"]
    out = base / "again" / "hm_unet" / f"fold{HELD}"
    again = _train(ctx, "hm_unet", out, None)
    assert again["trained"] == list(range(EPOCHS))
    _assert_same_weights(ref["dir"], out)
    assert (out / "oof.csv").read_bytes() == (ref["dir"] / "oof.csv").read_bytes()
    m_ref = _metrics(ctx, ref["dir"].parent, base / "metrics_ref.json")
    m_again = _metrics(ctx, out.parent, base / "metrics_again.json")
    assert m_ref == m_again
    text = m_ref.decode().lower()
    assert "second" not in text and "per_s" not in text and "time" not in text, "metrics must not hold timings"
    assert json.loads(m_ref)["n_images"] == len(ctx["folds"].query("fold == @HELD"))
