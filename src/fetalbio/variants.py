"""The variant registry: one place maps a variant name to its method.

Adding a variant is one entry here plus a ``variants.<name>`` section in ``params.yaml`` (its
arch, codec, loss and training overrides) and its name in ``variant_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FAMILY_OUTPUTS = {"landmark": ("points",), "segmentation": ("points", "mask", "ellipse"), "refine": ("points", "mask", "ellipse")}


@dataclass(frozen=True)
class VariantSpec:
    """family: landmark | segmentation; model: a ``MODELS`` name; codec: a ``CODECS`` name
    (landmark only); loss: the default ``LOSSES`` name; decoder: the codec's default decoder."""

    family: Literal["landmark", "segmentation", "refine"]
    model: str
    loss: str
    codec: str | None = None
    decoder: str | None = None
    description: str = ""

    @property
    def outputs(self) -> tuple[str, ...]:
        """What the method's networks give an image: ``points`` (the four landmarks or the fitted
        ellipse's axis endpoints), ``mask`` (a skull mask), ``ellipse`` (fitted to the mask)."""
        return FAMILY_OUTPUTS[self.family]

    @property
    def standalone_family(self) -> bool:
        """A first-stage method (measures an image on its own), not the refinement stage."""
        return self.family != "refine"


VARIANTS: dict[str, VariantSpec] = {
    "hm_unet": VariantSpec("landmark", "unet", "adaptive_wing", "heatmap", "soft_argmax", "UNet -> 4 Gaussian heatmaps"),
    "hourglass": VariantSpec("landmark", "hourglass", "heatmap_mse", "heatmap", "soft_argmax", "hourglass (stacks as arch option, intermediate supervision)"),
    "hrnet_lite": VariantSpec("landmark", "hrnet_lite", "heatmap_mse", "heatmap", "soft_argmax", "small HRNet-style multi-resolution network"),
    "resnet_deconv": VariantSpec("landmark", "resnet_deconv", "heatmap_mse", "heatmap", "soft_argmax", "ResNet encoder + deconvolution head (SimpleBaseline)"),
    "coord_regression": VariantSpec("landmark", "coord_regression", "wing", "regression", None, "ResNet encoder regressing the 8 normalised coordinates (baseline)"),
    # write-ups (issue 22)
    "multihead_unet": VariantSpec("landmark", "multihead_unet", "heatmap_mse", "heatmap", "soft_argmax", "UNet encoder, one decoder per landmark pair (OFD, BPD), per-point loss weights (write-up 003, H3)"),
    "hybrid_hourglass": VariantSpec("landmark", "hybrid_hourglass", "heatmap_coord", "hybrid", "soft_argmax", "hourglass with a heatmap head and a coordinate-regression head, joint loss (write-up 001, B)"),
    "attention_fpn": VariantSpec("landmark", "attention_fpn", "heatmap_coord", "heatmap", "soft_argmax", "ResNet feature pyramid, attention on the fused levels, heatmaps + wing loss on their soft-argmax points (write-up 000, approach 3)"),
    "vit_landmark": VariantSpec("landmark", "vit_landmark", "wing", "regression", None, "small ViT from scratch, 4 learned landmark tokens regress the points, geometric prior (write-up 000, approach 4)"),
    "coord_alexnet": VariantSpec("landmark", "alexnet_regression", "wing", "regression", None, "AlexNet-style coordinate regression (write-up 004)"),
    "coord_resnet18": VariantSpec("landmark", "coord_regression", "wing", "regression", None, "ResNet-18 layout coordinate regression (write-up 004)"),
    "coord_resnet34": VariantSpec("landmark", "coord_regression", "wing", "regression", None, "ResNet-34 layout coordinate regression (write-up 004)"),
    "coord_efficientnet": VariantSpec("landmark", "efficientnet_regression", "smooth_l1", "regression", None, "EfficientNet-style MBConv coordinate regression, smooth L1 (write-up 000, approach 2)"),
    "seg_unet": VariantSpec("segmentation", "unet", "dice_bce", description="UNet skull segmentation + robust ellipse fit"),
    "seg_unet_landmarks": VariantSpec("segmentation", "unet", "dice_bce", description="UNet trained on filled ellipses from the cleaned landmarks (mask_source: landmarks)"),
    "seg_attention_unet": VariantSpec("segmentation", "attention_unet", "dice_bce", description="Attention UNet + robust ellipse fit"),
    "seg_deeplabv3plus": VariantSpec("segmentation", "deeplabv3plus", "dice_bce", description="DeepLabV3+ (atrous ResNet, ASPP) + robust ellipse fit"),
    # the second stage of every variant above (coarse-to-fine): `<variant>_refined` in compare
    "refine": VariantSpec("refine", "unet", "dice_bce", description="head-aligned, scale-normalised crop from a coarse ellipse -> skull mask -> ellipse"),
}

REFINED_SUFFIX = "_refined"


def refined_name(variant: str) -> str:
    """The compare/evaluate name of ``variant`` refined by the second stage."""
    return f"{variant}{REFINED_SUFFIX}"


def split_refined(name: str) -> tuple[str, bool]:
    """``(first-stage variant, refined?)`` of a compare name."""
    if name.endswith(REFINED_SUFFIX) and name[: -len(REFINED_SUFFIX)] in VARIANTS:
        return name[: -len(REFINED_SUFFIX)], True
    return name, False


def method_stages(method: str) -> list[tuple[str, str]]:
    """The ``(variant, role)`` of each network a compared method runs, in order: its first-stage
    variant (``coarse``), then for ``<variant>_refined`` the refinement stage (``refine``). What
    the export, evaluate and predict ask instead of parsing names or probing files."""
    variant, refined = split_refined(method)
    get_variant(variant)
    return [(variant, "coarse")] + ([("refine", "refine")] if refined else [])


def method_family(method: str) -> str:
    """A compared method's family: its first stage's (a refined landmark method is a landmark method)."""
    return get_variant(method_stages(method)[0][0]).family


def method_outputs(method: str) -> tuple[str, ...]:
    """What a compared method gives an image: what its last stage outputs (a later stage replaces
    the points and adds the mask and ellipse of the one before)."""
    return get_variant(method_stages(method)[-1][0]).outputs


def compared_methods(variant_names: list[str]) -> list[str]:
    """What ``compare`` tabulates: every first-stage variant, then each one refined."""
    return list(variant_names) + [refined_name(n) for n in variant_names]


def get_variant(name: str) -> VariantSpec:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; valid: {', '.join(sorted(VARIANTS))}") from None
