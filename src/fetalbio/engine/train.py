"""The one training loop for both task families, prediction, and checkpoints.

CPU runs are deterministic (seeded, ``torch.use_deterministic_algorithms``, single-process data
loading). On CUDA the loop uses bf16 autocast (fp16 with a grad scaler where bf16 is missing),
channels_last, pinned memory and worker processes; cuDNN kernels make GPU runs close to but not
bit-identical across runs.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) the loop trains with DistributedDataParallel:
see :mod:`fetalbio.engine.distributed` (``fit(..., dist_ctx=...)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from fetalbio.config import SCHEDULES, TrainConfig
from fetalbio.engine import distributed as ddp
from fetalbio.engine.dataset import BiometryDataset
from fetalbio.engine.distributed import DistContext
from fetalbio.io import write_torch
from fetalbio.tasks.base import ImagePrediction, Task, average_outputs


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def deterministic_kernels() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` for eager kernels. That call also
    sets torch.compile's flag, importing inductor (+2 s of every training stage's start-up, a fifth
    of a sample stage); nothing here compiles, so only the eager switch is set unless inductor is loaded."""
    if "torch._inductor" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def select_device(tcfg: TrainConfig) -> torch.device:
    if tcfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but CUDA is not available")
    if tcfg.device == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(tcfg.cpu_threads)
        deterministic_kernels()
        return torch.device("cpu")
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda")


def _loader(ds: BiometryDataset, tcfg: TrainConfig, device: torch.device, shuffle: bool, seed: int, persistent: bool = True,
            sampler: Sampler | None = None) -> DataLoader:
    """``persistent=False`` for training: workers start afresh every epoch, so they see the
    dataset's current epoch seed (:meth:`BiometryDataset.set_epoch`). ``sampler`` (a
    distributed shard, which shuffles itself): ``batch_size`` and the drop-last rule then apply
    to this process's shard."""
    g = torch.Generator()
    g.manual_seed(seed)
    cuda = device.type == "cuda"
    workers = tcfg.num_workers if cuda else 0
    n = len(sampler) if sampler is not None else len(ds)  # type: ignore[arg-type]
    return DataLoader(ds, batch_size=tcfg.batch_size, shuffle=shuffle and sampler is None, sampler=sampler, drop_last=shuffle and n > tcfg.batch_size,
                      generator=g, num_workers=workers, pin_memory=cuda, persistent_workers=persistent and workers > 0)


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if device.type == "cuda":
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to 0 at ``total_steps``."""

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def cosine_restarts(total_steps: int, warmup_steps: int, cycle_steps: int, mult: int = 1) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine annealing with warm restarts (SGDR, Loshchilov &
    Hutter 2017): cycle ``i`` lasts ``cycle_steps * mult**i`` steps, decays from 1 to 0 along a
    half cosine and restarts at 1. The training ends after ``total_steps`` steps, wherever it is
    in its cycle (``total_steps`` is kept for a signature like :func:`warmup_cosine`'s)."""
    if cycle_steps < 1 or mult < 1:
        raise ValueError(f"cycle_steps and mult must be >= 1, got {cycle_steps}, {mult}")

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        t, length = step - warmup_steps, cycle_steps
        while t >= length:
            t -= length
            length *= mult
        return 0.5 * (1.0 + math.cos(math.pi * t / length))

    return fn


def lr_schedule(tcfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The LR multiplier per optimiser step that ``tcfg.schedule`` (config's list of choices) names.
    Not torch's schedulers: CosineAnnealingLR and LinearLR warm-up are recursive, their LRs differ
    in the last bits (tested), and the resume file holds ``LambdaLR``'s state."""
    total, warmup = tcfg.epochs * steps_per_epoch, tcfg.warmup_epochs * steps_per_epoch
    if tcfg.schedule == "warmup_cosine":
        return warmup_cosine(total, warmup)
    if tcfg.schedule == "cosine_restarts":
        return cosine_restarts(total, warmup, tcfg.restart_epochs * steps_per_epoch, tcfg.restart_mult)
    raise ValueError(f"train.schedule must be one of {list(SCHEDULES)}, got {tcfg.schedule!r}")


@torch.no_grad()
def predict(task: Task, ds: BiometryDataset, tcfg: TrainConfig, device: torch.device, measure: bool = True,
            models: Sequence[torch.nn.Module] | None = None) -> list[ImagePrediction]:
    """Predictions for every item of ``ds`` (in order), in original-image pixels.
    ``measure=False``: what validation scoring needs only (see :meth:`Task.decode`).
    ``models``: the networks of an ensemble (default: ``task.model`` alone); their raw outputs
    are averaged (:func:`~fetalbio.tasks.base.average_outputs`) and decoded by ``task``."""
    nets = list(models) if models is not None else [task.model]
    for net in nets:
        net.eval()
    out: list[ImagePrediction] = []
    for batch in _loader(ds, tcfg, device, shuffle=False, seed=0):
        b = _to_device(batch, device)
        with _autocast(device, tcfg.amp):
            y = average_outputs([net(b["image"]) for net in nets])
        lbs = [ds.samples[int(i)].letterbox for i in batch["index"]]
        out.extend(task.decode(y, lbs, measure=measure))
    return out


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    train_images_per_s: float = 0.0
    resumed_from_epoch: int = 0  # epochs taken from a resume file (0: trained from scratch)


RESUME_FORMAT = 1
RESUME_FILE = "resume.pt"


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random draw of (0-based) ``epoch``: a function of (seed, epoch) only,
    so an epoch replays exactly whatever ran before it (resume after a kill)."""
    return int.from_bytes(hashlib.sha256(f"fetalbio-epoch:{seed}:{epoch}".encode()).digest()[:4], "little")


def _cpu_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}


def _fit_key(key: str, tcfg: TrainConfig, seed: int, n_train: int, n_val: int, world_size: int = 1) -> str:
    """What a resume file must match: the caller's key plus what ``fit`` itself sees (and the
    number of processes of a distributed run: another one trains differently)."""
    train = {k: v for k, v in dataclasses.asdict(tcfg).items() if k != "progress"}  # a progress bar changes nothing
    ident: dict[str, Any] = {"key": key, "train": train, "seed": seed, "n_train": n_train, "n_val": n_val}
    if world_size > 1:  # single-process keys stay what they were
        ident["world_size"] = world_size
    blob = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _load_resume(path: Path, key: str, say: Callable[[str], None]) -> dict[str, Any] | None:
    """The resume state in ``path`` when it exists and belongs to this training, else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / foreign file: start over (it is overwritten)
        say(f"resume: ignoring unreadable {path} ({type(exc).__name__}: {exc}); training from scratch")
        return None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT or state.get("key") != key:
        say(f"resume: ignoring {path}: it belongs to another training (config, seed, fold or data differ); training from scratch")
        return None
    return state


@dataclass
class FitState:
    """What the loop of :func:`fit` and its hooks share: one training's objects and counters."""

    task: Task  # task.model: the plain module (weights, scoring, checkpoints)
    net: torch.nn.Module  # what trains: task.model or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loader: DataLoader  # its dataset: the training set; its sampler: the rank's shard under DDP
    tcfg: TrainConfig
    seed: int
    device: torch.device
    dctx: DistContext | None
    say: Callable[[str], None]
    main: bool  # rank 0 (or the only process): scores, writes, logs and says
    history: list[dict[str, float]] = field(default_factory=list)
    start: int = 0  # epochs taken from a resume file
    n_seen: int = 0
    elapsed: float = 0.0  # seconds trained before a resume
    t0: float = 0.0
    best_state: dict[str, torch.Tensor] | None = None
    best_score: float = math.inf
    best_epoch: int = -1
    stale: int = 0  # epochs since the best one


class Hook:
    """One concern of :func:`fit` (the pattern of MONAI's handlers and Lightning's callbacks): the
    loop calls every hook, in list order, at these points; each does nothing unless overridden."""

    def on_fit_start(self, s: FitState) -> None: ...
    def should_stop(self, s: FitState) -> bool: return False  # asked before every epoch
    def on_epoch_start(self, s: FitState, epoch: int) -> None: ...
    def on_step_end(self, s: FitState, mean_loss: float) -> None: ...
    def on_train_end(self, s: FitState) -> None: ...  # the epoch's batches done, before scoring
    def on_epoch_end(self, s: FitState, row: dict[str, float]) -> None: ...
    def on_fit_end(self, s: FitState) -> None: ...


@dataclass
class EarlyStopping(Hook):
    """Keeps the weights of the epoch with the lowest validation score, stops after ``patience``
    epochs without improvement (a resumed stopped training: at once) and leaves the best weights."""

    patience: int

    def should_stop(self, s: FitState) -> bool:
        return s.stale >= self.patience

    def on_epoch_end(self, s: FitState, row: dict[str, float]) -> None:
        if row["val_score"] < s.best_score:
            s.best_score, s.best_epoch, s.stale = row["val_score"], row["epoch"], 0
            s.best_state = _cpu_state(s.task.model.state_dict())
        else:
            s.stale += 1

    def on_fit_end(self, s: FitState) -> None:
        if s.best_state is not None:
            s.task.model.load_state_dict(s.best_state)


@dataclass
class ResumeCheckpoint(Hook):
    """Continues from ``path`` when it holds this training's state (``key``: :func:`_fit_key`) and
    writes the full state there, atomically, after every epoch (rank 0; every rank reads it)."""

    path: Path
    key: str

    def on_fit_start(self, s: FitState) -> None:
        state = _load_resume(self.path, self.key, s.say)
        if s.dctx is not None:  # every rank must continue from the same epoch
            mine = float(state["epoch"]) if state is not None else -1.0
            if ddp.all_reduce_max(mine, s.device) != mine or ddp.all_reduce_max(-mine, s.device) != -mine:
                raise RuntimeError(f"{self.path}: the ranks see different resume files (is --resume-dir on a disk every rank shares?)")
        if state is None:
            return
        for part, name in ((s.task.model, "model"), (s.opt, "optimizer"), (s.sched, "scheduler"), (s.scaler, "scaler")):
            part.load_state_dict(state[name])
        s.best_state = state["best_state"]
        s.best_score, s.best_epoch, s.stale = float(state["best_score"]), int(state["best_epoch"]), int(state["stale"])
        s.history = [dict(r) for r in state["history"]]
        s.start, s.n_seen, s.elapsed = int(state["epoch"]), int(state["n_seen"]), float(state["elapsed"])
        s.say(f"resume: continuing from {self.path} after epoch {s.start}/{s.tcfg.epochs}")

    def on_epoch_end(self, s: FitState, row: dict[str, float]) -> None:
        if s.main:
            write_torch(self.path, {
                "format": RESUME_FORMAT, "key": self.key, "epoch": row["epoch"], "model": _cpu_state(s.task.model.state_dict()),
                "optimizer": s.opt.state_dict(), "scheduler": s.sched.state_dict(), "scaler": s.scaler.state_dict(),
                "best_state": s.best_state, "best_score": s.best_score, "best_epoch": s.best_epoch, "stale": s.stale,
                "history": s.history, "n_seen": s.n_seen, "elapsed": time.perf_counter() - s.t0,
            })


@dataclass
class EpochLog(Hook):
    """``log(epoch, row)`` after every epoch; the epochs a resume file brought are replayed first,
    so that the per-epoch log is the uninterrupted run's."""

    log: Callable[[int, dict[str, float]], None]

    def on_fit_start(self, s: FitState) -> None:
        for i, row in enumerate(s.history):
            self.log(i, row)

    def on_epoch_end(self, s: FitState, row: dict[str, float]) -> None:
        self.log(row["epoch"] - 1, row)


@dataclass
class Progress(Hook):
    """A tqdm bar (stderr) over each epoch's batches, with the running mean loss."""

    show: bool
    bar: Any = None

    def on_epoch_start(self, s: FitState, epoch: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=len(s.loader), desc=f"epoch {epoch + 1}/{s.tcfg.epochs}", leave=False, disable=not self.show, mininterval=1.0)

    def on_step_end(self, s: FitState, mean_loss: float) -> None:
        self.bar.update()
        self.bar.set_postfix(loss=f"{mean_loss:.4f}")

    def on_train_end(self, s: FitState) -> None:
        self.bar.close()


def fit(task: Task, train_ds: BiometryDataset, val_ds: BiometryDataset, score_fn: Callable[[list[ImagePrediction]], float], tcfg: TrainConfig, seed: int,
        device: torch.device, log: Callable[[int, dict[str, float]], None] | None = None, resume_dir: Path | None = None, resume_key: str = "",
        say: Callable[[str], None] = print, dist_ctx: DistContext | None = None) -> FitResult:
    """Train ``task.model``; keep the weights of the epoch with the lowest ``score_fn`` on
    ``val_ds``; stop after ``tcfg.patience`` epochs without improvement.

    Every epoch's randomness (shuffling, augmentation, dropout) is a function of (``seed``,
    epoch). With ``resume_dir`` the full training state is written atomically to
    ``resume_dir/resume.pt`` after every epoch; a later call whose ``resume_key`` (the caller's
    hash of everything that defines the training) and train config match continues after the
    last completed epoch and ends with the same weights as an uninterrupted run (bit for bit on
    CPU). ``log`` is called for every epoch, replayed ones included. The caller removes the file
    with :func:`clear_resume` once everything that depends on the training is written.

    ``dist_ctx`` with ``world_size`` > 1 (the process group joined, :func:`ddp.setup`): the
    model is wrapped in DistributedDataParallel and each rank trains on its
    ``DistributedSampler`` shard (``tcfg.batch_size`` per rank); rank 0 scores ``val_ds`` and
    broadcasts the score, writes the resume file, logs and says; every rank reads the resume
    file. Every rank returns the same result and (best) weights.

    The loop is :func:`_run`; each concern around it is a :class:`Hook` (early stopping, resume,
    log, progress bar)."""
    dctx = dist_ctx if dist_ctx is not None and dist_ctx.enabled else None
    s = _setup(task, train_ds, tcfg, seed, device, dctx, say if dctx is None or dctx.is_main else (lambda _msg: None))
    hooks: list[Hook] = [EarlyStopping(tcfg.patience)]  # first: the resume file holds its decision
    if resume_dir is not None:
        key = _fit_key(resume_key, tcfg, seed, len(train_ds), len(val_ds), dctx.world_size if dctx else 1)
        hooks.append(ResumeCheckpoint(Path(resume_dir) / RESUME_FILE, key))
    if log is not None and s.main:
        hooks.append(EpochLog(log))
    hooks.append(Progress(s.main and tcfg.progress and os.environ.get("FETALBIO_NO_PROGRESS") is None))
    return _run(s, hooks, lambda: score_fn(predict(task, val_ds, tcfg, device, measure=task.measure_for_score)))


def _setup(task: Task, train_ds: BiometryDataset, tcfg: TrainConfig, seed: int, device: torch.device, dctx: DistContext | None,
           say: Callable[[str], None]) -> FitState:
    """Seed, place (and for several processes wrap) the model; optimiser, loader, LR schedule."""
    seed_everything(seed)
    model = task.model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    sampler = None
    if dctx is not None:
        from torch.nn.parallel import DistributedDataParallel

        # every registered model uses all its parameters in the loss (checked per variant), so no
        # find_unused_parameters; DDP broadcasts rank 0's initial weights and buffers
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        sampler = ddp.train_sampler(train_ds, dctx, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    loader = _loader(train_ds, tcfg, device, shuffle=True, seed=seed, persistent=False, sampler=sampler)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(tcfg, max(1, len(loader))))
    use_scaler = device.type == "cuda" and tcfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    return FitState(task, net, opt, sched, scaler, loader, tcfg, seed, device, dctx, say, dctx is None or dctx.is_main)


def _run(s: FitState, hooks: list[Hook], score: Callable[[], float]) -> FitResult:
    """The epoch loop: seed the epoch, train on its batches, score it (rank 0), tell the hooks."""
    for h in hooks:
        h.on_fit_start(s)
    s.t0 = time.perf_counter() - s.elapsed
    for epoch in range(s.start, s.tcfg.epochs):
        if any(h.should_stop(s) for h in hooks):
            break
        _seed_epoch(s, epoch)
        for h in hooks:
            h.on_epoch_start(s, epoch)
        s.net.train()
        total, count, n_seen_before = 0.0, 0, s.n_seen
        for batch in s.loader:
            n, loss = _train_step(s, batch, epoch)
            total += loss * n
            count += n
            s.n_seen += n
            for h in hooks:
                h.on_step_end(s, total / max(count, 1))
        for h in hooks:
            h.on_train_end(s)
        # rank 0 scores the whole inner-val set (the plain module, no collectives); all ranks get its score
        val = score() if s.main else 0.0
        if s.dctx is not None:
            val = ddp.broadcast_float(val, s.device)
            total, count, seen = ddp.all_reduce_sum([total, float(count), float(s.n_seen - n_seen_before)], s.device)
            s.n_seen = n_seen_before + int(seen)
        row = {"epoch": epoch + 1, "train_loss": total / max(count, 1), "val_score": val, "lr": s.opt.param_groups[0]["lr"]}
        s.history.append(row)
        for h in hooks:
            h.on_epoch_end(s, row)
    for h in hooks:
        h.on_fit_end(s)
    seconds = time.perf_counter() - s.t0
    return FitResult(s.best_epoch, s.best_score, len(s.history), s.history, seconds, s.n_seen / max(seconds, 1e-9), s.start)


def _seed_epoch(s: FitState, epoch: int) -> None:
    """Every random draw of ``epoch`` from (seed, epoch) alone; each rank its own dropout draws."""
    es = epoch_seed(s.seed, epoch)
    seed_everything(es if s.dctx is None else (es + s.dctx.rank) % 2**32)
    s.loader.generator.manual_seed(es)
    if s.dctx is not None:
        s.loader.sampler.set_epoch(epoch)  # shard permutation: a function of (seed, epoch)
    s.loader.dataset.set_epoch(es)


def _train_step(s: FitState, batch: dict[str, torch.Tensor], epoch: int) -> tuple[int, float]:
    """One optimiser step (autocast, loss-scaled where fp16); the batch size and its loss."""
    b = _to_device(batch, s.device)
    with _autocast(s.device, s.tcfg.amp):
        out = s.net(b["image"])
        loss = s.task.loss(out if isinstance(out, list) else out.float(), b)
    bad = not torch.isfinite(loss)
    if s.dctx is not None:  # all ranks stop together (one rank alone would leave the others hanging)
        bad = ddp.any_rank(bad, s.device)
    if bad:
        raise FloatingPointError(f"non-finite training loss at epoch {epoch + 1}")
    s.opt.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.opt)
    s.scaler.update()
    s.sched.step()
    return len(b["image"]), float(loss.detach())


def clear_resume(resume_dir: Path | None) -> None:
    """Remove a finished training's resume file (and its folder, when that is left empty)."""
    if resume_dir is None:
        return
    (Path(resume_dir) / RESUME_FILE).unlink(missing_ok=True)
    try:
        Path(resume_dir).rmdir()
    except OSError:
        pass
