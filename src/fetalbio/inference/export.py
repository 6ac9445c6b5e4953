"""The ``final`` stage's library call: pick a variant, train it on every cleaned row (or gather
its fold models), and export a self-describing model file with its model card.

Which variant: ``auto`` takes the best of the comparison by HC mean absolute error against the
sonographer (``metrics/compare.json``, out-of-fold numbers), or a named variant.

``source: refit`` trains the variant once more on all usable cleaned rows, with the same
subject-grouped inner split for early stopping as the fold models (so 1 - inner_val_frac of the
rows fit the weights). ``source: folds`` exports the K fold models as an ensemble (their raw
outputs are averaged): no training, K times the inference cost. A seed ensemble
(``variants.<name>.seeds``) is refit once per seed and exported as that many networks; with
``folds`` every member of every fold is exported.

The ``uncertain`` flag of ``fetalbio predict`` fires above the ``uncertain_quantile`` of the
per-image uncertainties the variant produced on held-out folds (so about 1 - q of images like
the training data are flagged); variants without an uncertainty never flag ``uncertain``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fetalbio import POINT_COLUMNS, __version__
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.engine.dataset import BiometryDataset
from fetalbio.engine.run import UNC_COLUMNS, _score_fn, inner_split, member_checkpoints, table_hash
from fetalbio.engine.train import fit, load_checkpoint, seed_everything, select_device
from fetalbio.inference.model_file import model_payload, save_model
from fetalbio.tasks import build_task
from fetalbio.variants import get_variant

SELECTION_METRIC = "HC MAE mm"


def choose_variant(compare: dict[str, Any], requested: str, candidates: list[str]) -> str:
    """``requested`` if it names a variant of ``candidates``; for ``auto`` the best variant of
    the comparison by :data:`SELECTION_METRIC` (ties: the first listed)."""
    if requested != "auto":
        if requested not in candidates:
            raise ValueError(f"final.variant {requested!r} is not among the trained variants ({', '.join(candidates)})")
        return requested
    best = compare.get("best", {}).get(SELECTION_METRIC)
    if isinstance(best, str):
        best = [best]
    if not best:
        raise ValueError(f"metrics/compare.json names no best variant for {SELECTION_METRIC!r} (did every variant fail?)")
    if best[0] not in candidates:
        raise ValueError(f"the best variant {best[0]!r} of compare.json is not among the trained variants ({', '.join(candidates)}); rerun compare")
    return best[0]


def uncertainty_threshold(oof: pd.DataFrame, quantile: float) -> float | None:
    """The ``quantile`` of the per-image mean point uncertainty over successful held-out rows;
    None when the variant reports none."""
    ok = oof[oof["status"] == "ok"]
    u = ok[UNC_COLUMNS].to_numpy(dtype=np.float64)
    finite = np.isfinite(u)
    with np.errstate(all="ignore"):  # rows with no finite value give NaN (dropped below)
        per_image = np.where(finite, u, 0.0).sum(axis=1) / finite.sum(axis=1) if len(u) else np.array([])
    per_image = per_image[np.isfinite(per_image)]
    if per_image.size == 0:
        return None
    return float(np.quantile(per_image, quantile))


def read_fold_outputs(variant_dir: Path) -> tuple[pd.DataFrame, list[Path], list[dict]]:
    """All held-out predictions, checkpoint paths (every member of every fold) and training
    summaries of a variant's folds."""
    folds = sorted(p for p in Path(variant_dir).glob("fold*") if (p / "oof.csv").is_file())
    if not folds:
        raise FileNotFoundError(f"no fold*/oof.csv under {variant_dir}: train the variant first")
    oof = pd.concat([pd.read_csv(p / "oof.csv", dtype={"image_name": str, "reason": str, "mask_path": str}) for p in folds], ignore_index=True)
    summaries = [pd.read_json(p / "summary.json", typ="series").to_dict() for p in folds if (p / "summary.json").is_file()]
    return oof, [ck for p in folds for ck in member_checkpoints(p)], summaries


def refit_all_rows(clean: pd.DataFrame, table_dir: Path, variant: str, vcfg: VariantConfig, tcfg: TrainConfig, seed: int) -> tuple[dict, dict, dict]:
    """Train ``variant`` on every usable cleaned row (inner split for early stopping).
    Returns ``(state_dict, calibration, summary)``."""
    seed_everything(seed)
    device = select_device(tcfg)
    task = build_task(variant, vcfg, tcfg)
    usable = clean[[task.trainable(float(w), bool(m)) for w, m in zip(clean["weight"], clean["mask_path"].fillna("") != "")]]
    tr_rows, va_rows = inner_split(usable, tcfg.inner_val_frac, seed)
    train_ds = BiometryDataset(tr_rows, table_dir, task, tcfg, train=True, seed=seed)
    val_ds = BiometryDataset(va_rows, table_dir, task, tcfg, train=False)
    calibration = task.calibrate(usable, table_dir)
    result = fit(task, train_ds, val_ds, _score_fn(task, val_ds), tcfg, seed, device)
    summary = {
        "device": device.type,
        "n_train": len(tr_rows),
        "n_inner_val": len(va_rows),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_inner_val_score": result.best_score,
        "train_seconds": round(result.seconds, 2),
        "training_data_hash": table_hash(tr_rows[["image_name", *POINT_COLUMNS, "weight"]]),
    }
    return task.model.state_dict(), calibration, summary


def gather_folds(checkpoints: list[Path]) -> tuple[list[dict], dict]:
    """The fold models' state dicts and their calibration (numeric values averaged over folds;
    the members of a fold's seed ensemble share one calibration, counted once)."""
    cks = [load_checkpoint(p) for p in checkpoints]
    per_fold: dict[Any, dict] = {}
    for i, ck in enumerate(cks):
        per_fold.setdefault(ck["config"].get("fold", f"checkpoint {i}"), ck["config"].get("calibration", {}))
    cals = list(per_fold.values())
    keys = set().union(*cals) if cals else set()
    calibration = {k: float(np.mean([c[k] for c in cals if k in c])) for k in sorted(keys)}
    if "edge_offset_n" in calibration:
        calibration["edge_offset_n"] = int(sum(c.get("edge_offset_n", 0) for c in cals))
    return [ck["state_dict"] for ck in cks], calibration


def export_final(
    clean: pd.DataFrame,
    table_dir: Path,
    models_dir: Path,
    compare: dict[str, Any],
    variant: str,
    vcfg: VariantConfig,
    tcfg: TrainConfig,
    seed: int,
    source: str,
    uncertain_quantile: float,
    data_root: str,
    out_path: Path,
) -> dict[str, Any]:
    """Build and write the model file; return the summary that ``metrics/final.json`` holds."""
    if source not in ("refit", "folds"):
        raise ValueError(f"final.source must be 'refit' or 'folds', got {source!r}")
    if not 0.5 <= uncertain_quantile < 1.0:
        raise ValueError(f"final.uncertain_quantile must be in [0.5, 1), got {uncertain_quantile}")
    oof, checkpoints, fold_summaries = read_fold_outputs(models_dir / variant)
    threshold = uncertainty_threshold(oof, uncertain_quantile)
    t0 = time.perf_counter()
    if source == "refit":
        refits = [refit_all_rows(clean, table_dir, variant, vcfg, tcfg, s) for s in vcfg.member_seeds(seed)]
        state_dicts = [sd for sd, _, _ in refits]
        calibration, train_summary = refits[0][1], refits[0][2]  # the members share their rows, so their calibration
        if len(refits) > 1:
            train_summary = {"member_seeds": vcfg.member_seeds(seed), "members": [summ for _, _, summ in refits]}
    else:
        state_dicts, calibration = gather_folds(checkpoints)
        train_summary = {"n_models": len(state_dicts), "fold_best_epochs": [s.get("best_epoch") for s in fold_summaries]}
        if any("members" in s for s in fold_summaries):  # seed ensembles: every member's epoch, fold by fold
            train_summary["member_seeds"] = vcfg.member_seeds(seed)
            train_summary["fold_member_best_epochs"] = [[m.get("best_epoch") for m in s.get("members", [s])] for s in fold_summaries]
    row = next((r for r in compare.get("table", []) if r.get("variant") == variant), {})
    provenance = {
        "fetalbio_version": __version__,
        "data_root": data_root,
        "n_rows": int(len(clean)),
        "clean_table_hash": table_hash(clean[["image_name", *POINT_COLUMNS, "weight"]]),
        "source": source,
        "seed": seed,
        "cross_validated": row,
        "train": train_summary,
    }
    provenance["export_seconds"] = round(time.perf_counter() - t0, 2)
    save_model(out_path, model_payload(variant, vcfg, tcfg, state_dicts, calibration, threshold, uncertain_quantile, provenance))
    deterministic_train = _without_seconds(train_summary)  # metrics stay byte-identical on reruns
    return {
        "variant": variant,
        "family": get_variant(variant).family,
        "source": source,
        "n_models": len(state_dicts),
        "calibration": calibration,
        "uncertainty_threshold_px": threshold,
        "uncertain_quantile": uncertain_quantile,
        "n_parameters": n_parameters(state_dicts[0]),
        "input_size": [tcfg.input_width, tcfg.input_height],
        "normalize": tcfg.normalize,
        "train": deterministic_train,
        "cross_validated": row,
        "variant_cfg": dataclasses.asdict(vcfg),
    }


def _without_seconds(train_summary: dict[str, Any]) -> dict[str, Any]:
    """``train_summary`` without its timings (also those of a seed ensemble's members)."""
    out = {k: v for k, v in train_summary.items() if k != "train_seconds"}
    if "members" in out:
        out["members"] = [{k: v for k, v in m.items() if k != "train_seconds"} for m in out["members"]]
    return out


def n_parameters(state_dict: dict) -> int:
    """Learnable values of a state dict (normalisation statistics left out)."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return int(sum(int(np.prod(v.shape)) for k, v in state_dict.items() if not k.endswith(skip)))
