"""Seed noise and a seed ensemble of a segmentation variant, out-of-fold.

Usage: python scripts/seed_ensemble.py RUN_DIR VARIANT OUT_MD EXTRA_DIR [EXTRA_DIR ...]

RUN_DIR is a checkout where `dvc repro` ran on the full dataset (it has data/clean/labels.csv,
data/folds.csv, data/ingested and models/VARIANT/fold*/model.pt). Each EXTRA_DIR holds
fold<k>/model.pt of the same variant and configuration trained with another `seed`, on the
same folds:

    fetalbio train --params PARAMS_WITH_OTHER_SEED --variant VARIANT --fold K \
        --labels RUN_DIR/data/clean/labels.csv --folds RUN_DIR/data/folds.csv \
        --images-root RUN_DIR/data/ingested --out-dir EXTRA_DIR/foldK

(the seed moves the initialisation, the augmentation draws and the inner split; the folds and
the cleaned labels stay those of RUN_DIR). For every fold that all members have, each held-out
image is run through every member. The table in OUT_MD gives the HC error against the
sonographer:
- of each member alone, decoded by `SegmentationTask.decode` (the pipeline's decode), and
- of the members' ensemble: the mean of their raw outputs, as `Predictor` and
  `final.source: folds` average an ensemble, decoded with the first member's calibration.

Every image is measured by models that did not train on it. The per-image errors go to OUT_MD
with a .csv suffix, and the ensemble's gain over the pipeline run gets a subject-bootstrap
interval.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from compare_fits import load_fold_model, refuse_seed_ensembles, write_report  # scripts/ is on sys.path when run as a script
from fetalbio.reporting.runs import RunErrors, compare_runs
from fetalbio.config import TrainConfig
from fetalbio.data.io import read_gray8
from fetalbio.data.transforms import Letterbox, normalize
from fetalbio.geometry.ellipse import ramanujan_perimeter
from fetalbio.tasks.base import ImagePrediction, Task


def load_member(ckpt: Path, variant: str, fold: int) -> tuple[Task, TrainConfig]:
    task, tcfg, cfg = load_fold_model(ckpt, variant)
    if int(cfg["fold"]) != fold:
        sys.exit(f"{ckpt}: a fold-{cfg['fold']} checkpoint, expected fold {fold}")
    return task, tcfg


def hc_error(p: ImagePrediction, spacing_mm: float, ref_hc_mm: float) -> float:
    """Predicted minus reference HC (mm); NaN for a failed image."""
    if p.status != "ok":
        return float("nan")
    a = np.linalg.norm(p.points[1] - p.points[0]) / 2.0
    b = np.linalg.norm(p.points[3] - p.points[2]) / 2.0
    return float(ramanujan_perimeter(a, b)) * spacing_mm - ref_hc_mm


def main(run: Path, variant: str, out_md: Path, extras: list[Path]) -> None:
    clean = pd.read_csv(run / "data/clean/labels.csv")
    folds = pd.read_csv(run / "data/folds.csv")
    table = clean.merge(folds[["image_name", "fold"]], on="image_name", how="left", validate="one_to_one")
    member_dirs = [run / "models" / variant, *extras]
    names = ["pipeline run", *(str(d) for d in extras)]
    if len(set(names)) != len(names):
        sys.exit(f"the same models folder is given twice: {', '.join(names[1:])}")
    for d in member_dirs:
        refuse_seed_ensembles(d)
    fold_dir = re.compile(r"fold(\d+)")
    ks = sorted({int(m.group(1)) for p in member_dirs[0].glob("fold*/model.pt") if (m := fold_dir.fullmatch(p.parent.name))})
    ks = [k for k in ks if all((d / f"fold{k}" / "model.pt").is_file() for d in member_dirs)]
    if not ks:
        sys.exit(f"no fold has a model.pt in every one of {', '.join(map(str, member_dirs))}")
    rows = []
    for k in ks:
        members = [load_member(d / f"fold{k}" / "model.pt", variant, k) for d in member_dirs]
        inputs = {(t.input_width, t.input_height, t.normalize) for _, t in members}
        if len(inputs) != 1:
            sys.exit(f"fold {k}: the members differ in input size or normalisation {sorted(inputs)}")
        tcfg = members[0][1]
        for r in table[table["fold"] == k].itertuples(index=False):
            image = read_gray8(run / "data/ingested" / r.image_path).pixels
            lb = Letterbox.fit((image.shape[1], image.shape[0]), (tcfg.input_width, tcfg.input_height))
            x = torch.from_numpy(normalize(lb.apply(image), tcfg.normalize))[None, None]
            with torch.inference_mode():
                outs = [task.model(x) for task, _ in members]
            row = {"image": r.image_name, "fold": k}
            for name, (task, _), out in zip(names, members, outs):
                row[name] = hc_error(task.decode(out, [lb])[0], float(r.pixel_size_mm), float(r.hc_mm))
            ens = members[0][0].decode(torch.stack(outs).mean(0), [lb])[0]
            row["ensemble"] = hc_error(ens, float(r.pixel_size_mm), float(r.hc_mm))
            rows.append(row)
    d = pd.DataFrame(rows)
    cols = [*names, "ensemble"]
    lines = [
        f"# Seed noise and seed ensemble of `{variant}`, out-of-fold",
        "",
        f"Written by `python scripts/seed_ensemble.py {run} {variant} {out_md} {' '.join(map(str, extras))}`: "
        f"{len(d)} held-out images of folds {', '.join(map(str, ks))}. HC MAE against the sonographer (mm); "
        "`ensemble` is the mean of the members' raw outputs, decoded once. A failed fit is left out of the MAE "
        "and counted in the `failed` row; the `same images` rows use only the images that every column measured.",
        "",
        "| fold | images | " + " | ".join(f"`{c}`" for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for k, g in d.groupby("fold"):
        lines.append(f"| {k} | {len(g)} | " + " | ".join(f"{g[c].abs().mean():.3f}" for c in cols) + " |")
    lines.append(f"| all (MAE) | {len(d)} | " + " | ".join(f"**{d[c].abs().mean():.3f}**" for c in cols) + " |")
    lines.append("| all (median AE) | | " + " | ".join(f"{d[c].abs().median():.3f}" for c in cols) + " |")
    lines.append("| all (bias) | | " + " | ".join(f"{d[c].mean():.3f}" for c in cols) + " |")
    lines.append("| all (95th pct AE) | | " + " | ".join(f"{d[c].abs().quantile(0.95):.2f}" for c in cols) + " |")
    lines.append("| failed | | " + " | ".join(str(int(d[c].isna().sum())) for c in cols) + " |")
    same = d.dropna(subset=cols)
    lines.append(f"| same images (MAE) | {len(same)} | " + " | ".join(f"{same[c].abs().mean():.3f}" for c in cols) + " |")
    lines.append("| same images (95th pct AE) | | " + " | ".join(f"{same[c].abs().quantile(0.95):.2f}" for c in cols) + " |")
    ref = same["image"].map(table.set_index("image_name")["hc_mm"])

    def as_run(col: str) -> RunErrors:
        return RunErrors(col, out_md, pd.DataFrame({"image_name": same["image"], "fold": same["fold"], "hc_err_mm": same[col], "ref_hc_mm": ref}))

    p = compare_runs(as_run("ensemble"), as_run("pipeline run"), n_boot=2000, seed=0)["paired"]  # as `fetalbio compare-runs`
    lo, hi = p["mae_diff_ci95"]
    lines += [
        "",
        f"Ensemble minus `pipeline run`, paired on the {p['n_images']} same images: MAE difference {p['mae_diff']:+.3f} mm, "
        f"95 % interval {lo:+.3f} to {hi:+.3f} mm (2000 bootstrap resamples of subjects, seed 0); image-level Wilcoxon "
        f"p = {p['wilcoxon_p']:.3g}. Per-image errors: `{out_md.with_suffix('.csv').name}`.",
    ]
    write_report(out_md, lines)
    d.to_csv(out_md.with_suffix(".csv"), index=False, float_format="%.6g")


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    torch.set_num_threads(2)
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), [Path(a) for a in sys.argv[4:]])
