"""Multi-process training (DistributedDataParallel, gloo on CPU, loopback only).

The end-to-end test launches the real ``python stages/train.py`` under ``python -m torch.distributed.run
--nproc_per_node 2`` on a micro configuration (tiny UNet, 64x64, 2 epochs, 1 thread per rank)
and checks what rank 0 alone must write. The sharding itself (every training row exactly once
per epoch across the ranks) is checked in-process on the sampler the loop uses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import yaml
from fold_files import fold_stage, fold_weights

from fetalbio.config import TrainConfig, VariantConfig, from_dict, merged_train_config
from fetalbio.data.folds import assign_folds
from fetalbio.engine.distributed import DistContext, train_sampler
from fetalbio.engine.train import _loader, seed_everything
from fetalbio.io import write_csv
from fetalbio.tasks import build_task

VARIANT = "hm_unet"
HELD = 1
SEED = 5
EPOCHS = 2


def test_dist_context_from_env() -> None:
    assert not DistContext.from_env({}).enabled
    assert not DistContext.from_env({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}).enabled
    ctx = DistContext.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "1"})
    assert ctx.enabled and not ctx.is_main and (ctx.rank, ctx.world_size, ctx.local_rank) == (2, 4, 1)
    with pytest.raises(RuntimeError, match="LOCAL_RANK"):
        DistContext.from_env({"WORLD_SIZE": "2", "RANK": "0"})


@pytest.mark.parametrize("n", [10, 11])
def test_shards_cover_every_training_row_once_per_epoch(n: int) -> None:
    """What each rank's DataLoader draws: together every row, each once (one padded repeat when
    ``n`` is odd), a new permutation every epoch, the same number of steps on every rank."""
    ds = list(range(n))
    tcfg = TrainConfig(batch_size=2, device="cpu", progress=False)
    samplers = [train_sampler(ds, DistContext(rank=r, world_size=2, local_rank=r), seed=7) for r in range(2)]  # type: ignore[arg-type]
    loaders = [_loader(ds, tcfg, torch.device("cpu"), shuffle=True, seed=7, persistent=False, sampler=s) for s in samplers]  # type: ignore[arg-type]
    assert len(loaders[0]) == len(loaders[1])
    orders = []
    for epoch in range(2):
        drawn = []
        for s in samplers:
            s.set_epoch(epoch)
            drawn += list(s)
        assert set(drawn) == set(range(n))
        assert len(drawn) == n + (n % 2)  # DistributedSampler(drop_last=False) evens the shards out
        orders.append(drawn)
    assert orders[0] != orders[1], "the shards must be reshuffled every epoch"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("seeds", [[], [SEED, 7]], ids=["one_network", "seed_ensemble"])
def test_two_process_training_under_torchrun(synth_clean, tiny_arch, repo: Path, tmp_path: Path, seeds: list[int]) -> None:
    clean, table_dir = synth_clean
    folds = assign_folds(clean, k=3, size_bins=1, seed=0)
    write_csv(tmp_path / "labels.csv", clean)
    folds.to_csv(tmp_path / "folds.csv", index=False)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["seed"] = SEED
    raw["train"].update(input_width=64, input_height=64, batch_size=2, epochs=EPOCHS, warmup_epochs=1, patience=EPOCHS,
                        device="cpu", cpu_threads=1, progress=False, amp=False)
    raw["variants"][VARIANT]["arch"] = tiny_arch("unet")
    raw["variants"][VARIANT]["seeds"] = seeds
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    work = tmp_path / "work"  # the run's working directory: what it writes lands here
    work.mkdir()
    out = work / "models" / VARIANT / f"fold{HELD}"  # the stage writes <out-dir>/fold<k>

    launch = [str(Path(__file__).resolve().parents[2] / "stages" / "train.py")]  # as dvc.yaml runs the stage
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *launch, "--params", str(tmp_path / "params.yaml"),
           "--variant", VARIANT, "--fold", str(HELD), "--labels", str(tmp_path / "labels.csv"),
           "--folds", str(tmp_path / "folds.csv"), "--images-root", str(table_dir), "--out-dir", str(out.parent)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FETALBIO_NO_PROGRESS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "MASTER_ADDR": "127.0.0.1", "PYTHONWARNINGS": "ignore"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"torchrun failed ({seconds:.0f}s):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert proc.stdout.count(f"train {VARIANT} fold {HELD}:") == 1, proc.stdout  # rank 0 reports, once

    # one set of outputs (rank 0's), no resume file left, nothing else written
    assert sorted(p.name for p in work.iterdir()) == [".resume", "models"]
    assert not [p for p in (work / ".resume").rglob("*") if p.is_file()], "the resume file outlived the training"
    assert not (work / ".resume" / VARIANT / f"fold{HELD}").exists()
    extra = [f"dvclive_seed{s}" for s in seeds[1:]]  # the members' weights are all in model.pt
    assert sorted(p.name for p in out.iterdir()) == sorted(["dvclive", "model.pt", "oof.csv", "summary.json", *extra])
    assert not list(work.rglob(".*.tmp"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["batch_size_per_process"] == 2 and summary["epochs_run"] == EPOCHS
    assert summary.get("member_seeds", []) == (seeds if len(seeds) > 1 else [])
    for log_dir in ["dvclive", *[f"dvclive_seed{s}" for s in seeds[1:]]]:
        logged = (out / log_dir / "plots" / "metrics" / "train_loss.tsv").read_text().strip().splitlines()
        assert len(logged) == 1 + EPOCHS, f"one writer: one {log_dir} row per epoch"

    oof = pd.read_csv(out / "oof.csv", dtype={"image_name": str})
    held = folds.loc[folds["fold"] == HELD, "image_name"].astype(str)
    assert sorted(oof["image_name"]) == sorted(held) and (oof["fold"] == HELD).all()

    weights = fold_weights(out / "model.pt")
    assert len(fold_stage(out / "model.pt")["state_dicts"]) == max(1, len(seeds))  # every member in one file
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    vcfg = from_dict(VariantConfig, raw["variants"][VARIANT], f"variants.{VARIANT}")
    tcfg = merged_train_config(from_dict(TrainConfig, raw["train"], "train"), vcfg, f"variants.{VARIANT}")
    seed_everything(seeds[0] if seeds else SEED)  # what train_fold builds before training its first network
    initial = build_task(VARIANT, vcfg, tcfg).model.state_dict()
    assert initial.keys() == weights.keys()
    assert any(not torch.equal(initial[k], weights[k]) for k in weights if weights[k].is_floating_point()), "the weights did not train"
