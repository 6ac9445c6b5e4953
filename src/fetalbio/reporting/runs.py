"""Paired comparison of two runs' out-of-fold HC errors (``fetalbio compare-runs``).

The ``compare`` stage pairs the variants of one run. Two configurations trained in different
runs (another resolution, another schedule, a baseline) are only comparable image by image when
both runs measured the same images on the same folds against the same reference; this module
checks exactly that, then reports each run's agreement with the sonographer and the paired
difference:

- per run: images measured, failed fits (counted, never dropped silently), HC MAE, median
  absolute error, bias, 95 % limits of agreement, 95th percentile of the absolute error;
- paired, on the images both runs measured: the difference of the mean absolute errors
  (``A - B``, negative when A is better) with a 95 % bootstrap interval that resamples
  **subjects** (images of one pregnancy are not independent; subjects are read from the file
  names as :func:`~fetalbio.data.tables.subject_from_name` does at ingest), the Wilcoxon
  signed-rank test of the absolute errors (image-level: it takes the images as independent),
  the share of images where A is strictly closer, and the MAE of both by tercile of the
  reference HC (the terciles of :func:`~fetalbio.metrics.biometry.errors_by_tercile`, as
  ``evaluate`` reports them).

Each run is given as ``RUN_DIR:VARIANT``; its errors are read from
``RUN_DIR/plots/variants/VARIANT/per_image.csv`` (the ``evaluate`` stage's per-image table,
also kept by ``scripts/collect_results.py`` in ``results/<run>/``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fetalbio.data.tables import subject_from_name
from fetalbio.metrics import bland_altman, wilcoxon_paired
from fetalbio.metrics.biometry import errors_by_tercile, measurement_errors

__all__ = ["RunErrors", "compare_runs", "pair_runs", "read_run", "runs_markdown", "subject_bootstrap_ci"]

REQUIRED_COLUMNS = ("image_name", "fold", "hc_err_mm", "ref_hc_mm")
# optional: the four points' radial errors and whether the image's landmark labels are trusted,
# for the per-image MRE the landmark comparison pairs on (evaluate's MRE is over trusted rows)
LANDMARK_COLUMNS = ("label_trusted", "err_ofd_1_mm", "err_ofd_2_mm", "err_bpd_1_mm", "err_bpd_2_mm")
_REF_TOL_MM = 1e-3


@dataclass(frozen=True)
class RunErrors:
    """One run's per-image HC errors: ``label`` (``RUN_DIR:VARIANT``), ``path`` of the table and
    ``table`` with ``image_name``, ``fold``, ``hc_err_mm`` (NaN = failed fit), ``ref_hc_mm``, and
    ``mre_mm`` (mean radial error of the four points on images with trusted landmark labels; NaN
    elsewhere, or everywhere when the table has no point errors)."""

    label: str
    path: Path
    table: pd.DataFrame


def read_run(spec: str) -> RunErrors:
    """``RUN_DIR:VARIANT`` -> :class:`RunErrors`. A malformed spec, a missing table, a missing
    column or a repeated image raises ``ValueError`` / ``FileNotFoundError`` naming the file."""
    run_dir, sep, variant = spec.rpartition(":")
    if not sep or not run_dir or not variant:
        raise ValueError(f"{spec!r}: expected RUN_DIR:VARIANT, e.g. results/full-cpu-4:seg_deeplabv3plus")
    path = Path(run_dir) / "plots" / "variants" / variant / "per_image.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: no per-image table at {path} (run `dvc repro` there, or check the variant name)")
    try:  # as text first, so that a bad cell is quoted as written
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (an evaluate stage's per_image.csv has them)")
    has_points = all(c in raw.columns for c in LANDMARK_COLUMNS)
    raw = raw[list(REQUIRED_COLUMNS) + (list(LANDMARK_COLUMNS) if has_points else [])].apply(lambda col: col.str.strip())

    def _bad(col: str, mask: pd.Series, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask.to_numpy())[0])
            raise ValueError(f"{path}: row {i + 2}, column {col}: {raw[col].iloc[i]!r} {what}")

    _bad("image_name", raw["image_name"] == "", "is empty; every row names its image")
    dup = raw["image_name"].duplicated()
    _bad("image_name", dup, "appears more than once")
    fold = pd.to_numeric(raw["fold"], errors="coerce")
    _bad("fold", fold.isna() | (fold != fold.round()), "is not a fold number")
    num = {c: pd.to_numeric(raw[c], errors="coerce").astype(np.float64) for c in ("hc_err_mm", "ref_hc_mm")}
    # an empty (or NaN) hc_err_mm is a failed fit and is counted; any other text or inf is a broken table
    empty_err = raw["hc_err_mm"].str.lower().isin(["", "nan"])
    _bad("hc_err_mm", ~empty_err & ~np.isfinite(num["hc_err_mm"].fillna(np.inf)), "is not a finite number (a failed fit is an empty cell)")
    _bad("ref_hc_mm", ~np.isfinite(num["ref_hc_mm"].fillna(np.inf)), "is not a finite number")
    mre = pd.Series(np.nan, index=raw.index)
    if has_points:
        pts = raw[list(LANDMARK_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        trusted = raw["label_trusted"].str.lower().isin(["true", "1"]).to_numpy()
        with np.errstate(all="ignore"):
            mre = pd.Series(np.where(trusted & np.isfinite(pts).all(axis=1), pts.mean(axis=1), np.nan), index=raw.index)
    table = pd.DataFrame(
        {"image_name": raw["image_name"], "fold": fold.astype(int), "hc_err_mm": num["hc_err_mm"].where(~empty_err), "ref_hc_mm": num["ref_hc_mm"],
         "mre_mm": mre}
    )
    return RunErrors(spec, path, table.reset_index(drop=True))


def _names(values: list[str], n: int = 5) -> str:
    return ", ".join(values[:n]) + (f" and {len(values) - n} more" if len(values) > n else "")


def pair_runs(a: RunErrors, b: RunErrors, common: bool = False) -> pd.DataFrame:
    """One row per image with ``fold``, ``ref_hc_mm``, ``err_a``, ``err_b``, ``subject``.

    Raises ``ValueError`` when the runs did not measure the same images, put an image in
    different folds, or compared it with different reference HCs: out-of-fold errors pair only
    on the same split and the same reference. ``common``: pair on the images both runs measured
    even when their data and folds differ (e.g. a run on more data): each error is still
    out-of-fold in its own run; the reference HC must still agree."""
    if common:
        names = set(a.table["image_name"]) & set(b.table["image_name"])
        if not names:
            raise ValueError(f"the runs share no image: {a.path} and {b.path}")
        a = replace(a, table=a.table[a.table["image_name"].isin(names)])
        b = replace(b, table=b.table[b.table["image_name"].isin(names)])
    only_a = sorted(set(a.table["image_name"]) - set(b.table["image_name"]))
    only_b = sorted(set(b.table["image_name"]) - set(a.table["image_name"]))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} image(s) only in {a.path} ({_names(only_a)})")
        if only_b:
            parts.append(f"{len(only_b)} image(s) only in {b.path} ({_names(only_b)})")
        raise ValueError("the runs measured different images: " + "; ".join(parts))
    m = a.table.merge(b.table, on="image_name", suffixes=("_a", "_b"), validate="one_to_one")
    moved = m[m["fold_a"] != m["fold_b"]]
    if len(moved) and not common:
        r = moved.iloc[0]
        raise ValueError(
            f"the runs used different folds: {len(moved)} image(s) differ, e.g. {r['image_name']} is in fold "
            f"{r['fold_a']} of {a.path} and fold {r['fold_b']} of {b.path}; pair runs built on the same folds (same data and seed)"
        )
    off = m[(m["ref_hc_mm_a"] - m["ref_hc_mm_b"]).abs() > _REF_TOL_MM]
    if len(off):
        r = off.iloc[0]
        raise ValueError(
            f"the runs used different reference HCs: {len(off)} image(s) differ, e.g. {r['image_name']}: "
            f"{r['ref_hc_mm_a']} mm in {a.path}, {r['ref_hc_mm_b']} mm in {b.path}"
        )
    out = pd.DataFrame(
        {
            "image_name": m["image_name"],
            "fold": m["fold_a"],
            "ref_hc_mm": m["ref_hc_mm_a"],
            "err_a": m["hc_err_mm_a"],
            "err_b": m["hc_err_mm_b"],
            "mre_a": m["mre_mm_a"],
            "mre_b": m["mre_mm_b"],
        }
    )
    out["subject"] = [subject_from_name(n) for n in out["image_name"]]
    return out.sort_values("image_name").reset_index(drop=True)


def subject_bootstrap_ci(values: np.ndarray, subjects: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` when whole subjects are resampled with
    replacement (each draw keeps the number of subjects; a subject brings all its images)."""
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(subjects)
    if v.shape != s.shape or v.ndim != 1 or v.size == 0:
        raise ValueError(f"values and subjects must be equal-length, non-empty 1-D arrays, got {v.shape} and {s.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values must be finite (pair only images both runs measured)")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    codes, uniq = pd.factorize(pd.Series(s))
    sums = np.bincount(codes, weights=v, minlength=len(uniq))
    counts = np.bincount(codes, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _agreement(err: pd.Series, ref: pd.Series) -> dict[str, float]:
    """Agreement of ``ref + err`` with ``ref`` (:func:`measurement_errors`, :func:`bland_altman`)."""
    pred = (ref + err).to_numpy()
    m = measurement_errors(pred, ref.to_numpy())
    ba = bland_altman(pred, ref.to_numpy())
    return {
        "n": int(m["n"] - m["n_failed"]),
        "failed": int(m["n_failed"]),
        "mae": m["mae"],
        "median_ae": m["median_ae"],
        "bias": m["bias"],
        "loa_low": ba["loa_low"],
        "loa_high": ba["loa_high"],
        "p95_ae": float(err.abs().quantile(0.95)),
    }


def compare_runs(a: RunErrors, b: RunErrors, n_boot: int = 2000, seed: int = 0, common: bool = False) -> dict[str, Any]:
    """Agreement of each run with the sonographer and the paired difference (see the module
    docstring). Each run's own figures use every image it measured; the paired figures use the
    images both measured."""
    pairs = pair_runs(a, b, common)
    both = pairs.dropna(subset=["err_a", "err_b"])
    if both.empty:
        raise ValueError(f"no image was measured by both {a.label} and {b.label}")
    d = both["err_a"].abs().to_numpy() - both["err_b"].abs().to_numpy()
    lo, hi = subject_bootstrap_ci(d, both["subject"].to_numpy(), n_boot=n_boot, seed=seed)
    test = wilcoxon_paired(both["err_a"].abs().to_numpy(), both["err_b"].abs().to_numpy())
    ref = both["ref_hc_mm"].to_numpy()
    ta = errors_by_tercile(ref + both["err_a"].to_numpy(), ref)["terciles"]  # the evaluate stage's terciles
    tb = errors_by_tercile(ref + both["err_b"].to_numpy(), ref)["terciles"]
    by_tercile = [
        {"ref_hc_mm": f"{x['hc_low_mm']:.1f}-{x['hc_high_mm']:.1f}", "n": int(x["n"]), "mae_a": x["mae"], "mae_b": y["mae"]}
        for x, y in zip(ta, tb)
    ]
    landmarks = pairs.dropna(subset=["mre_a", "mre_b"])
    paired_mre = None
    if len(landmarks):  # both runs have point errors on trusted images: pair their MRE the same way
        dm = landmarks["mre_a"].to_numpy() - landmarks["mre_b"].to_numpy()
        mlo, mhi = subject_bootstrap_ci(dm, landmarks["subject"].to_numpy(), n_boot=n_boot, seed=seed)
        paired_mre = {"n_images": int(len(landmarks)), "mre_a": float(landmarks["mre_a"].mean()), "mre_b": float(landmarks["mre_b"].mean()),
                      "mre_diff": float(dm.mean()), "mre_diff_ci95": [mlo, mhi], "share_a_closer": float((dm < 0).mean()),
                      "wilcoxon_p": wilcoxon_paired(landmarks["mre_a"].to_numpy(), landmarks["mre_b"].to_numpy())["p_value"]}
    return {
        "common_images_only": bool(common),
        "paired_mre": paired_mre,
        "a": {"label": a.label, "table": str(a.path), **_agreement(pairs["err_a"], pairs["ref_hc_mm"])},
        "b": {"label": b.label, "table": str(b.path), **_agreement(pairs["err_b"], pairs["ref_hc_mm"])},
        "paired": {
            "n_images": int(len(both)),
            "n_subjects": int(both["subject"].nunique()),
            "mae_a": float(both["err_a"].abs().mean()),
            "mae_b": float(both["err_b"].abs().mean()),
            "mae_diff": float(d.mean()),
            "mae_diff_ci95": [lo, hi],
            "bootstrap": {"resamples": int(n_boot), "seed": int(seed), "unit": "subject"},
            "share_a_closer": float((d < 0).mean()),
            "share_tied": float((d == 0).mean()),
            "wilcoxon_p": test["p_value"],
            "median_abs_err_diff": test["median_diff"],
            "by_ref_hc_tercile": by_tercile,
        },
    }


def runs_markdown(result: dict[str, Any]) -> str:
    """The :func:`compare_runs` result as a Markdown report."""
    a, b, p = result["a"], result["b"], result["paired"]
    lo, hi = p["mae_diff_ci95"]
    lines = [
        "# Paired comparison of two runs (HC vs the sonographer, out-of-fold)",
        "",
        f"- A: `{a['label']}` (`{a['table']}`)",
        f"- B: `{b['label']}` (`{b['table']}`)",
        "",
        ("Paired on the images both runs measured (`--common-images`): the runs' data and folds differ, each error is out-of-fold "
         "in its own run; the same reference HC (checked)." if result.get("common_images_only") else
         "Both runs measured the same images on the same folds against the same reference HC (checked)."),
        "",
        "| run | images measured | failed | HC MAE mm | median AE mm | bias mm | LoA low mm | LoA high mm | 95th pct AE mm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("A", a), ("B", b)):
        lines.append(
            f"| {name} | {r['n']} | {r['failed']} | {r['mae']:.3f} | {r['median_ae']:.3f} | {r['bias']:.3f} | "
            f"{r['loa_low']:.2f} | {r['loa_high']:.2f} | {r['p95_ae']:.2f} |"
        )
    lines += [
        "",
        f"Paired, on the {p['n_images']} images ({p['n_subjects']} subjects) both runs measured: HC MAE "
        f"{p['mae_a']:.3f} mm (A) vs {p['mae_b']:.3f} mm (B); difference A - B = {p['mae_diff']:+.3f} mm, "
        f"95 % interval {lo:+.3f} to {hi:+.3f} mm ({p['bootstrap']['resamples']} bootstrap resamples of subjects, "
        f"seed {p['bootstrap']['seed']}). A is strictly closer to the sonographer on {100 * p['share_a_closer']:.1f} % of the images "
        f"(ties: {100 * p['share_tied']:.1f} %). Wilcoxon signed-rank on the absolute errors, images taken as independent: "
        f"p = {p['wilcoxon_p']:.3g} (the interval, not this test, allows for several images of one subject).",
        "",
        "| reference HC tercile (mm) | images | HC MAE A mm | HC MAE B mm |",
        "|---|---|---|---|",
    ]
    for t in p["by_ref_hc_tercile"]:
        lines.append(f"| {t['ref_hc_mm']} | {t['n']} | {t['mae_a']:.3f} | {t['mae_b']:.3f} |")
    q = result.get("paired_mre")
    if q is not None:
        mlo, mhi = q["mre_diff_ci95"]
        lines += ["", f"Landmarks, paired on the {q['n_images']} images with trusted labels both runs measured: MRE {q['mre_a']:.3f} mm (A) vs "
                      f"{q['mre_b']:.3f} mm (B); A - B = {q['mre_diff']:+.3f} mm, 95 % interval {mlo:+.3f} to {mhi:+.3f} mm (subjects resampled); "
                      f"A closer on {100 * q['share_a_closer']:.1f} % of them; Wilcoxon p = {q['wilcoxon_p']:.3g}."]
    return "\n".join(lines) + "\n"


def runs_summary_markdown(results: list[dict[str, Any]]) -> str:
    """Several :func:`compare_runs` results against one run B (e.g. every new variant against
    the best so far): one row each, then each full report."""
    b = results[0]["b"]
    lines = [
        f"# Paired comparisons against `{b['label']}` (HC vs the sonographer, out-of-fold)",
        "",
        f"B: `{b['label']}` (`{b['table']}`): HC MAE {b['mae']:.3f} mm, bias {b['bias']:.3f} mm, limits {b['loa_low']:.2f} to {b['loa_high']:.2f} mm.",
        "A - B < 0: A is closer to the sonographer. Interval: 95 %, bootstrap resamples of subjects.",
        "",
        "| A | images paired | HC MAE A mm | HC MAE B mm | A - B mm | 95 % interval mm | A closer on | Wilcoxon p | MRE A mm | MRE B mm | MRE A - B mm | 95 % interval mm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p, q = r["paired"], r.get("paired_mre")
        lo, hi = p["mae_diff_ci95"]
        mre = (f"{q['mre_a']:.3f} | {q['mre_b']:.3f} | {q['mre_diff']:+.3f} | {q['mre_diff_ci95'][0]:+.3f} to {q['mre_diff_ci95'][1]:+.3f}"
               if q is not None else "– | – | – | –")
        lines.append(f"| `{r['a']['label']}` | {p['n_images']} | {p['mae_a']:.3f} | {p['mae_b']:.3f} | {p['mae_diff']:+.3f} | "
                     f"{lo:+.3f} to {hi:+.3f} | {100 * p['share_a_closer']:.1f} % | {p['wilcoxon_p']:.3g} | {mre} |")
    for r in results:
        lines += ["", runs_markdown(r).replace("# Paired comparison of two runs", "## Paired comparison", 1).rstrip()]
    return "\n".join(lines) + "\n"
