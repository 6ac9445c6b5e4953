"""The base class of the registered losses (the contract: :mod:`fetalbio.losses`) and their builder."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from fetalbio.registry import LOSSES

_EPS = 1e-12


class WeightedLoss(nn.Module):
    """Base class: subclasses implement :meth:`per_sample`; this class handles deep-supervision
    lists, shape checks, channel weights and sample weights."""

    def per_channel(self, pred: Tensor, target: Tensor) -> Tensor:
        """Loss per sample and channel, ``(B, K)``. Implemented by subclasses."""
        raise NotImplementedError

    def channel_scale(self, num_channels: int, ref: Tensor) -> Tensor | None:
        """Static per-channel weights ``(K,)`` from the loss config (None: all 1)."""
        return None

    def per_sample(self, pred: Tensor, target: Tensor, channel_weight: Tensor | None) -> Tensor:
        """``(B,)``: mean over channels of the weighted per-channel loss."""
        loss = self.per_channel(pred, target)
        weight = torch.ones_like(loss)
        static = self.channel_scale(loss.shape[1], loss)
        if static is not None:
            weight = weight * static[None, :]
        if channel_weight is not None:
            cw = torch.as_tensor(channel_weight, dtype=loss.dtype, device=loss.device)
            if cw.shape != loss.shape:
                raise ValueError(f"channel_weight must have shape {tuple(loss.shape)}, got {tuple(cw.shape)}")
            weight = weight * cw
        return (loss * weight).mean(dim=1)

    def _single(self, pred: Tensor, target: Tensor, sample_weight: Tensor | None, channel_weight: Tensor | None) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(
                f"{type(self).__name__}: pred {tuple(pred.shape)} and target "
                f"{tuple(target.shape)} differ in shape"
            )
        per = self.per_sample(pred, target.to(pred.dtype), channel_weight)
        if sample_weight is None:
            return per.mean()
        sw = torch.as_tensor(sample_weight, dtype=per.dtype, device=per.device).reshape(-1)
        if sw.shape != per.shape:
            raise ValueError(f"sample_weight must have shape {tuple(per.shape)}, got {tuple(sw.shape)}")
        return (sw * per).sum() / sw.sum().clamp_min(_EPS)

    def forward(
        self,
        pred: Tensor | list[Tensor],
        target: Tensor,
        sample_weight: Tensor | None = None,
        channel_weight: Tensor | None = None,
    ) -> Tensor:
        if isinstance(pred, (list, tuple)):
            if len(pred) == 0:
                raise ValueError("empty list of predictions")
            losses = [self._single(p, target, sample_weight, channel_weight) for p in pred]
            return torch.stack(losses).mean()
        return self._single(pred, target, sample_weight, channel_weight)


def build_loss(name: str, **cfg: Any) -> nn.Module:
    """Build the loss registered as ``name`` (``LOSSES.names()``).

    Unknown names raise KeyError listing the valid ones; unknown ``cfg`` keys raise TypeError
    naming them.
    """
    cls = LOSSES.get(name)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for loss {name!r}; valid: {sorted(valid)}")
    return cls(**cfg)
