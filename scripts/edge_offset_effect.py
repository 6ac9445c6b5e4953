"""What the mask-edge correction gives a segmentation run that was evaluated without it.

Usage: python scripts/edge_offset_effect.py RUN_DIR:VARIANT CAL_RUN_DIR:CAL_VARIANT OUT_MD

RUN_DIR:VARIANT is a run evaluated with `postprocess.edge_offset_px: 0` (e.g.
results/full-cpu-baseline:seg_unet). The correction only moves the fitted ellipse: both
semi-axes shrink by the fold's edge offset, measured on that fold's training masks
(`SegmentationTask`, `estimate_edge_offset_px`). It changes neither the weights nor which fits
are accepted, so the corrected HC follows exactly from the per-image axis lengths that
`evaluate` wrote (`pred_ofd_mm`, `pred_bpd_mm`, `pixel_size_mm`). The offsets are read from the
fold summaries of CAL_RUN_DIR:CAL_VARIANT, a run with `edge_offset_px: auto` on the same folds
(the offset depends only on the fold's training masks, so any such run gives the same values).

OUT_MD gets, per fold and overall, the HC error against the sonographer without and with the
correction, and the paired comparison of the corrected run with CAL_RUN_DIR:CAL_VARIANT
(subject-bootstrap interval of the MAE difference, Wilcoxon, as `fetalbio compare-runs`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fetalbio.data.ingest import subject_from_name
from fetalbio.geometry.ellipse import ramanujan_perimeter
from fetalbio.metrics import wilcoxon_paired
from fetalbio.reporting.runs import subject_bootstrap_ci


def _split(spec: str) -> tuple[Path, str]:
    run, sep, variant = spec.rpartition(":")
    if not sep or not run or not variant:
        sys.exit(f"{spec!r}: expected RUN_DIR:VARIANT")
    return Path(run), variant


def _offsets(run: Path, variant: str) -> dict[int, float]:
    out = {}
    for path in sorted((run / "folds" / variant).glob("fold*.json")) or sorted((run / "models" / variant).glob("fold*/summary.json")):
        s = json.loads(path.read_text())
        off = (s.get("calibration") or {}).get("edge_offset_px")
        if off is None:
            sys.exit(f"{path}: no calibration.edge_offset_px (was the run trained with edge_offset_px: auto?)")
        out[int(s["fold"])] = float(off)
    if not out:
        sys.exit(f"{run}: no fold summaries of {variant} under folds/ or models/")
    return out


def main(spec: str, cal_spec: str, out_md: Path) -> None:
    run, variant = _split(spec)
    cal_run, cal_variant = _split(cal_spec)
    d = pd.read_csv(run / "plots" / "variants" / variant / "per_image.csv")
    ref = pd.read_csv(cal_run / "plots" / "variants" / cal_variant / "per_image.csv")
    offsets = _offsets(cal_run, cal_variant)
    missing = sorted(set(d["fold"]) - set(offsets))
    if missing:
        sys.exit(f"{cal_spec}: no edge offset for fold(s) {missing}")
    a_px = d["pred_ofd_mm"] / 2.0 / d["pixel_size_mm"]
    b_px = d["pred_bpd_mm"] / 2.0 / d["pixel_size_mm"]
    check = np.asarray(ramanujan_perimeter(a_px.to_numpy(), b_px.to_numpy())) * d["pixel_size_mm"] - d["pred_hc_mm"]
    if np.nanmax(np.abs(check)) > 0.01:
        sys.exit(f"{spec}: pred_hc_mm does not follow from the axis lengths (max gap {np.nanmax(np.abs(check)):.3f} mm)")
    off = d["fold"].map(offsets)
    d["hc_corrected_mm"] = np.asarray(ramanujan_perimeter((a_px - off).to_numpy(), (b_px - off).to_numpy())) * d["pixel_size_mm"]
    d["err_plain"] = d["pred_hc_mm"] - d["ref_hc_mm"]
    d["err_corrected"] = d["hc_corrected_mm"] - d["ref_hc_mm"]
    lines = [
        f"# The mask-edge correction applied to `{spec}`",
        "",
        f"Written by `python scripts/edge_offset_effect.py {spec} {cal_spec} {out_md}`. HC error against the sonographer (mm), "
        f"out-of-fold; edge offsets (original px) from the fold summaries of `{cal_spec}`. Failed fits stay failed "
        f"({int(d['err_plain'].isna().sum())} here).",
        "",
        "| fold | images | offset px | MAE without | bias without | MAE with | bias with |",
        "|---|---|---|---|---|---|---|",
    ]
    for fold, g in d.groupby("fold"):
        lines.append(
            f"| {fold} | {len(g)} | {offsets[int(fold)]:.3f} | {g['err_plain'].abs().mean():.3f} | {g['err_plain'].mean():+.3f} | "
            f"{g['err_corrected'].abs().mean():.3f} | {g['err_corrected'].mean():+.3f} |"
        )
    e0, e1 = d["err_plain"], d["err_corrected"]
    lines += [
        f"| all | {len(d)} | | {e0.abs().mean():.3f} | {e0.mean():+.3f} | {e1.abs().mean():.3f} | {e1.mean():+.3f} |",
        "",
        f"With the correction: median absolute error {e1.abs().median():.3f} mm, 95 % limits of agreement "
        f"{e1.mean() - 1.96 * e1.std():.2f} to {e1.mean() + 1.96 * e1.std():.2f} mm.",
    ]
    m = d.merge(ref[["image_name", "fold", "hc_err_mm"]], on="image_name", suffixes=("", "_ref"), validate="one_to_one")
    if (m["fold"] != m["fold_ref"]).any():
        sys.exit(f"{spec} and {cal_spec} used different folds")
    m = m.dropna(subset=["err_corrected", "hc_err_mm_ref"])
    diff = (m["err_corrected"].abs() - m["hc_err_mm_ref"].abs()).to_numpy()
    lo, hi = subject_bootstrap_ci(diff, np.array([subject_from_name(n) for n in m["image_name"]]), n_boot=2000, seed=0)
    p = wilcoxon_paired(m["err_corrected"].abs().to_numpy(), m["hc_err_mm_ref"].abs().to_numpy())["p_value"]
    avg = ((m["hc_corrected_mm"] + m["hc_err_mm_ref"] + m["ref_hc_mm"]) / 2.0 - m["ref_hc_mm"]).abs()
    lines += [
        "",
        f"Paired with `{cal_spec}` on the {len(m)} images both measured: MAE {m['err_corrected'].abs().mean():.3f} (corrected) vs "
        f"{m['hc_err_mm_ref'].abs().mean():.3f} mm; difference {diff.mean():+.3f} mm, 95 % interval {lo:+.3f} to {hi:+.3f} mm "
        f"(2000 bootstrap resamples of subjects, seed 0); Wilcoxon p = {p:.3g}. Correlation of the two signed errors: "
        f"{np.corrcoef(m['err_corrected'], m['hc_err_mm_ref'])[0, 1]:.2f}. The mean of the two HCs per image would have "
        f"MAE {avg.mean():.3f} mm (two forward passes).",
    ]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
