"""The variant registry says what a compared method is, runs and gives: evaluate, compare, the
export and predict ask it instead of parsing names or probing files."""

from __future__ import annotations

import pytest

from fetalbio.variants import VARIANTS, compared_methods, method_family, method_outputs, method_stages


def test_a_refined_method_runs_its_first_stage_then_the_refinement() -> None:
    assert method_stages("hm_unet") == [("hm_unet", "coarse")]
    assert method_stages("hm_unet_refined") == [("hm_unet", "coarse"), ("refine", "refine")]
    assert method_stages("seg_unet_refined")[0] == ("seg_unet", "coarse")


def test_family_is_the_first_stage_s_and_outputs_the_last_stage_s() -> None:
    # a refined landmark method is still a landmark method (compare's headline pairs families),
    # but it gives a mask and an ellipse (predict --masks writes them, evaluate scores them)
    assert method_family("hm_unet_refined") == "landmark" and method_family("seg_unet") == "segmentation"
    assert method_outputs("hm_unet") == ("points",)
    assert {"mask", "ellipse"} <= set(method_outputs("hm_unet_refined"))
    assert {"mask", "ellipse"} <= set(method_outputs("seg_deeplabv3plus"))


def test_every_first_stage_variant_is_compared_alone_and_refined() -> None:
    names = [n for n, s in VARIANTS.items() if s.standalone_family]
    methods = compared_methods(names)
    assert methods[: len(names)] == names and methods[len(names):] == [f"{n}_refined" for n in names]
    assert all(method_stages(m)[0][0] in names for m in methods)


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises((KeyError, ValueError), match="nope"):
        method_stages("nope_refined")
