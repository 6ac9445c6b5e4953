"""Multi-process (DistributedDataParallel) training: launch detection and the few collectives
the training loop needs.

A run is distributed when it was started by ``torchrun`` / ``python -m torch.distributed.run``
(or anything else that sets ``WORLD_SIZE`` > 1, ``RANK`` and ``LOCAL_RANK``, plus
``MASTER_ADDR`` / ``MASTER_PORT``); otherwise it is a single process and none of this is used
(the single-process path is unchanged, bit for bit on CPU).

Roles: every rank trains on its shard of the training set (``DistributedSampler``); rank 0
alone scores the inner-validation set and broadcasts the score (so every rank takes the same
early-stopping decision), writes the resume file, predicts the held-out fold and writes every
output. The global batch is ``train.batch_size`` x world size.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

TIMEOUT = datetime.timedelta(minutes=30)  # rank 0 alone predicts the held-out fold while the others wait


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``world_size`` 1 is the plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "DistContext":
        """The launch as ``torchrun`` describes it in the environment (``WORLD_SIZE`` > 1);
        a single process otherwise."""
        env = os.environ if environ is None else environ
        world = int(env.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        missing = [k for k in ("RANK", "LOCAL_RANK") if k not in env]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun --nproc_per_node N")
        ctx = cls(rank=int(env["RANK"]), world_size=world, local_rank=int(env["LOCAL_RANK"]))
        if not 0 <= ctx.rank < world:
            raise RuntimeError(f"RANK={ctx.rank} outside 0..{world - 1}")
        return ctx


def setup(ctx: DistContext, device: torch.device) -> tuple[torch.device, bool]:
    """Join the process group (NCCL on CUDA, after ``torch.cuda.set_device(local_rank)``; gloo on
    CPU). Returns this rank's device and whether this call created the group (its creator
    destroys it, :func:`teardown`)."""
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if dist.is_initialized():
        if dist.get_world_size() != ctx.world_size or dist.get_rank() != ctx.rank:
            raise RuntimeError("a process group with another rank / world size is already initialised")
        return device, False
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size, timeout=TIMEOUT, **kwargs)
    return device, True


def teardown(created: bool) -> None:
    if created and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(device: torch.device) -> torch.device:
    """NCCL only moves CUDA tensors; gloo CPU ones."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_float(value: float, device: torch.device, src: int = 0) -> float:
    """``value`` of rank ``src`` on every rank (float64, exact; inf survives)."""
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device(device))
    dist.broadcast(t, src=src)
    return float(t.item())


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]


def all_reduce_max(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (a collective: call it on all)."""
    return all_reduce_max(1.0 if flag else 0.0, device) > 0.0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def train_sampler(ds: Dataset, ctx: DistContext, seed: int) -> DistributedSampler:
    """This rank's shard of the training set. Each epoch (``set_epoch``) the rows are shuffled
    by (``seed``, epoch) the same way on every rank and dealt out round-robin: every row lands on
    exactly one rank; when the row count is not a multiple of the world size, the first rows of
    the permutation are repeated to even out the shards (``drop_last=False``), so every rank
    runs the same number of steps."""
    return DistributedSampler(ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=False)
