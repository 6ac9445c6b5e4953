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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from fetalbio import POINT_COLUMNS, UNC_COLUMNS
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.engine import distributed as ddp
from fetalbio.engine.dataset import BiometryDataset
from fetalbio.engine.distributed import DistContext
from fetalbio.engine.train import FitResult, clear_resume, fit, predict, seed_everything, select_device
from fetalbio.io import OOF_FILE, write_csv, write_json, write_png
from fetalbio.model_file import MODEL_FILE, StageWeights, fold_payload, save_model, stage_role
from fetalbio.tasks import ImagePrediction, Task, build_task
from fetalbio.variants import get_variant

PREDICTION_COLUMNS = ["image_name", "fold", *POINT_COLUMNS, *UNC_COLUMNS, "status", "reason", "mask_path", "fit_residual_px"]


def inner_split(pool: pd.DataFrame, frac: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Subject-grouped (train, inner-val) split of the training pool."""
    from sklearn.model_selection import GroupShuffleSplit  # here: the refine stage imports this module but never splits (-2 s start-up)

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


def write_heldout(out_dir: Path, rows: pd.DataFrame, preds: list[ImagePrediction], fold: int, with_masks: bool) -> None:
    """``oof.csv`` (and ``masks/<image>.png`` when the method outputs masks) of a fold."""
    mask_paths = [""] * len(preds)
    if with_masks:
        for i, (name, p) in enumerate(zip(rows["image_name"], preds)):
            mask = p.full_mask()
            if mask is None:
                continue
            rel = (Path("masks") / name).with_suffix(".png")
            write_png(out_dir / rel, (mask > 0).astype(np.uint8) * 255)
            mask_paths[i] = rel.as_posix()
    write_csv(out_dir / OOF_FILE, predictions_frame(rows, preds, fold, mask_paths))


def table_hash(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()[:16]


def resume_key(variant: str, vcfg: VariantConfig, tcfg: TrainConfig, seed: int, fold: int, tr_rows: pd.DataFrame, va_rows: pd.DataFrame) -> str:
    """Identity of one fold's training: a resume file is only used by the same training."""
    cols = ["image_name", "image_sha256", *POINT_COLUMNS, "weight", "mask_path"]  # image_sha256: pixels changed under the same name
    blob = json.dumps({
        "variant": variant,
        # without `seeds`: the member's own seed is below, so a one-network run keeps the key it
        # had before seed ensembles existed, and adding a seed keeps the other members' files
        # nor an empty `crop` (a setting of the refinement stage): older keys stay valid
        "variant_cfg": {k: v for k, v in dataclasses.asdict(vcfg).items() if k != "seeds" and not (k == "crop" and not v)},
        "train_cfg": {k: v for k, v in dataclasses.asdict(tcfg).items() if k != "progress"},
        "seed": seed,
        "fold": fold,
        "train_rows": table_hash(tr_rows[[c for c in cols if c in tr_rows]]),
        "val_rows": table_hash(va_rows[[c for c in cols if c in va_rows]]),
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_resume_dir(variant: str, fold: int) -> Path:
    """Where ``python stages/train.py`` keeps a fold's resume file: outside ``models/`` (DVC deletes a
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


@dataclass
class TrainedNetwork:
    """One trained network (a seed ensemble has several per fold)."""

    seed: int
    task: Task
    tr_rows: pd.DataFrame
    va_rows: pd.DataFrame
    result: FitResult | None
    calibration: dict | None  # None on ranks other than 0


def make_dataset(task: Task, rows: pd.DataFrame, table_dir: Path, tcfg: TrainConfig, train: bool, seed: int = 0, with_targets: bool = True):
    """The dataset that feeds ``task`` (its own ``dataset_class``, else letterboxed images)."""
    cls = task.dataset_class or BiometryDataset
    return cls(rows, table_dir, task, tcfg, train, seed=seed, with_targets=with_targets)


def train_network(
    pool: pd.DataFrame, table_dir: Path, variant: str, vcfg: VariantConfig, tcfg: TrainConfig, seed: int, fold: int | None, device: torch.device,
    dctx: DistContext | None = None, calibration: dict | None = None, log_dir: Path | None = None, resume_dir: Path | None = None,
) -> TrainedNetwork:
    """The one way a network is trained, for a fold model and for the exported refit alike.

    ``pool``: the rows it may learn from (every fold but ``fold``; all cleaned rows for a refit,
    ``fold=None``); the task keeps those it can use, a seeded subject-grouped share of them is
    the inner-validation split for early stopping. Trained exactly as a run with top-level
    ``seed`` (initialisation, inner split and augmentation draws; the split and the draws are
    offset by the fold). ``calibration``: set it instead of measuring it on the usable rows
    (the members of a fold share their training rows, so their calibration too). ``log_dir``:
    dvclive folder (None: no log); ``resume_dir``: per-epoch resume file (None: none)."""
    dctx = dctx if dctx is not None else DistContext.from_env()
    offset = seed + (fold if fold is not None else 0)
    seed_everything(seed)
    task = build_task(variant, vcfg, tcfg)
    usable = task.usable(pool)
    tr_rows, va_rows = inner_split(usable, tcfg.inner_val_frac, offset)
    train_ds = make_dataset(task, tr_rows, table_dir, tcfg, train=True, seed=offset)
    val_ds = make_dataset(task, va_rows, table_dir, tcfg, train=False)
    if calibration is not None:
        task.set_calibration(calibration)
    elif dctx.is_main:  # training rows only, never the held-out fold; rank 0 alone decodes, so only it calibrates
        calibration = task.calibrate(usable, table_dir)
    key = resume_key(variant, vcfg, tcfg, seed, fold if fold is not None else -1, tr_rows, va_rows)
    args = (task, train_ds, val_ds, task.score_fn(val_ds), tcfg, offset, device)
    if log_dir is None or not dctx.is_main:
        result = fit(*args, None, resume_dir=resume_dir, resume_key=key, dist_ctx=dctx)
        return TrainedNetwork(seed, task, tr_rows, va_rows, result if dctx.is_main else None, calibration)

    from dvclive import Live

    with Live(dir=str(log_dir), save_dvc_exp=False, dvcyaml=None) as live:
        def log(epoch: int, row: dict[str, float]) -> None:
            for k, v in row.items():
                if k != "epoch":
                    live.log_metric(k, v)
            live.next_step()

        result = fit(*args, log, resume_dir=resume_dir, resume_key=key, dist_ctx=dctx)
    return TrainedNetwork(seed, task, tr_rows, va_rows, result, calibration)


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
) -> dict[str, Any]:  # long: 15 lines of docstring
    """Train ``variant`` on all folds but ``fold``; write into ``out_dir``: ``model.pt`` (a
    one-stage model file, :func:`~fetalbio.model_file.fold_payload`), ``oof.csv`` (held-out predictions), ``masks/`` (segmentation), ``dvclive/``, ``summary.json``.
    ``resume_dir``: where :func:`fit` keeps its per-epoch resume file (None: none is written).

    A seed ensemble (``vcfg.seeds`` with more than one seed) trains one network per seed, one
    after the other, each as a run with that top-level ``seed`` would; ``model.pt`` holds their
    state dicts in seed order; the first logs to ``dvclive/``, the others to
    ``dvclive_seed<s>/`` (and resume files under ``resume_dir/seed<s>``). The held-out
    predictions decode the mean of their raw outputs, as ``predict`` does with the exported
    ensemble.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) this joins the process
    group (unless the caller already did), trains with DistributedDataParallel, lets rank 0 alone
    write every output and the resume file while the other ranks wait, and leaves the group it
    joined. Every rank returns rank 0's summary."""
    dctx = DistContext.from_env()
    with _process_group(dctx, tcfg) as device:
        family = get_variant(variant).family
        table = _fold_table(clean, folds, fold)
        seeds = vcfg.member_seeds(seed)
        if device is None:
            device = select_device(tcfg)
        held = table[table["fold"] == fold].reset_index(drop=True)
        member_resume_dirs = [resume_dir if resume_dir is None or len(seeds) == 1 else Path(resume_dir) / f"seed{s}" for s in seeds]
        members = _train_members(table, table_dir, variant, vcfg, tcfg, seeds, fold, device, dctx, out_dir, member_resume_dirs)
        if not dctx.is_main:  # only rank 0 predicts and writes; the others trained, now they wait for its summary
            return ddp.broadcast_object(None)

        task, calibration = members[0].task, members[-1].calibration
        preds: list[ImagePrediction] = []
        if task.standalone:  # a second stage has no held-out predictions of its own (the `refine` stage makes them)
            held_ds = make_dataset(task, held, table_dir, tcfg, train=False, with_targets=False)
            preds = predict(task, held_ds, tcfg, device, models=[m.task.model for m in members])
            write_heldout(out_dir, held, preds, fold, with_masks=task.needs_mask)

        stage = StageWeights(stage_role(variant), variant, vcfg, tcfg, [m.task.model.state_dict() for m in members], calibration or {})
        save_model(out_dir / MODEL_FILE, fold_payload(stage, {
            "fold": fold, "member_seeds": [m.seed for m in members], "best_epochs": [m.result.best_epoch for m in members],
            "training_data_hash": [table_hash(m.tr_rows[["image_name", *POINT_COLUMNS, "weight"]]) for m in members],
        }))
        summary = _fold_summary(variant, family, fold, device, tcfg, dctx, members, held, preds)
        write_json(out_dir / "summary.json", summary)
        # only now: a kill while predicting the held-out fold resumes too
        for d in member_resume_dirs:
            clear_resume(d)
        if len(seeds) > 1:
            clear_resume(resume_dir)  # the members' parent folder, when left empty
        if dctx.enabled:
            summary = ddp.broadcast_object(summary)  # releases the waiting ranks
        return summary


def _fold_table(clean: pd.DataFrame, folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The cleaned rows with their fold; every row must have one and ``fold`` must exist."""
    table = clean.merge(folds[["image_name", "fold"]], on="image_name", how="left", validate="one_to_one")
    if table["fold"].isna().any():
        missing = table.loc[table["fold"].isna(), "image_name"].tolist()[:5]
        raise ValueError(f"{len(missing)}+ cleaned rows have no fold (e.g. {missing}); rerun build_folds")
    if fold not in set(table["fold"]):
        raise ValueError(f"fold {fold} does not exist; folds are {sorted(set(table['fold']))}")
    return table


def _train_members(table: pd.DataFrame, table_dir: Path, variant: str, vcfg: VariantConfig, tcfg: TrainConfig, seeds: list[int], fold: int,
                   device: torch.device, dctx: DistContext, out_dir: Path, resume_dirs: list[Path | None]) -> list[TrainedNetwork]:
    """One network per seed on every fold but ``fold``, one after the other; the first measures
    the calibration, the others take it; rank 0 logs to ``dvclive/`` (``dvclive_seed<s>/``)."""
    members: list[TrainedNetwork] = []
    calibration: dict | None = None
    for i, (s, own_resume) in enumerate(zip(seeds, resume_dirs)):
        log_dir = (out_dir / ("dvclive" if i == 0 else f"dvclive_seed{s}")) if dctx.is_main else None
        if log_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        m = train_network(table[table["fold"] != fold], table_dir, variant, vcfg, tcfg, s, fold, device, dctx, calibration, log_dir, own_resume)
        members.append(m)
        calibration = m.calibration
    return members


def _fold_summary(variant: str, family: str, fold: int, device: torch.device, tcfg: TrainConfig, dctx: DistContext, members: list[TrainedNetwork],
                  held: pd.DataFrame, preds: list[ImagePrediction]) -> dict[str, Any]:
    """``summary.json`` of a fold: the first network's figures (and each member's, for an ensemble)."""
    first = members[0]
    summary = {
        "variant": variant, "family": family, "fold": fold, "device": device.type,
        "n_train": len(first.tr_rows), "n_inner_val": len(first.va_rows), "n_heldout": len(held), "n_failed_heldout": int(sum(p.status != "ok" for p in preds)),
        "best_epoch": first.result.best_epoch, "epochs_run": first.result.epochs_run, "resumed_from_epoch": first.result.resumed_from_epoch,
        "best_inner_val_score": first.result.best_score, "inner_val_score_kind": first.task.score_kind, "calibration": members[-1].calibration,
        "train_seconds": round(sum(m.result.seconds for m in members), 2), "train_images_per_s": round(first.result.train_images_per_s, 2),
        "world_size": dctx.world_size, "batch_size_per_process": tcfg.batch_size,
    }
    if len(members) > 1:
        summary["member_seeds"] = [m.seed for m in members]
        summary["members"] = [
            {"seed": m.seed, "n_train": len(m.tr_rows), "n_inner_val": len(m.va_rows),
             "best_epoch": m.result.best_epoch, "epochs_run": m.result.epochs_run, "resumed_from_epoch": m.result.resumed_from_epoch,
             "best_inner_val_score": m.result.best_score, "train_seconds": round(m.result.seconds, 2)}
            for m in members
        ]
    return summary
