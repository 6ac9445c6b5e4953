"""How far a first stage's held-out ellipses are from the sonographer's, per reference-HC bin:
what the refinement's crop jitter (``variants.refine.crop.jitter``) has to cover over the whole
pregnancy. Reads a finished run's ``models/<variant>/fold*/oof.csv`` and the cleaned table; writes
a JSON and a Markdown table. Nothing is trained.

    python scripts/analysis/coarse_errors_by_bin.py RUN_DIR VARIANT OUT_PREFIX
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fetalbio.data.tables import read_clean
from fetalbio.engine.refine_run import coarse_prediction, ellipse_errors
from fetalbio.io import read_gray8
from fetalbio.reporting.evaluate import HC_BIN_LABELS, hc_bin


def spread(df: pd.DataFrame) -> dict:
    """The same spreads the refine stage reports (per-axis centre RMS, scale and angle RMS, p90s)."""
    return {"n": int(len(df)), "centre_frac_axis_rms": float(np.sqrt(np.mean(df["centre_frac"] ** 2) / 2.0)),
            "log_scale_rms": float(np.sqrt(np.mean(df["log_scale"] ** 2))), "angle_deg_rms": float(np.sqrt(np.mean(df["angle_deg"] ** 2))),
            "centre_frac_p90": float(np.quantile(df["centre_frac"], 0.9)), "abs_log_scale_p90": float(np.quantile(df["log_scale"].abs(), 0.9)),
            "abs_angle_deg_p90": float(np.quantile(df["angle_deg"].abs(), 0.9))}


def main(run: Path, variant: str, out: Path) -> None:
    clean = read_clean(run / "data/clean/labels.csv").set_index("image_name")
    rows = []
    for fold_dir in sorted((run / "models" / variant).glob("fold*")):
        oof = pd.read_csv(fold_dir / "oof.csv", dtype={"image_name": str, "reason": str, "mask_path": str})
        for _, r in oof.iterrows():
            ref = clean.loc[r["image_name"]]
            if not ref["mask_path"]:
                continue
            mp = r["mask_path"] if isinstance(r["mask_path"], str) and r["mask_path"] else None
            mask = (read_gray8(run / "data/ingested" / ref["mask_path"]).pixels > 127).astype(np.uint8)
            err = ellipse_errors(coarse_prediction(r, fold_dir / mp if mp else None), mask)
            if err is not None:
                rows.append({**err, "ref_hc_mm": float(ref["hc_mm"]), "source": ref.get("source", "")})
    df = pd.DataFrame(rows)
    df["hc_bin"] = hc_bin(df["ref_hc_mm"]).to_numpy()
    jitter = (yaml.safe_load((run / "params.yaml").read_text())["variants"]["refine"].get("crop") or {}).get("jitter", {})
    result = {"variant": variant, "run": str(run), "refine_jitter": jitter, "all": spread(df),
              "by_hc_bin": {b: spread(df[df["hc_bin"] == b]) for b in HC_BIN_LABELS if (df["hc_bin"] == b).any()}}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# First-stage ellipse errors of `{variant}` by reference HC (held-out)", "",
             f"The refinement trains on crops jittered by {jitter} (standard deviations: centre as a share of the semi-major axis per axis, "
             "log scale, angle in degrees); these are the errors it meets at test time.", "",
             "| HC bin (mm) | n | centre / a, per-axis RMS | log scale RMS | angle RMS (deg) | centre / a p90 | abs log scale p90 | abs angle p90 |",
             "|---|---|---|---|---|---|---|---|"]
    for b, s in [*result["by_hc_bin"].items(), ("all", result["all"])]:
        lines.append(f"| {b} | {s['n']} | {s['centre_frac_axis_rms']:.4f} | {s['log_scale_rms']:.4f} | {s['angle_deg_rms']:.2f} | "
                     f"{s['centre_frac_p90']:.4f} | {s['abs_log_scale_p90']:.4f} | {s['abs_angle_deg_p90']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
