"""Compare variants: one table, the best per metric, a paired test, and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fetalbio import POINT_COLUMNS
from fetalbio.io import read_gray8, read_mask
from fetalbio.metrics import wilcoxon_paired

# (column, json path, direction) — direction: "min" lower is better, "max" higher, "abs" |x| lower
TABLE_COLUMNS: list[tuple[str, tuple[str, ...], str]] = [
    ("MRE mm", ("landmarks_vs_clean_labels", "mre_mm"), "min"),
    ("MRE px", ("landmarks_vs_clean_labels", "mre_px"), "min"),
    ("SDR@2mm", ("landmarks_vs_clean_labels", "sdr_2mm"), "max"),
    ("SDR@2.5mm", ("landmarks_vs_clean_labels", "sdr_2.5mm"), "max"),
    ("Ellipse Dice", ("segmentation", "ellipse_dice"), "max"),
    ("Mask Dice", ("segmentation", "mask_dice"), "max"),
    ("HC MAE mm", ("measurements_vs_sonographer", "hc", "mae"), "min"),
    ("HC bias mm", ("measurements_vs_sonographer", "hc", "bias"), "abs"),
    ("HC LoA low", ("measurements_vs_sonographer", "hc", "bland_altman", "loa_low"), "none"),
    ("HC LoA high", ("measurements_vs_sonographer", "hc", "bland_altman", "loa_high"), "none"),
    ("BPD MAE mm", ("measurements_vs_sonographer", "bpd", "mae"), "min"),
    ("OFD MAE mm", ("measurements_vs_sonographer", "ofd", "mae"), "min"),
    ("failed", ("n_failed",), "min"),
    ("SDR@3mm", ("landmarks_vs_clean_labels", "sdr_3mm"), "max"),
    # triage (nested out-of-fold): does the uncertainty pick out the errors, does the interval hold
    ("unc rho", ("triage", "spearman_rho"), "max"),
    ("AUROC >4mm", ("triage", "auroc_error_over_4mm"), "max"),
    ("defer10 cut", ("triage", "mae_cut_by_deferral"), "max"),
    ("90% cover", ("triage", "interval_coverage"), "none"),
    ("uncertain", ("triage", "uncertain_share"), "none"),
]


def _get(d: dict, path: tuple[str, ...]) -> float:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return float("nan")
        cur = cur[p]
    return float("nan") if cur is None else float(cur)


def compare_table(metrics: dict[str, dict]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Variant x metric table and the best variants per metric (all that tie for the best value)."""
    rows = []
    for name, m in metrics.items():
        rows.append({"variant": name, "family": m.get("family", ""), **{col: _get(m, path) for col, path, _ in TABLE_COLUMNS}})
    table = pd.DataFrame(rows)
    best: dict[str, list[str]] = {}
    for col, _, direction in TABLE_COLUMNS:
        s = table[col]
        if direction == "none" or s.notna().sum() == 0:
            continue
        key = s.abs() if direction == "abs" else (-s if direction == "max" else s)
        winners = np.isclose(key, key.min(), rtol=0.0, atol=1e-12) & key.notna()
        best[col] = [str(v) for v in table.loc[winners, "variant"]]
    return table, best


def best_of_family(table: pd.DataFrame, family: str, column: str = "HC MAE mm") -> str | None:
    sub = table[(table["family"] == family) & table[column].notna()]
    return None if sub.empty else str(sub.loc[sub[column].idxmin(), "variant"])


def paired_hc_test(per_image: dict[str, pd.DataFrame], a: str | None, b: str | None) -> dict[str, Any]:
    """Wilcoxon signed-rank on per-image |HC error| (vs sonographer) of variants a and b."""
    if a is None or b is None:
        return {"variant_a": a, "variant_b": b, "note": "needs one landmark and one segmentation variant"}
    m = per_image[a][["image_name", "hc_abs_err_mm"]].merge(per_image[b][["image_name", "hc_abs_err_mm"]], on="image_name", suffixes=("_a", "_b"))
    res = wilcoxon_paired(m["hc_abs_err_mm_a"].to_numpy(), m["hc_abs_err_mm_b"].to_numpy())
    return {"variant_a": a, "variant_b": b, "metric": "per-image |HC error| vs sonographer (mm)", **res}


def markdown_table(table: pd.DataFrame, best: dict[str, list[str]], test: dict[str, Any], data_note: str, gest: pd.DataFrame | None = None) -> str:
    cols = ["variant", "family"] + [c for c, _, _ in TABLE_COLUMNS]
    lines = ["# Variant comparison", "", data_note, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                txt = "–" if not np.isfinite(v) else (f"{v:.0f}" if c == "failed" else f"{v:.3f}")
                if r["variant"] in best.get(c, []):
                    txt = f"**{txt}**"
                cells.append(txt)
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Best per metric: " + ", ".join(f"{k}: " + " = ".join(f"`{v}`" for v in vs) for k, vs in best.items()) + ".", ""]
    if "p_value" in test:
        lines.append(f"Paired Wilcoxon signed-rank test on {test['metric']}: `{test['variant_a']}` vs `{test['variant_b']}`, "
                     f"n = {test['n']}, median difference {test['median_diff']:.3f} mm, p = {test['p_value']:.4g}.")
    else:
        lines.append(f"Paired test: {test.get('note', 'not run')}.")
    lines += ["", "MRE/SDR: held-out predictions vs the cleaned landmark labels on rows the label audit trusts; "
              "HC/BPD/OFD: vs the sonographer (HC18 reference HC; axes of the ellipse fitted to the sonographer mask); "
              "Ellipse Dice: the predicted head ellipse vs the sonographer mask; Mask Dice: segmentation variants' masks. "
              "All numbers are out-of-fold (subject-grouped folds)."]
    lines += gestation_markdown(gest if gest is not None else pd.DataFrame())
    return "\n".join(lines) + "\n"


GESTATION_BINS = ("<100", "100-150", "150-200", "200-250", "250-300", ">300")


def gestation_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """variant x (source | HC bin): HC MAE, bias and n from each variant's ``hc_by_source`` /
    ``hc_by_bin`` (evaluate), one row per variant and group."""
    rows = []
    for name, m in metrics.items():
        for group, key in (("source", "hc_by_source"), ("hc_bin", "hc_by_bin")):
            for value, r in (m.get(key) or {}).items():
                rows.append({"variant": name, "group": group, "value": value, **{k: r.get(k) for k in ("n", "n_failed", "mae_mm", "bias_mm", "loa_low_mm", "loa_high_mm", "interval_coverage", "n_refused", "n_ok_over_10mm")}})
    return pd.DataFrame(rows)


def gestation_markdown(gest: pd.DataFrame) -> list[str]:
    """HC MAE (bias) per variant by source and by reference-HC bin, as Markdown lines."""
    if gest.empty:
        return []

    def cell(r: pd.Series) -> str:
        if r is None or r["mae_mm"] is None or not np.isfinite(float(r["mae_mm"])):
            return "–"
        return f"{float(r['mae_mm']):.2f} ({float(r['bias_mm']):+.2f}) n={int(r['n'])}"

    lines = ["", "## HC by gestation", "", "HC MAE (bias) in mm and the number of images, out-of-fold, by data source and by the "
             "sonographer's HC (mm). A bin with few images is noisy.", ""]
    for group in ("source", "hc_bin"):
        sub = gest[gest["group"] == group]
        values = [v for v in (GESTATION_BINS if group == "hc_bin" else sorted(sub["value"].unique())) if v in set(sub["value"])]
        lines += ["| variant | " + " | ".join(values) + " |", "|---|" + "---|" * len(values)]
        for name, g in sub.groupby("variant", sort=False):
            by = {r["value"]: r for _, r in g.iterrows()}
            lines.append(f"| {name} | " + " | ".join(cell(by.get(v)) for v in values) + " |")
        lines.append("")
    return lines


def _panel_grid(n: int, panel_width: float):
    """(pyplot, figure, axes) of one panel per item, at most 4 a row, the spare panels blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, n)
    ncols = min(4, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_width * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return plt, fig, axes


def draw_by_gestation(per_image: dict[str, pd.DataFrame], path: Path, edges: tuple[float, ...] = (0, 100, 150, 200, 250, 300, 400)) -> None:
    """HC error against the sonographer's HC for each variant, with its MAE and bias per bin."""
    plt, fig, axes = _panel_grid(len(per_image), 3.8)
    for ax, (name, pi) in zip(axes.ravel(), per_image.items()):
        d = pi[np.isfinite(pi["hc_err_mm"]) & np.isfinite(pi["ref_hc_mm"])]
        ax.scatter(d["ref_hc_mm"], d["hc_err_mm"], s=5, alpha=0.5, color="tab:blue")
        mids, mae, bias = [], [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            b = d[(d["ref_hc_mm"] >= lo) & (d["ref_hc_mm"] < hi)]
            if len(b):
                mids.append(float(b["ref_hc_mm"].mean()))
                mae.append(float(b["hc_err_mm"].abs().mean()))
                bias.append(float(b["hc_err_mm"].mean()))
        ax.plot(mids, mae, "-o", color="tab:red", ms=3, lw=1, label="MAE per bin")
        ax.plot(mids, bias, "-s", color="k", ms=3, lw=1, label="bias per bin")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{name} (n={len(d)})", fontsize=8)
        ax.set_xlabel("sonographer HC (mm)", fontsize=7)
        ax.set_ylabel("pred - ref HC (mm)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    fig.suptitle("HC error by head size (out-of-fold)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_ced(ceds: dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in ceds.items():
        ax.plot(c["threshold_mm"], c["fraction"], label=name)
    ax.set_xlabel("radial error threshold (mm)")
    ax.set_ylabel("fraction of landmarks")
    ax.set_title("Cumulative error distribution (held-out, trusted labels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_bland_altman(points: dict[str, pd.DataFrame], path: Path) -> None:
    plt, fig, axes = _panel_grid(len(points), 3.6)
    for ax, (name, ba) in zip(axes.ravel(), points.items()):
        d = ba.dropna()
        ax.scatter(d["mean_mm"], d["diff_mm"], s=6, alpha=0.6)
        if len(d) > 1:
            m, s = d["diff_mm"].mean(), d["diff_mm"].std(ddof=1)
            for y, ls in ((m, "-"), (m - 1.96 * s, "--"), (m + 1.96 * s, "--")):
                ax.axhline(y, color="k", ls=ls, lw=0.8)
        if d.empty:
            ax.text(0.5, 0.5, "no HC predicted\n(every image failed)", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_title(f"{name} (n={len(d)})", fontsize=8)
        ax.set_xlabel("mean HC (mm)", fontsize=7)
        ax.set_ylabel("pred - ref (mm)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("Bland–Altman: predicted HC vs sonographer", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_worst_cases(variant: str, per_image: pd.DataFrame, clean: pd.DataFrame, oof: pd.DataFrame, images_root: Path, path: Path, n: int = 8) -> None:
    """Montage of the largest |HC error| images of ``variant``: reference (sonographer mask in
    yellow, cleaned label points in green) and prediction (points and ellipse in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fetalbio.geometry.ellipse import ellipse_from_points, ellipse_to_mask

    worst = per_image.assign(_k=per_image["hc_abs_err_mm"].fillna(np.inf)).sort_values("_k", ascending=False).head(n)
    cl = clean.set_index("image_name")
    pr = oof.set_index("image_name")
    ncols = min(4, max(1, len(worst)))
    nrows = max(1, int(np.ceil(len(worst) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, r) in zip(axes.ravel(), worst.iterrows()):
        c = cl.loc[r["image_name"]]
        img = read_gray8(images_root / c["image_path"]).pixels
        ax.imshow(img, cmap="gray")
        if isinstance(c["mask_path"], str) and c["mask_path"]:
            ax.contour(read_mask(images_root / c["mask_path"]), levels=[0.5], colors="yellow", linewidths=0.7)
        ref = c[list(POINT_COLUMNS)].to_numpy(dtype=float).reshape(4, 2)
        ax.plot(ref[:, 0], ref[:, 1], "o", color="lime", ms=3)
        p = pr.loc[r["image_name"], list(POINT_COLUMNS)].to_numpy(dtype=float).reshape(4, 2)
        if np.all(np.isfinite(p)):
            ax.plot(p[:2, 0], p[:2, 1], "-x", color="red", ms=4, lw=1)
            ax.plot(p[2:, 0], p[2:, 1], "-x", color="red", ms=4, lw=1)
            e = ellipse_to_mask(ellipse_from_points(p), (img.shape[1], img.shape[0]))
            ax.contour(e, levels=[0.5], colors="red", linewidths=0.6)
        err = r["hc_abs_err_mm"]
        ax.set_title(f"{r['image_name']}  |HC err| {err:.1f} mm" if np.isfinite(err) else f"{r['image_name']}  failed: {r['reason']}", fontsize=7)
    fig.suptitle(f"Worst cases of {variant} (yellow: sonographer mask, green: cleaned labels, red: prediction)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
