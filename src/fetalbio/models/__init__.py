"""Neural-network architectures, registered by name in :data:`MODELS`.

Every registered builder has the signature ``(in_channels, out_channels, **arch)`` (every arch
option has a small CPU-friendly default) and returns an ``nn.Module`` with

* ``output_kind``: ``"dense"`` -- ``forward`` gives raw logits/heatmaps of shape
  ``(B, out_channels, H / output_stride, W / output_stride)``; or ``"vector"`` -- it gives
  ``(B, out_channels, 2)`` normalised ``(x, y)`` in [0, 1] (sigmoid), x first; or ``"hybrid"``
  -- it gives a ``list`` ``[*heatmaps, coords]``: dense heatmaps (one tensor, or one per stack
  in training mode for deep supervision) followed by the ``"vector"`` coordinates;
* ``output_stride``: input size / output size (1 = full resolution; 1 for vector outputs);
* ``input_multiple``: H and W must be multiples of it (a ``ValueError`` says so otherwise);
  every model accepts multiples of 32.

Deep supervision: the stacked ``hourglass`` with ``stacks > 1`` returns, in training mode only, a
``list`` of tensors of the same shape (the last is the final output); every other ``"dense"`` or
``"vector"`` model, and every such model in eval mode, returns a single tensor.

Registered names: ``unet``, ``attention_unet``, ``deeplabv3plus``, ``hourglass``, ``hrnet_lite``,
``resnet_deconv``, ``coord_regression``, ``multihead_unet``, ``hybrid_hourglass`` (``"hybrid"``),
``attention_fpn``, ``vit_landmark``, ``alexnet_regression``, ``efficientnet_regression``. Build one
with :func:`build_model`; a bad arch option value raises ``ValueError`` naming the model and the
option.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

# importing the submodules registers their networks in MODELS
from fetalbio.models.attention_unet import AttentionUNet
from fetalbio.models.deeplab import DeepLabV3Plus
from fetalbio.models.fpn import AttentionFPN
from fetalbio.models.hourglass import HourglassNet, HybridHourglass
from fetalbio.models.hrnet import HRNetLite
from fetalbio.models.multihead import MultiHeadUNet
from fetalbio.models.regression import AlexNetRegression, EfficientNetRegression
from fetalbio.models.resnet import CoordRegression, ResNetDeconv, ResNetEncoder
from fetalbio.models.unet import UNet
from fetalbio.models.vit import ViTLandmark
from fetalbio.registry import MODELS

__all__ = [
    "MODELS", "OUTPUT_KINDS", "AlexNetRegression", "AttentionFPN", "AttentionUNet", "CoordRegression", "DeepLabV3Plus", "EfficientNetRegression", "HRNetLite",
    "HourglassNet", "HybridHourglass", "MultiHeadUNet", "ResNetDeconv", "ResNetEncoder", "UNet", "ViTLandmark", "arch_options", "build_model", "count_parameters",
]

OUTPUT_KINDS = ("dense", "vector", "hybrid")


def arch_options(name: str) -> dict[str, Any]:
    """The arch options of model ``name`` and their defaults (``KeyError`` for unknown names)."""
    builder = MODELS.get(name)
    params = list(inspect.signature(builder).parameters.values())[2:]  # skip in/out channels
    return {p.name: p.default for p in params}


def build_model(name: str, in_channels: int, out_channels: int, **arch: Any) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name in :data:`MODELS` (``KeyError`` listing the valid names otherwise).
        in_channels: image channels (1 for grey-scale ultrasound).
        out_channels: heatmap / class channels, or number of points for ``"vector"`` models.
        **arch: architecture options of that model (see :func:`arch_options`); an unknown option
            raises ``TypeError`` naming the model, the option and the valid ones; a bad value
            ``ValueError`` naming the model and the option.

    Returns:
        The model, with ``output_kind``, ``output_stride`` and ``input_multiple`` attributes.
    """
    options = arch_options(name)
    unknown = sorted(set(arch) - set(options))
    if unknown:
        valid = ", ".join(options) or "(none)"
        raise TypeError(f"model {name!r} got unknown arch option(s) {unknown}; valid options: {valid}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"model {name!r}: in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    model = MODELS.get(name)(in_channels, out_channels, **arch)
    for attr in ("output_kind", "output_stride", "input_multiple"):
        if not hasattr(model, attr):
            raise TypeError(f"model {name!r} does not define the required attribute {attr!r}")
    if model.output_kind not in OUTPUT_KINDS:
        raise TypeError(f"model {name!r}: output_kind must be one of {OUTPUT_KINDS}, got {model.output_kind!r}")
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
