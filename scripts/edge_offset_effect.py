"""What the mask-edge correction gives a segmentation run that was evaluated without it.

Usage: python scripts/edge_offset_effect.py RUN_DIR:VARIANT CAL_RUN_DIR:CAL_VARIANT OUT_MD

RUN_DIR:VARIANT is a run evaluated with `postprocess.edge_offset_px: 0` (e.g.
results/full-cpu-baseline:seg_unet). The correction only moves the fitted ellipse: both
semi-axes shrink by the fold's edge offset, measured on that fold's training masks
(`SegmentationTask`, `estimate_edge_offset_px`). It changes neither the weights nor the fit, and
it rejects only an ellipse whose short semi-axis is not longer than the offset (reason
`too_small`, applied here too), so the corrected HC follows exactly from the per-image axis
lengths that `evaluate` wrote (`pred_ofd_mm`, `pred_bpd_mm`, `pixel_size_mm`). RUN's own fold
summaries must show an offset of 0 (a corrected run would be corrected twice). The offsets are read from the
fold summaries of CAL_RUN_DIR:CAL_VARIANT, a run with `edge_offset_px: auto` on the same folds
(the offset depends only on the fold's training masks, so any such run gives the same values).

OUT_MD gets, per fold and overall, the HC error against the sonographer without and with the
correction, and the paired comparison of the corrected run with CAL_RUN_DIR:CAL_VARIANT
(`fetalbio compare-runs`' checks and figures: same images, folds and reference).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fetalbio.geometry.ellipse import ramanujan_perimeter
from fetalbio.reporting.runs import RunErrors, compare_runs, pair_runs, read_run

from compare_fits import write_report  # scripts/ is on sys.path when run as a script


def _offsets(run: Path, variant: str, required: bool = True) -> dict[int, float]:
    """Edge offset (px) per fold from the fold summaries (results/<run>/folds or a checkout's
    models/); a missing offset counts as 0 unless ``required``."""
    out = {}
    for path in sorted((run / "folds" / variant).glob("fold*.json")) or sorted((run / "models" / variant).glob("fold*/summary.json")):
        s = json.loads(path.read_text())
        off = (s.get("calibration") or {}).get("edge_offset_px")
        if off is None and required:
            sys.exit(f"{path}: no calibration.edge_offset_px (was the run trained with edge_offset_px: auto?)")
        out[int(s["fold"])] = float(off or 0.0)
    if not out and required:
        sys.exit(f"{run}: no fold summaries of {variant} under folds/ or models/")
    return out


def main(spec: str, cal_spec: str, out_md: Path) -> None:
    plain, cal = read_run(spec), read_run(cal_spec)  # spec parsing and table checks of compare-runs
    run, variant = plain.path.parents[3], plain.path.parent.name
    own = _offsets(run, variant, required=False)
    if any(v != 0.0 for v in own.values()):
        sys.exit(f"{spec}: its folds already have an edge offset ({own}); this script is for a run evaluated with edge_offset_px: 0")
    offsets = _offsets(cal.path.parents[3], cal.path.parent.name)
    d = pd.read_csv(plain.path)
    missing = sorted(set(d["fold"]) - set(offsets))
    if missing:
        sys.exit(f"{cal_spec}: no edge offset for fold(s) {missing}")
    a_px = d["pred_ofd_mm"] / 2.0 / d["pixel_size_mm"]
    b_px = d["pred_bpd_mm"] / 2.0 / d["pixel_size_mm"]
    check = np.asarray(ramanujan_perimeter(a_px.to_numpy(), b_px.to_numpy())) * d["pixel_size_mm"] - d["pred_hc_mm"]
    if np.nanmax(np.abs(check)) > 0.01:
        sys.exit(f"{spec}: pred_hc_mm does not follow from the axis lengths (max gap {np.nanmax(np.abs(check)):.3f} mm)")
    off = d["fold"].map(offsets)
    too_small = np.minimum(a_px, b_px) <= off  # the pipeline rejects these ellipses (reason too_small)
    hc = np.asarray(ramanujan_perimeter((a_px - off).to_numpy(), (b_px - off).to_numpy())) * d["pixel_size_mm"]
    d["err_plain"] = d["pred_hc_mm"] - d["ref_hc_mm"]
    d["err_corrected"] = np.where(too_small, np.nan, hc - d["ref_hc_mm"])
    corrected = RunErrors(
        f"{spec} + edge correction",
        plain.path,
        pd.DataFrame({"image_name": d["image_name"], "fold": d["fold"], "hc_err_mm": d["err_corrected"], "ref_hc_mm": d["ref_hc_mm"]}),
    )
    res = compare_runs(corrected, cal, n_boot=2000, seed=0)
    lines = [
        f"# The mask-edge correction applied to `{spec}`",
        "",
        f"Written by `python scripts/edge_offset_effect.py {spec} {cal_spec} {out_md}`. HC error against the sonographer (mm), "
        f"out-of-fold; edge offsets (original px) from the fold summaries of `{cal_spec}`. Failed fits: "
        f"{int(d['err_plain'].isna().sum())} without the correction, {int(d['err_corrected'].isna().sum())} with it "
        f"({int((too_small & d['err_plain'].notna()).sum())} ellipses too small for the offset).",
        "",
        "| fold | images | offset px | MAE without | bias without | MAE with | bias with |",
        "|---|---|---|---|---|---|---|",
    ]
    for fold, g in d.groupby("fold"):
        lines.append(
            f"| {fold} | {len(g)} | {offsets[int(fold)]:.3f} | {g['err_plain'].abs().mean():.3f} | {g['err_plain'].mean():+.3f} | "
            f"{g['err_corrected'].abs().mean():.3f} | {g['err_corrected'].mean():+.3f} |"
        )
    e0, c, p = d["err_plain"], res["a"], res["paired"]
    lo, hi = p["mae_diff_ci95"]
    both = pair_runs(corrected, cal).dropna(subset=["err_a", "err_b"])  # the images compare_runs paired
    lines += [
        f"| all | {len(d)} | | {e0.abs().mean():.3f} | {e0.mean():+.3f} | {c['mae']:.3f} | {c['bias']:+.3f} |",
        "",
        f"With the correction: median absolute error {c['median_ae']:.3f} mm, 95 % limits of agreement "
        f"{c['loa_low']:.2f} to {c['loa_high']:.2f} mm.",
        "",
        f"Paired with `{cal_spec}` on the {p['n_images']} images both measured (same folds and reference, checked): MAE "
        f"{p['mae_a']:.3f} (corrected) vs {p['mae_b']:.3f} mm; difference {p['mae_diff']:+.3f} mm, 95 % interval {lo:+.3f} to {hi:+.3f} mm "
        f"({p['bootstrap']['resamples']} bootstrap resamples of subjects, seed {p['bootstrap']['seed']}); image-level Wilcoxon "
        f"p = {p['wilcoxon_p']:.3g}. Correlation of the two signed errors (corrected run and `{cal_spec}`): "
        f"{np.corrcoef(both['err_a'], both['err_b'])[0, 1]:.2f}. The mean of the two HCs per image would have "
        f"MAE {((both['err_a'] + both['err_b']) / 2.0).abs().mean():.3f} mm (two forward passes).",
    ]
    write_report(out_md, lines)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
