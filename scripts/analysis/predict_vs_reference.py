"""A `fetalbio predict` CSV against the sonographer's HC (e.g. a model on images it never saw):
HC MAE, bias, 95 % limits, interval coverage, refusals and large errors flagged ok, over all
images and per reference-HC bin. Nothing is trained or predicted here.

    python scripts/analysis/predict_vs_reference.py PREDS.csv REFERENCE.csv OUT_PREFIX [LABEL]

REFERENCE.csv: ``image_name,pixel_size_mm,hc_mm``. Writes OUT_PREFIX.json and OUT_PREFIX.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fetalbio.reporting.evaluate import by_gestation


def main(preds: Path, reference: Path, out: Path, label: str) -> None:
    p = pd.read_csv(preds, dtype={"image_name": str})
    r = pd.read_csv(reference, dtype={"image_name": str})[["image_name", "hc_mm"]].rename(columns={"hc_mm": "ref_hc_mm"})
    m = p.merge(r, on="image_name", how="inner", validate="one_to_one")
    hc = m["hc_mm"].where(m["flag"] != "failed")
    table = pd.DataFrame({"image_name": m["image_name"], "ref_hc_mm": m["ref_hc_mm"], "hc_err_mm": hc - m["ref_hc_mm"],
                          "hc_abs_err_mm": (hc - m["ref_hc_mm"]).abs(), "hc_mm_low": m["hc_mm_low"], "hc_mm_high": m["hc_mm_high"],
                          "flag": m["flag"], "flag_reason": m["reason"].fillna("")})
    gest = by_gestation(table)
    out.with_suffix(".json").write_text(json.dumps({"label": label, "preds": str(preds), "reference": str(reference), "n_images": int(len(m)),
                                                    "rows": gest.replace({np.nan: None}).to_dict(orient="records")}, indent=2) + "\n")
    cols = ["group", "value", "n", "n_failed", "mae_mm", "bias_mm", "loa_low_mm", "loa_high_mm", "within_3mm", "interval_coverage", "n_refused", "n_ok_over_10mm"]
    lines = [f"# {label}: HC against the sonographer", "", f"`{preds}` vs `{reference}` ({len(m)} images). Failed (refused or unmeasured) "
             "images count in n_failed, not in the MAE.", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in gest.iterrows():
        lines.append("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "predict")
