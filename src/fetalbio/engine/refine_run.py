"""The ``refine`` stage's library call: a first stage's held-out predictions, refined.

For every fold ``k`` of a first-stage variant, the coarse ellipses of its out-of-fold
predictions (``models/<variant>/fold<k>/oof.csv``) are refined by the refinement network of the
same fold (``models/refine/fold<k>``), which never saw fold ``k``; so the refined predictions
are out-of-fold too. They are written in the same layout (``fold<k>/oof.csv``, ``masks/``), so
``evaluate`` and ``compare`` treat ``<variant>_refined`` like any variant.

Each fold's ``summary.json`` also reports how far the coarse ellipses were from the reference
ones (centre shift over the semi-major axis, log scale, angle): the spreads that the refinement
training's jitter (``variants.refine.crop.jitter``) has to cover.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fetalbio import POINT_COLUMNS, UNC_COLUMNS
from fetalbio.engine.run import write_heldout
from fetalbio.geometry.masks import reference_ellipse
from fetalbio.io import OOF_FILE, oof_folds, read_gray8, read_mask, read_oof, write_json
from fetalbio.model_file import MODEL_FILE, load_stage, read_model_file
from fetalbio.tasks import ImagePrediction, RefineTask, prediction_ellipse
from fetalbio.tasks.refine import check_combine, check_passes, check_tta


def load_refine_networks(fold_dir: Path, fold: int | None = None, device: torch.device | str = "cpu") -> tuple[RefineTask, list[torch.nn.Module]]:
    """The refinement task (with its calibration) and network(s) of one fold folder, rebuilt by
    the model file's stage loader (:func:`~fetalbio.model_file.load_stage`)."""
    path = Path(fold_dir) / MODEL_FILE
    raw = read_model_file(path)
    st = raw["stages"][0]
    if [s["role"] for s in raw["stages"]] != ["refine"]:
        raise ValueError(f"{path}: holds variant {st['variant']!r}, not the refinement stage")
    held_out = raw.get("provenance", {}).get("fold")
    if fold is not None and held_out != fold:
        raise ValueError(f"{path}: trained with fold {held_out} held out, asked to refine fold {fold}")
    stage = load_stage(path, st, device)
    return stage.tasks[0], [t.model for t in stage.tasks]


def coarse_prediction(row: pd.Series, mask_file: Path | None) -> ImagePrediction:
    """A first stage's held-out prediction rebuilt from its ``oof.csv`` row."""
    pts = row[list(POINT_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 2)
    unc = row[UNC_COLUMNS].to_numpy(dtype=np.float64)
    status = str(row["status"])
    factory = None
    if mask_file is not None:
        def factory(path=mask_file):
            return read_mask(path, optional=True)
    extra = {"fit_residual_px": float(row.get("fit_residual_px", np.nan))}
    reason = row["reason"] if isinstance(row["reason"], str) else ""
    return ImagePrediction(pts, unc, status, reason, extra=extra, mask_factory=factory)


def ellipse_errors(coarse: ImagePrediction, mask01: np.ndarray | None) -> dict[str, float] | None:
    """How far a coarse ellipse is from the reference mask's: centre shift / a, log(a/a_ref),
    angle (degrees, folded into [-90, 90))."""
    e = prediction_ellipse(coarse)
    ref = reference_ellipse(mask01) if mask01 is not None else None
    if e is None or ref is None:
        return None
    dth = (math.degrees(e.theta - ref.theta) + 90.0) % 180.0 - 90.0
    return {"centre_frac": float(np.hypot(e.cx - ref.cx, e.cy - ref.cy) / ref.a), "log_scale": math.log(e.a / ref.a), "angle_deg": dth}


def _spread(errs: list[dict[str, float]]) -> dict[str, Any]:
    if not errs:
        return {}
    df = pd.DataFrame(errs)
    return {
        "n": int(len(df)),
        # per-axis centre spread (the jitter draws each axis): the radial RMS over sqrt(2)
        "centre_frac_axis_rms": float(np.sqrt(np.mean(df["centre_frac"] ** 2) / 2.0)),
        "log_scale_rms": float(np.sqrt(np.mean(df["log_scale"] ** 2))),
        "angle_deg_rms": float(np.sqrt(np.mean(df["angle_deg"] ** 2))),
        "centre_frac_p90": float(np.quantile(df["centre_frac"], 0.9)),
        "abs_log_scale_p90": float(np.quantile(df["log_scale"].abs(), 0.9)),
        "abs_angle_deg_p90": float(np.quantile(df["angle_deg"].abs(), 0.9)),
    }


def refine_heldout(clean: pd.DataFrame, table_dir: Path, coarse_dir: Path, refine_dir: Path, out_dir: Path, batch_size: int = 16,
                   passes: int | None = None, combine: str | None = None, tta: str | None = None) -> dict[str, Any]:  # long: per fold, read, rebuild the coarse predictions, refine, write; one loop reads best
    """Refine every fold of ``coarse_dir`` with the same fold of ``refine_dir``; write
    ``out_dir/fold<k>/{oof.csv,masks/,summary.json}``; return the summary over folds.
    ``passes``, ``combine``, ``tta``: instead of the trained ``crop.passes`` /
    ``crop.combine`` / ``crop.tta`` (to measure another setting without retraining)."""
    passes = None if passes is None else check_passes(passes)
    combine = None if combine is None else check_combine(combine)
    tta = None if tta is None else check_tta(tta)
    folds = oof_folds(coarse_dir)
    if not folds:
        raise FileNotFoundError(f"no fold*/oof.csv under {coarse_dir}: train the first stage first")
    by_name = clean.set_index("image_name")
    totals = {"n_images": 0, "n_refined": 0, "n_kept_coarse": 0, "kept_reasons": {}}
    for fold_dir in folds:
        fold = int(fold_dir.name[len("fold"):])
        task, nets = load_refine_networks(Path(refine_dir) / f"fold{fold}", fold)
        if passes is not None:
            task.passes = passes
        if combine is not None:
            task.combine = combine
        if tta is not None:
            task.tta = tta
        oof = read_oof(fold_dir)
        missing = sorted(set(oof["image_name"]) - set(by_name.index))
        if missing:
            raise ValueError(f"{fold_dir / OOF_FILE}: image(s) not in the cleaned table: {missing[:5]}")
        preds: list[ImagePrediction] = []
        errs = []
        for start in range(0, len(oof), batch_size):
            chunk = oof.iloc[start : start + batch_size]
            images, coarse = [], []
            for _, r in chunk.iterrows():
                ref = by_name.loc[r["image_name"]]
                images.append(read_gray8(Path(table_dir) / ref["image_path"]).pixels)
                mp = r["mask_path"] if isinstance(r["mask_path"], str) and r["mask_path"] else None
                c = coarse_prediction(r, fold_dir / mp if mp else None)
                coarse.append(c)
                ref_mask = ref.get("mask_path", "")
                if isinstance(ref_mask, str) and ref_mask:
                    err = ellipse_errors(c, read_mask(Path(table_dir) / ref_mask, optional=True))
                    if err is not None:
                        errs.append(err)
            preds.extend(task.follow(images, coarse, nets=nets, batch_size=batch_size))
        out_fold = Path(out_dir) / f"fold{fold}"
        rows = oof[["image_name"]].reset_index(drop=True)
        for p in preds:  # a coarse prediction kept as it was says why in its reason
            why = p.extra.get("refine", "")
            if why and p.status == "ok":
                p.reason = why
        write_heldout(out_fold, rows, preds, fold, with_masks=True)
        kept = [p.extra.get("refine", "") for p in preds if "coarse_ellipse" not in p.extra]
        summary = {
            "fold": fold,
            "first_stage": str(coarse_dir),
            "n_images": len(preds),
            "n_refined": int(sum("coarse_ellipse" in p.extra for p in preds)),
            "n_kept_coarse": len(kept),
            # counted by kind (the rows' own reasons keep the numbers)
            "kept_reasons": pd.Series([(k or "coarse failed").split(" (")[0] for k in kept], dtype=object).value_counts().to_dict() if kept else {},
            "passes": task.passes,
            "tta": task.tta,
            "calibration": {"edge_offset_px": task.edge_offset_px, "edge_offset_per_crop_px": task.edge_offset_per_crop_px},
            "coarse_ellipse_errors": _spread(errs),
        }
        write_json(out_fold / "summary.json", summary)
        totals["n_images"] += summary["n_images"]
        totals["n_refined"] += summary["n_refined"]
        totals["n_kept_coarse"] += summary["n_kept_coarse"]
        for k, v in summary["kept_reasons"].items():
            totals["kept_reasons"][k] = totals["kept_reasons"].get(k, 0) + int(v)
    return totals
