"""Codec round trip on the real embedded sample at the pipeline's input size.

Original points (canonical) -> letterbox -> encode -> decode the *target* -> letterbox inverse
must give the points back to a fraction of an original pixel: the whole chain
(letterbox, codec, decoder) shares one pixel-centre convention.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from fetalbio import POINT_COLUMNS
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.transforms import Letterbox
from fetalbio.geometry.points import canonicalize
from fetalbio.tasks import build_task

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
LANDMARK_VARIANTS = ["hm_unet", "hourglass", "hrnet_lite", "resnet_deconv", "coord_regression"]


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sample_points() -> list[tuple[str, tuple[int, int], np.ndarray]]:
    """(name, (W, H), canonical (4, 2) points) for every image of data/sample."""
    lm = pd.read_csv(SAMPLE / "landmarks.csv", dtype={"image_name": str})
    out = []
    for _, r in lm.iterrows():
        img = cv2.imread(str(SAMPLE / "images" / r["image_name"]), cv2.IMREAD_GRAYSCALE)
        assert img is not None, r["image_name"]
        pts = canonicalize(r[list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 2)).points
        out.append((r["image_name"], (img.shape[1], img.shape[0]), pts))
    assert len(out) == len(list((SAMPLE / "images").glob("*.png"))) >= 40
    return out


@pytest.mark.parametrize("variant", LANDMARK_VARIANTS)
def test_codec_round_trip_on_sample_images(variant: str, params: dict, sample_points, tiny_arch) -> None:
    from fetalbio.variants import get_variant

    tp = params["train"]
    size = (tp["input_width"], tp["input_height"])
    vp = params["variants"][variant]
    vcfg = VariantConfig(arch=tiny_arch(get_variant(variant).model), codec=vp.get("codec", {}))
    task = build_task(variant, vcfg, TrainConfig(input_width=size[0], input_height=size[1]))
    codec = task.codec
    if variant == "hm_unet":
        assert task.model.output_stride == 1 and codec.heatmap_size == size
        assert codec.sigma == vp["codec"]["sigma"] and codec.decoder == vp["codec"]["decoder"]

    skipped, n = 0, 0
    for name, src, pts in sample_points:
        lb = Letterbox.fit(src, size)
        pin = lb.to_input(pts)
        enc = codec.encode(pin)
        target = enc[codec.target_key]
        decoded, unc = codec.decode(target[None])
        back = lb.to_original(decoded[0])
        ok = enc["weights"] > 0
        skipped += int((~ok).sum())
        n += 4
        err = np.linalg.norm(back - pts, axis=1)[ok]
        assert np.all(np.isfinite(err)), name
        assert err.max(initial=0.0) <= 0.5, f"{variant} {name}: round-trip error {err.max():.3f} px (original pixels)"
        if codec.kind == "heatmap":
            assert target.shape == (4, codec.heatmap_size[1], codec.heatmap_size[0])
            assert np.all(np.isfinite(unc[0][ok]))
    assert skipped <= 0.05 * n, f"{skipped} of {n} points had weight 0"
