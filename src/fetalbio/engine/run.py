"""Train one variant on one fold and write its outputs (the ``train`` stages' library call).

Splits: the held-out fold ``k`` is never seen during training; it only receives out-of-fold
predictions. Early stopping and best-checkpoint selection use an *inner* validation split: a
seeded, subject-grouped share (``train.inner_val_frac``) of the training folds. So the
out-of-fold numbers are not tuned on the rows they score.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank trains (DistributedDataParallel) and rank 0
alone predicts the held-out fold and writes the outputs; see :mod:`fetalbio.engine.distributed`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit

from fetalbio import POINT_COLUMNS, POINT_NAMES
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.data.io import write_png
from fetalbio.engine import distributed as ddp
from fetalbio.engine.dataset import BiometryDataset
from fetalbio.engine.distributed import DistContext
from fetalbio.engine.train import FitResult, clear_resume, fit, predict, save_checkpoint, seed_everything, select_device
from fetalbio.metrics.landmarks import mre, radial_errors
from fetalbio.metrics.segmentation import dice
from fetalbio.reporting import write_csv, write_json
from fetalbio.tasks import ImagePrediction, Task, build_task
from fetalbio.variants import get_variant

UNC_COLUMNS = [f"unc_{p}" for p in POINT_NAMES]
PREDICTION_COLUMNS = ["image_name", "fold", *POINT_COLUMNS, *UNC_COLUMNS, "status", "reason", "mask_path", "fit_residual_px"]


def inner_split(pool: pd.DataFrame, frac: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Subject-grouped (train, inner-val) split of the training pool."""
    if pool["subject_id"].nunique() < 2:
        raise ValueError("need at least 2 subjects in the training folds for an inner validation split")
    gss = GroupShuffleSplit(n_splits=1, test_size=frac, random_state=seed)
    tr, va = next(gss.split(pool, groups=pool["subject_id"]))
    return pool.iloc[tr].reset_index(drop=True), pool.iloc[va].reset_index(drop=True)


def predictions_frame(rows: pd.DataFrame, preds: list[ImagePrediction], fold: int, mask_paths: list[str]) -> pd.DataFrame:
    recs = []
    for (_, r), p, mp in zip(rows.iterrows(), preds, mask_paths):
        recs.append({
            "image_name": r["image_name"],
            "fold": fold,
            **dict(zip(POINT_COLUMNS, p.points.reshape(-1))),
            **dict(zip(UNC_COLUMNS, p.uncertainty)),
            "status": p.status,
            "reason": p.reason,
            "mask_path": mp,
            "fit_residual_px": p.extra.get("fit_residual_px", np.nan),
        })
    return pd.DataFrame(recs, columns=PREDICTION_COLUMNS)


def _score_fn(task: Task, val: BiometryDataset):
    """Lower is better: MRE (original px) for landmarks, 1 - Dice (original grid) for masks."""
    if task.family == "landmark":
        ref = np.stack([s.letterbox.to_original(s.points) for s in val.samples])

        def score(preds: list[ImagePrediction]) -> float:
            pts = np.stack([p.points for p in preds])
            err = radial_errors(pts, ref)["px"]
            return float(mre(err)) if np.isfinite(err).any() else float("inf")

        return score
    refs = [s.letterbox.unapply(s.mask.astype(np.float32)) >= 0.5 for s in val.samples]

    def score(preds: list[ImagePrediction]) -> float:
        return 1.0 - float(np.mean([dice(p.full_mask(), r) for p, r in zip(preds, refs)]))

    return score


def table_hash(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()[:16]


def resume_key(variant: str, vcfg: VariantConfig, tcfg: TrainConfig, seed: int, fold: int, tr_rows: pd.DataFrame, va_rows: pd.DataFrame) -> str:
    """Identity of one fold's training: a resume file is only used by the same training."""
    cols = ["image_name", "image_sha256", *POINT_COLUMNS, "weight", "mask_path"]  # image_sha256: pixels changed under the same name
    blob = json.dumps({
        "variant": variant,
        "variant_cfg": dataclasses.asdict(vcfg),
        "train_cfg": {k: v for k, v in dataclasses.asdict(tcfg).items() if k != "progress"},
        "seed": seed,
        "fold": fold,
        "train_rows": table_hash(tr_rows[[c for c in cols if c in tr_rows]]),
        "val_rows": table_hash(va_rows[[c for c in cols if c in va_rows]]),
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_resume_dir(variant: str, fold: int) -> Path:
    """Where ``fetalbio train`` keeps a fold's resume file: outside ``models/`` (DVC deletes a
    stage's outs before it reruns it, and later stages depend on the whole ``models/``)."""
    return Path(".resume") / variant / f"fold{fold}"


@contextmanager
def _process_group(dctx: DistContext, tcfg: TrainConfig) -> Iterator[torch.device | None]:
    """Join (and afterwards leave) the torchrun process group; yields the rank's device, or None
    for a single process (the device is then chosen as usual)."""
    if not dctx.enabled:
        yield None
        return
    device, created = ddp.setup(dctx, select_device(tcfg))
    try:
        yield device
    finally:
        ddp.teardown(created)


def train_fold(
    clean: pd.DataFrame,
    folds: pd.DataFrame,
    table_dir: Path,
    variant: str,
    vcfg: VariantConfig,
    tcfg: TrainConfig,
    fold: int,
    seed: int,
    out_dir: Path,
    resume_dir: Path | None = None,
) -> dict[str, Any]:
    """Train ``variant`` on all folds but ``fold``; write into ``out_dir``: ``model.pt``,
    ``oof.csv`` (held-out predictions), ``masks/`` (segmentation), ``dvclive/``, ``summary.json``.
    ``resume_dir``: where :func:`fit` keeps its per-epoch resume file (None: none is written).

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) this joins the process
    group (unless the caller already did), trains with DistributedDataParallel, lets rank 0 alone
    write every output and the resume file while the other ranks wait, and leaves the group it
    joined. Every rank returns rank 0's summary."""
    dctx = DistContext.from_env()
    with _process_group(dctx, tcfg) as device:
        spec = get_variant(variant)
        table = clean.merge(folds[["image_name", "fold"]], on="image_name", how="left", validate="one_to_one")
        if table["fold"].isna().any():
            missing = table.loc[table["fold"].isna(), "image_name"].tolist()[:5]
            raise ValueError(f"{len(missing)}+ cleaned rows have no fold (e.g. {missing}); rerun build_folds")
        if fold not in set(table["fold"]):
            raise ValueError(f"fold {fold} does not exist; folds are {sorted(set(table['fold']))}")
        seed_everything(seed)
        if device is None:
            device = select_device(tcfg)
        task = build_task(variant, vcfg, tcfg)
        held = table[table["fold"] == fold].reset_index(drop=True)
        pool = table[table["fold"] != fold]
        usable = pool[[task.trainable(float(w), bool(m)) for w, m in zip(pool["weight"], pool["mask_path"].fillna("") != "")]]
        tr_rows, va_rows = inner_split(usable, tcfg.inner_val_frac, seed + fold)
        train_ds = BiometryDataset(tr_rows, table_dir, task, tcfg, train=True, seed=seed + fold)
        val_ds = BiometryDataset(va_rows, table_dir, task, tcfg, train=False)
        # training rows only, never the held-out fold; rank 0 alone decodes and writes, so only it calibrates
        calibration = task.calibrate(usable, table_dir) if dctx.is_main else None

        from dvclive import Live

        key = resume_key(variant, vcfg, tcfg, seed, fold, tr_rows, va_rows)
        if not dctx.is_main:  # only rank 0 logs, predicts and writes; the others train, then wait for its summary
            fit(task, train_ds, val_ds, _score_fn(task, val_ds), tcfg, seed + fold, device, None, resume_dir=resume_dir, resume_key=key, dist_ctx=dctx)
            return ddp.broadcast_object(None)
        out_dir.mkdir(parents=True, exist_ok=True)
        with Live(dir=str(out_dir / "dvclive"), save_dvc_exp=False, dvcyaml=None) as live:
            def log(epoch: int, row: dict[str, float]) -> None:
                for k, v in row.items():
                    if k != "epoch":
                        live.log_metric(k, v)
                live.next_step()

            result: FitResult = fit(task, train_ds, val_ds, _score_fn(task, val_ds), tcfg, seed + fold, device, log, resume_dir=resume_dir, resume_key=key, dist_ctx=dctx)

        held_ds = BiometryDataset(held, table_dir, task, tcfg, train=False, with_targets=False)
        preds = predict(task, held_ds, tcfg, device)
        mask_paths = [""] * len(preds)
        if task.family == "segmentation":
            for i, (name, p) in enumerate(zip(held["image_name"], preds)):
                rel = (Path("masks") / name).with_suffix(".png")
                write_png(out_dir / rel, (p.full_mask() > 0).astype(np.uint8) * 255)
                mask_paths[i] = rel.as_posix()
        write_csv(out_dir / "oof.csv", predictions_frame(held, preds, fold, mask_paths))

        config = {
            "variant": variant,
            "spec": dataclasses.asdict(spec),
            "variant_cfg": dataclasses.asdict(vcfg),
            "train_cfg": dataclasses.asdict(tcfg),
            "fold": fold,
            "seed": seed,
            "best_epoch": result.best_epoch,
            "calibration": calibration,
            "training_data_hash": table_hash(tr_rows[["image_name", *POINT_COLUMNS, "weight"]]),
        }
        save_checkpoint(out_dir / "model.pt", task.model, config)
        summary = {
            "variant": variant,
            "family": spec.family,
            "fold": fold,
            "device": device.type,
            "n_train": len(tr_rows),
            "n_inner_val": len(va_rows),
            "n_heldout": len(held),
            "n_failed_heldout": int(sum(p.status != "ok" for p in preds)),
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "resumed_from_epoch": result.resumed_from_epoch,
            "best_inner_val_score": result.best_score,
            "inner_val_score_kind": "mre_px" if spec.family == "landmark" else "one_minus_dice",
            "calibration": calibration,
            "train_seconds": round(result.seconds, 2),
            "train_images_per_s": round(result.train_images_per_s, 2),
            "world_size": dctx.world_size,
            "batch_size_per_process": tcfg.batch_size,
        }
        write_json(out_dir / "summary.json", summary)
        clear_resume(resume_dir)  # only now: a kill while predicting the held-out fold resumes too
        if dctx.enabled:
            summary = ddp.broadcast_object(summary)  # releases the waiting ranks
        return summary
