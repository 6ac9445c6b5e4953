"""Compare ellipse-fit settings of a segmentation variant on its fold models' inner-validation images.

Usage: python scripts/compare_fits.py RUN_DIR VARIANT OUT_MD

RUN_DIR is a checkout where `dvc repro` ran on the full dataset (it has data/clean/labels.csv,
data/folds.csv, data/ingested and models/VARIANT/fold*/model.pt). For every fold model, the
images of its subject-grouped inner-validation split (the same split `train` used to pick the
epoch: `inner_split` with the checkpoint's seed + fold) are run through the network once; the
probability maps are then decoded with each fit setting below, exactly as
`SegmentationTask.decode` does (crop, fit at network resolution, map to the original image,
edge-offset calibration of that fold). The "flip TTA" settings average the network's raw output for
the image and for its mirror image (mirrored back), as `Predictor` averages an ensemble, and fit
the sigmoid of that mean. Only the resized image's columns are mirrored; the letterbox padding
stays where it is.
The table in OUT_MD gives the HC error against the sonographer per setting.

None of these images is in the fold the model is evaluated on, so choosing a setting here does
not look at the out-of-fold figures of `evaluate`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fetalbio.config import TrainConfig, VariantConfig, from_dict
from fetalbio.data.io import read_gray8
from fetalbio.data.transforms import Letterbox, normalize
from fetalbio.engine.run import inner_split
from fetalbio.engine.train import load_checkpoint
from fetalbio.geometry.ellipse import ramanujan_perimeter, transform_ellipse
from fetalbio.geometry.masks import mask_to_ellipse, shrink_ellipse
from fetalbio.tasks import build_task
from fetalbio.tasks.base import Task

SETTINGS = {  # name: (method, inlier band in network pixels, flip TTA)
    "ransac, 1 px": ("ransac", 1.0, False),
    "ransac, 1.5 px": ("ransac", 1.5, False),
    "ransac, 2 px": ("ransac", 2.0, False),
    "ransac, 3 px": ("ransac", 3.0, False),
    "ransac, 4 px": ("ransac", 4.0, False),
    "irls, 3 px": ("irls", 3.0, False),
    "plain, 1 px": ("plain", 1.0, False),
    "plain, 3 px": ("plain", 3.0, False),
    "plain, 3 px, flip TTA": ("plain", 3.0, True),
    "ransac, 3 px, flip TTA": ("ransac", 3.0, True),
}


def _flip_in_image(array: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """Mirror the resized image's columns (last axis); the letterbox padding stays."""
    out = array.clone()
    cols = slice(lb.left, lb.left + lb.new_size[0])
    out[..., cols] = array[..., cols].flip(-1)
    return out


def write_report(out_md: Path, lines: list[str]) -> None:
    """Write a script's Markdown report (creating its folder) and print it."""
    out_md.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    out_md.write_text(text + "\n", encoding="utf-8")
    print(text)


def refuse_seed_ensembles(variant_dir: Path) -> None:
    """Exit when a fold of ``variant_dir`` is a seed ensemble (``variants.<name>.seeds``): these
    scripts study one network per fold, and ``model.pt`` alone is only the first member of the
    ensemble the pipeline evaluated."""
    for summary in sorted(Path(variant_dir).glob("fold*/summary.json")):
        if json.loads(summary.read_text(encoding="utf-8")).get("member_seeds"):
            sys.exit(f"{summary.parent}: a seed ensemble (member_seeds in summary.json); this script measures one network per fold")


def load_fold_model(ckpt: Path, variant: str) -> tuple[Task, TrainConfig, dict]:
    """A fold checkpoint of ``variant`` as an eval-mode task with its calibration set, its
    training configuration and the checkpoint's config dict (fold, seed, calibration)."""
    cfg = (raw := load_checkpoint(ckpt))["config"]  # weights_only=True, structure checked
    if cfg["variant"] != variant:
        sys.exit(f"{ckpt}: a checkpoint of {cfg['variant']}, expected {variant}")
    vcfg = from_dict(VariantConfig, cfg["variant_cfg"], f"{ckpt}: variant_cfg")
    tcfg = from_dict(TrainConfig, cfg["train_cfg"], f"{ckpt}: train_cfg")
    task = build_task(variant, vcfg, tcfg)
    task.model.load_state_dict(raw["state_dict"])
    task.model.eval()
    task.set_calibration(cfg.get("calibration") or {})
    return task, tcfg, cfg


def inner_val_outputs(run: Path, variant: str) -> list[tuple[str, np.ndarray, np.ndarray, Letterbox, float, float, float]]:
    """(image, probability map, flip-TTA probability map, letterbox, edge offset px, pixel size
    mm, reference HC mm) per inner-validation image of every fold model."""
    clean = pd.read_csv(run / "data/clean/labels.csv")
    folds = pd.read_csv(run / "data/folds.csv")
    table = clean.merge(folds[["image_name", "fold"]], on="image_name", how="left", validate="one_to_one")
    out = []
    refuse_seed_ensembles(run / "models" / variant)
    for ckpt in sorted((run / "models" / variant).glob("fold*/model.pt")):
        task, tcfg, cfg = load_fold_model(ckpt, variant)
        fold = int(cfg["fold"])
        pool = table[table["fold"] != fold]
        usable = pool[[task.trainable(float(w), bool(m)) for w, m in zip(pool["weight"], pool["mask_path"].fillna("") != "")]]
        _, val = inner_split(usable, tcfg.inner_val_frac, int(cfg["seed"]) + fold)
        offset = float((cfg.get("calibration") or {}).get("edge_offset_px", 0.0))
        for r in val.itertuples(index=False):
            image = read_gray8(run / "data/ingested" / r.image_path).pixels
            lb = Letterbox.fit((image.shape[1], image.shape[0]), (tcfg.input_width, tcfg.input_height))
            x = torch.from_numpy(normalize(lb.apply(image), tcfg.normalize))[None, None]
            with torch.inference_mode():
                logit, logit_flipped = task.model(torch.cat([x, _flip_in_image(x, lb)]))[:, 0]
                prob = torch.sigmoid(logit).numpy()
                tta = torch.sigmoid((logit + _flip_in_image(logit_flipped, lb)) / 2.0).numpy()
            out.append((f"{r.image_name} (fold {fold})", np.clip(prob, 0.0, 1.0), np.clip(tta, 0.0, 1.0), lb, offset, float(r.pixel_size_mm), float(r.hc_mm)))
    return out


def main(run: Path, variant: str, out_md: Path) -> None:
    items = inner_val_outputs(run, variant)
    rows = []
    for name, prob, tta, lb, offset, spacing, ref_hc in items:
        crops = {False: lb.crop(prob), True: lb.crop(tta)}
        for setting, (method, band, flip) in SETTINGS.items():
            t0 = time.perf_counter()
            res = mask_to_ellipse(crops[flip], method=method, inlier_threshold_px=band, refine=False)
            ms = (time.perf_counter() - t0) * 1e3
            err = np.nan
            if res.ok:
                e = transform_ellipse(res.ellipse, lb.crop_to_original())
                e = shrink_ellipse(e, offset) if offset else e
                err = float(ramanujan_perimeter(e.a, e.b)) * spacing - ref_hc
            rows.append({"image": name, "setting": setting, "hc_err_mm": err, "ms": ms})
    d = pd.DataFrame(rows)
    lines = [
        f"# Ellipse-fit settings on the inner-validation images of `{variant}`",
        "",
        f"Written by `python scripts/compare_fits.py {run} {variant} {out_md}`: {d['image'].nunique()} inner-validation images "
        "of the fold models (each image measured by a model that did not train on it, and never the fold it is evaluated on). "
        "HC error against the sonographer; the band is in network-input pixels; failed = the fit was rejected; "
        "fit ms excludes the second forward pass that flip TTA needs.",
        "",
        "| setting | HC MAE mm | median AE mm | bias mm | 95th pct AE mm | max AE mm | failed | fit ms (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        s = d[d["setting"] == setting]
        ae = s["hc_err_mm"].abs()
        lines.append(
            f"| {setting} | {ae.mean():.3f} | {ae.median():.3f} | {s['hc_err_mm'].mean():.3f} | {ae.quantile(0.95):.2f} | "
            f"{ae.max():.1f} | {int(s['hc_err_mm'].isna().sum())} | {s['ms'].median():.2f} |"
        )
    write_report(out_md, lines)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    torch.set_num_threads(2)
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
