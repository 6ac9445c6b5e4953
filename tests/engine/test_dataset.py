"""BiometryDataset: item shapes and dtypes, targets consistent with the labels, masks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fetalbio import POINT_COLUMNS
from fetalbio.config import AugmentConfig, TrainConfig, VariantConfig
from fetalbio.engine.dataset import BiometryDataset, load_sample
from fetalbio.geometry.points import canonicalize
from fetalbio.tasks import build_task
from fetalbio.variants import get_variant

W_IN, H_IN = 96, 64  # W != H, so a swapped axis shows
NO_AUG = AugmentConfig(rotate_deg=0.0, scale=0.0, shift=0.0, hflip=0.0, brightness_contrast=0.0, gamma=0.0, speckle=0.0)
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"


def _tcfg(**kw) -> TrainConfig:
    return TrainConfig(input_width=W_IN, input_height=H_IN, device="cpu", **kw)


def _task(variant: str, tiny_arch, **vkw):
    return build_task(variant, VariantConfig(arch=tiny_arch(get_variant(variant).model), **vkw), _tcfg())


def _mask_centroid(m: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(m)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("variant", ["hm_unet", "hourglass", "coord_regression"])
def test_landmark_items(variant: str, synth_clean, tiny_arch) -> None:
    clean, d = synth_clean
    rows = clean.iloc[:4].copy()
    rows.loc[rows.index[1], "weight"] = 0.25
    task = _task(variant, tiny_arch)
    ds = BiometryDataset(rows, d, task, _tcfg(), train=False)
    assert len(ds) == 4
    codec = task.codec
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (1, H_IN, W_IN) and item["image"].dtype == torch.float32
        # z-scored
        assert abs(float(item["image"].mean())) < 1e-3 and abs(float(item["image"].std()) - 1) < 1e-2
        if codec.kind == "heatmap":
            wh, hh = codec.heatmap_size
            assert item["target"].shape == (4, hh, wh)
            assert (wh, hh) == (W_IN // task.model.output_stride, H_IN // task.model.output_stride)
        else:
            assert item["target"].shape == (4, 2)
        assert item["target"].dtype == torch.float32
        assert item["point_weight"].shape == (4,) and torch.all(item["point_weight"] == 1)
        assert item["weight"].shape == () and item["weight"].dtype == torch.float32
        assert float(item["weight"]) == pytest.approx(0.25 if i == 1 else 1.0)
        assert int(item["index"]) == i
        # the target decodes back to the row's (canonical) label in original pixels
        dec, _ = codec.decode(item["target"].numpy()[None])
        back = ds.samples[i].letterbox.to_original(dec[0])
        ref = rows.iloc[i][list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 2)
        np.testing.assert_allclose(back, ref, atol=0.05)
    # a batch from the default collate
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 1, H_IN, W_IN) and batch["weight"].shape == (2,)
    out = task.model.eval()(batch["image"])
    assert tuple(out.shape) == tuple(batch["target"].shape)


def test_prediction_only_items_have_no_targets(synth_clean, tiny_arch) -> None:
    clean, d = synth_clean
    ds = BiometryDataset(clean.iloc[:2], d, _task("hm_unet", tiny_arch), _tcfg(), train=False, with_targets=False)
    assert set(ds[0]) == {"image", "weight", "index"}


@pytest.mark.parametrize("method", ["zscore", "median_clahe"])
def test_evaluation_items_are_the_predictors_preprocessing(method: str, synth_clean, tiny_arch) -> None:
    """One preprocessing: the dataset's evaluation input is network_input(), which the
    Predictor and the refinement stage call too, for every normalisation."""
    from fetalbio.data.transforms import Letterbox, network_input
    from fetalbio.io import read_gray8

    clean, d = synth_clean
    tcfg = _tcfg(normalize=method)
    ds = BiometryDataset(clean.iloc[:3], d, build_task("seg_unet", VariantConfig(arch=tiny_arch("unet")), tcfg), tcfg, train=False, with_targets=False)
    for i in range(3):
        raw = read_gray8(d / clean.iloc[i]["image_path"]).pixels
        lb = Letterbox.fit((raw.shape[1], raw.shape[0]), (W_IN, H_IN))
        np.testing.assert_array_equal(ds[i]["image"][0].numpy(), network_input(raw, lb, method))


def test_training_flip_moves_targets_with_the_image(synth_clean, tiny_arch) -> None:
    clean, d = synth_clean
    task = _task("hm_unet", tiny_arch)
    tcfg = dataclasses.replace(_tcfg(), augment=dataclasses.replace(NO_AUG, hflip=1.0))
    ds = BiometryDataset(clean.iloc[:3], d, task, tcfg, train=True, seed=0)
    plain = BiometryDataset(clean.iloc[:3], d, task, _tcfg(), train=False)
    for i in range(3):
        item, ref_item = ds[i], plain[i]
        torch.testing.assert_close(item["image"], torch.flip(ref_item["image"], dims=[-1]))
        mirrored = ds.samples[i].points.copy()
        mirrored[:, 0] = W_IN - 1 - mirrored[:, 0]
        dec, _ = task.codec.decode(item["target"].numpy()[None])
        np.testing.assert_allclose(dec[0], canonicalize(mirrored).points, atol=0.05)


@pytest.mark.parametrize("variant", ["seg_unet", "seg_deeplabv3plus"])
def test_segmentation_items(variant: str, synth_clean, tiny_arch) -> None:
    clean, d = synth_clean
    task = _task(variant, tiny_arch)
    ds = BiometryDataset(clean.iloc[:3], d, task, _tcfg(), train=False)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (1, H_IN, W_IN)
        t = item["target"]
        assert t.shape == (1, H_IN, W_IN) and t.dtype == torch.float32
        assert set(torch.unique(t).tolist()) == {0.0, 1.0}
        assert item["weight"].shape == ()
        # the target is the row's sonographer mask, letterboxed
        s = ds.samples[i]
        src = cv2.imread(str(d / clean.iloc[i]["mask_path"]), cv2.IMREAD_GRAYSCALE) > 127
        area_in = src.sum() * s.letterbox.scale[0] * s.letterbox.scale[1]
        assert abs(float(t.sum()) - area_in) <= 0.05 * area_in
        assert "point_weight" not in item


def test_landmark_mask_source_gives_filled_label_ellipse(synth_clean, tiny_arch) -> None:
    clean, d = synth_clean
    task = _task("seg_unet", tiny_arch, mask_source="landmarks")
    assert task.trainable(1.0, False) and not task.trainable(0.0, True)
    ds = BiometryDataset(clean.iloc[:5], d, task, _tcfg(), train=False)
    sono = BiometryDataset(clean.iloc[:5], d, _task("seg_unet", tiny_arch), _tcfg(), train=False)
    for i in range(len(ds)):
        t = ds[i]["target"][0].numpy()
        pts = ds.samples[i].points  # input px, canonical
        a = np.linalg.norm(pts[1] - pts[0]) / 2
        b = np.linalg.norm(pts[3] - pts[2]) / 2
        assert abs(t.sum() - np.pi * a * b) <= 0.10 * np.pi * a * b, (t.sum(), np.pi * a * b)
        # filled (no holes): the centre of the head is inside
        c = pts.mean(axis=0)
        assert t[int(round(c[1])), int(round(c[0]))] == 1
        # on synthetic data the sonographer mask is that same ellipse
        s = sono[i]["target"][0].numpy()
        dice = 2 * (t * s).sum() / (t.sum() + s.sum())
        assert dice > 0.9


def _sample_row(name: str) -> pd.Series:
    lm = pd.read_csv(SAMPLE / "landmarks.csv", dtype={"image_name": str}).set_index("image_name")
    pts = canonicalize(lm.loc[name, list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 2)).points
    return pd.Series({"image_name": name, "image_path": f"images/{name}", "mask_path": f"masks/{name}", **dict(zip(POINT_COLUMNS, pts.reshape(-1))), "weight": 1.0})


def test_load_sample_letterboxes_real_image_and_points() -> None:
    row = _sample_row("000_HC.png")
    s = load_sample(row, SAMPLE, (128, 96), None)
    img = cv2.imread(str(SAMPLE / row["image_path"]), cv2.IMREAD_GRAYSCALE)
    assert s.image.shape == (96, 128) and s.image.dtype == np.uint8 and s.mask is None
    assert s.letterbox.src_size == (img.shape[1], img.shape[0])
    pts = row[list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 2)
    np.testing.assert_allclose(s.points, s.letterbox.to_input(pts), atol=1e-12)


@pytest.mark.parametrize("mask_source", ["sonographer", "landmarks"])
def test_letterboxed_mask_is_aligned_with_the_points(mask_source: str) -> None:
    row = _sample_row("000_HC.png")
    s = load_sample(row, SAMPLE, (128, 96), mask_source)
    if mask_source == "sonographer":
        full = cv2.imread(str(SAMPLE / row["mask_path"]), cv2.IMREAD_GRAYSCALE) > 127
    else:
        from fetalbio.geometry.ellipse import ellipse_from_points, ellipse_to_mask

        img = cv2.imread(str(SAMPLE / row["image_path"]), cv2.IMREAD_GRAYSCALE)
        pts = row[list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 2)
        full = ellipse_to_mask(ellipse_from_points(pts), (img.shape[1], img.shape[0])) > 0
    expect = s.letterbox.to_input(_mask_centroid(full))
    got = _mask_centroid(s.mask)
    assert np.abs(got - expect).max() <= 0.2, (got, expect, got - expect)
