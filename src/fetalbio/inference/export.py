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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fetalbio import POINT_COLUMNS, UNC_COLUMNS, __version__
from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.engine.run import table_hash, train_network
from fetalbio.engine.train import clear_resume, select_device
from fetalbio.io import OOF_FILE, read_oof
from fetalbio.model_file import MODEL_FILE, StageWeights, concatenate_stages, model_payload, read_model_file, save_model, stage_role
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


def read_fold_outputs(variant_dir: Path, need_oof: bool = True) -> tuple[pd.DataFrame | None, list[Path], list[dict]]:
    """All held-out predictions, fold model files (``fold*/model.pt``) and training
    summaries of a variant's folds (``need_oof=False``: folds without held-out predictions, as
    the refinement stage's, count too; the predictions are then None)."""
    marker = OOF_FILE if need_oof else MODEL_FILE
    folds = sorted(p for p in Path(variant_dir).glob("fold*") if (p / marker).is_file())
    if not folds:
        raise FileNotFoundError(f"no fold*/{marker} under {variant_dir}: train the variant first")
    oof = pd.concat([read_oof(p) for p in folds], ignore_index=True) if need_oof else None
    summaries = [pd.read_json(p / "summary.json", typ="series").to_dict() for p in folds if (p / "summary.json").is_file()]
    return oof, [p / MODEL_FILE for p in folds], summaries


def refit_all_rows(clean: pd.DataFrame, table_dir: Path, variant: str, vcfg: VariantConfig, tcfg: TrainConfig, seed: int,
                   log_dir: Path | None = None, resume_dir: Path | None = None) -> tuple[dict, dict, dict]:
    """Train ``variant`` on every usable cleaned row (:func:`~fetalbio.engine.run.train_network`
    with no held-out fold; inner split for early stopping), with a dvclive log and a resume
    file like every fold. Returns ``(state_dict, calibration, summary)``."""
    device = select_device(tcfg)
    net = train_network(clean, table_dir, variant, vcfg, tcfg, seed, None, device, log_dir=log_dir, resume_dir=resume_dir)
    clear_resume(resume_dir)
    result = net.result
    summary = {
        "device": device.type,
        "n_train": len(net.tr_rows),
        "n_inner_val": len(net.va_rows),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_inner_val_score": result.best_score,
        "train_seconds": round(result.seconds, 2),
        "training_data_hash": table_hash(net.tr_rows[["image_name", *POINT_COLUMNS, "weight"]]),
    }
    return net.task.model.state_dict(), net.calibration, summary


def gather_folds(fold_files: list[Path]) -> tuple[list[dict], dict]:
    """The fold model files' state dicts, concatenated (every member of every fold), and their
    calibration averaged over folds (:func:`~fetalbio.model_file.concatenate_stages`)."""
    return concatenate_stages([(p, read_model_file(p)) for p in fold_files])


def stage_weights(
    clean: pd.DataFrame, table_dir: Path, variant_dir: Path, variant: str, vcfg: VariantConfig, tcfg: TrainConfig, seed: int, source: str,
    log_root: Path | None = None, resume_root: Path | None = None,
) -> tuple[list[dict], dict, dict]:
    """One stage's networks for the model file: refit on every row (one per seed) or gathered
    from the fold models in ``variant_dir``. Returns ``(state_dicts, calibration, train summary)``."""
    if source == "refit":
        seeds = vcfg.member_seeds(seed)
        refits = []
        for i, s in enumerate(seeds):
            tag = variant if i == 0 else f"{variant}_seed{s}"
            refits.append(refit_all_rows(clean, table_dir, variant, vcfg, tcfg, s,
                                         log_dir=Path(log_root) / tag if log_root is not None else None,
                                         resume_dir=Path(resume_root) / tag if resume_root is not None else None))
        state_dicts = [sd for sd, _, _ in refits]
        calibration, train_summary = refits[0][1], refits[0][2]  # the members share their rows, so their calibration
        if len(refits) > 1:
            train_summary = {"member_seeds": seeds, "members": [summ for _, _, summ in refits]}
        return state_dicts, calibration, train_summary
    _, checkpoints, fold_summaries = read_fold_outputs(variant_dir, need_oof=False)
    state_dicts, calibration = gather_folds(checkpoints)
    train_summary = {"n_models": len(state_dicts), "fold_best_epochs": [s.get("best_epoch") for s in fold_summaries]}
    if any("members" in s for s in fold_summaries):  # seed ensembles: every member's epoch, fold by fold
        train_summary["member_seeds"] = vcfg.member_seeds(seed)
        train_summary["fold_member_best_epochs"] = [[m.get("best_epoch") for m in s.get("members", [s])] for s in fold_summaries]
    return state_dicts, calibration, train_summary


def export_final(  # ~90 lines: one straight recipe (weights, provenance, payload, summary), each part short
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
    later: Sequence[tuple[str, VariantConfig, TrainConfig]] = (),
    method: str | None = None,
    log_root: Path | None = None,
    resume_root: Path | None = None,
    per_image: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Build and write the model file; return the summary that ``metrics/final.json`` holds.

    ``later``: the stages after ``variant``, in order, each ``(variant, configs)`` (fold models in
    ``models/<variant>``), of ``method`` (e.g. ``<variant>_refined``, default the variant; its
    held-out predictions are ``models/<method>``). ``per_image``: the method's ``plots/variants/<method>/per_image.csv``
    (errors and triage signals of every held-out image): the exported triage combiner is fitted
    on all of it (:mod:`fetalbio.triage`)."""
    if source not in ("refit", "folds"):
        raise ValueError(f"final.source must be 'refit' or 'folds', got {source!r}")
    if not 0.5 <= uncertain_quantile < 1.0:
        raise ValueError(f"final.uncertain_quantile must be in [0.5, 1), got {uncertain_quantile}")
    method = method or variant
    oof, _, _ = read_fold_outputs(models_dir / method)
    threshold = uncertainty_threshold(oof, uncertain_quantile)
    t0 = time.perf_counter()
    state_dicts, calibration, train_summary = stage_weights(clean, table_dir, models_dir / variant, variant, vcfg, tcfg, seed, source, log_root, resume_root)
    stages = [StageWeights("coarse", variant, vcfg, tcfg, state_dicts, calibration)]
    later_train = {}
    for name, l_vcfg, l_tcfg in later:
        sds, cal, later_train[name] = stage_weights(clean, table_dir, models_dir / name, name, l_vcfg, l_tcfg, seed, source, log_root, resume_root)
        stages.append(StageWeights(stage_role(name), name, l_vcfg, l_tcfg, sds, cal))
    row = next((r for r in compare.get("table", []) if r.get("variant") == method), {})
    provenance = {
        "fetalbio_version": __version__,
        "data_root": data_root,
        "n_rows": int(len(clean)),
        "clean_table_hash": table_hash(clean[["image_name", *POINT_COLUMNS, "weight"]]),
        "source": source,
        "seed": seed,
        "cross_validated": row,
        "train": train_summary,
        "training_hc_range_mm": training_hc_range(clean),
        "training_sources": training_sources(clean),
    }
    provenance.update({f"{name}_train": s for name, s in later_train.items()})
    provenance["export_seconds"] = round(time.perf_counter() - t0, 2)
    triage = fit_triage(per_image) if per_image is not None else None
    payload = model_payload(method, stages, provenance, threshold, uncertain_quantile)
    if triage is not None:
        payload["triage"] = triage.as_dict()
    save_model(out_path, payload)
    deterministic_train = _without_seconds(train_summary)  # metrics stay byte-identical on reruns
    summary = {
        "variant": method,
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
        "training_hc_range_mm": provenance["training_hc_range_mm"],
        "training_sources": provenance["training_sources"],
    }
    if triage is not None:
        summary["triage"] = triage.as_dict()
    for st in stages[1:]:
        summary[st.variant] = {
            "n_models": len(st.state_dicts),
            "calibration": st.calibration,
            "n_parameters": n_parameters(st.state_dicts[0]),
            "crop_size": [st.tcfg.input_width, st.tcfg.input_height],  # a later stage's input: a crop of the image
            "train": _without_seconds(later_train[st.variant]),
            "variant_cfg": dataclasses.asdict(st.vcfg),
        }
    return summary


def training_hc_range(clean: pd.DataFrame) -> list[float] | None:
    """[min, max] of the reference HC (mm) of the rows the model learned from (None without any)."""
    hc = pd.to_numeric(clean["hc_mm"], errors="coerce").dropna() if "hc_mm" in clean.columns else pd.Series(dtype=float)
    return [round(float(hc.min()), 2), round(float(hc.max()), 2)] if len(hc) else None


def training_sources(clean: pd.DataFrame) -> dict[str, int]:
    """Rows per data source the model learned from."""
    if "source" not in clean.columns:
        return {}
    return {str(k): int(v) for k, v in clean["source"].fillna("").value_counts().sort_index().items()}


def fit_triage(per_image: pd.DataFrame):
    """The triage combiner fitted on every held-out image of the method (None without signals)."""
    from fetalbio.triage import FEATURES, Triage

    cols = [f"sig_{c}" for c in FEATURES]
    if not set(cols) <= set(per_image.columns):
        return None
    feats = per_image[cols].rename(columns=lambda c: c[len("sig_"):])
    try:
        folds = per_image["fold"].to_numpy() if "fold" in per_image.columns else None  # conformal factor cross-fitted by fold
        return Triage.fit(feats, per_image["hc_abs_err_mm"].to_numpy(dtype=np.float64), groups=folds)
    except ValueError:  # too few measured images (a tiny run): the model flags by point uncertainty
        return None


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
