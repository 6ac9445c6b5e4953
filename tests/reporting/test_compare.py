"""compare_table / markdown_table on fake per-variant metric dicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fetalbio.reporting.compare import TABLE_COLUMNS, best_of_family, compare_table, markdown_table, paired_hc_test


def _metrics(mre: float, sdr2: float, mae: float, bias: float, failed: int, family: str, ell_dice: float | None = None, mask_dice: float | None = None) -> dict:
    return {
        "family": family,
        "n_failed": failed,
        "landmarks_vs_clean_labels": {"mre_mm": mre, "mre_px": mre * 10, "sdr_2mm": sdr2, "sdr_2.5mm": sdr2},
        "segmentation": {"ellipse_dice": ell_dice, **({"mask_dice": mask_dice} if mask_dice is not None else {})},
        "measurements_vs_sonographer": {
            "hc": {"mae": mae, "bias": bias, "bland_altman": {"loa_low": bias - 5, "loa_high": bias + 5}},
            "bpd": {"mae": mae / 3},
            "ofd": {"mae": mae / 2},
        },
    }


METRICS = {
    # A: better MRE, larger |bias| but *smaller* signed bias, more failures
    "A_landmark": _metrics(mre=0.8, sdr2=0.70, mae=3.0, bias=-2.0, failed=3, family="landmark", ell_dice=None),
    # B: better SDR, HC MAE, |bias|, failures; the only one with a Dice
    "B_seg": _metrics(mre=1.1, sdr2=0.90, mae=2.0, bias=0.5, failed=0, family="segmentation", ell_dice=0.95, mask_dice=0.93),
}


def test_compare_table_best_per_metric() -> None:
    table, best = compare_table(METRICS)
    assert list(table["variant"]) == ["A_landmark", "B_seg"]
    assert list(table["family"]) == ["landmark", "segmentation"]
    assert set(table.columns) == {"variant", "family", *(c for c, _, _ in TABLE_COLUMNS)}
    row = table.set_index("variant")
    assert row.loc["A_landmark", "HC bias mm"] == -2.0 and row.loc["B_seg", "MRE mm"] == 1.1
    assert math.isnan(row.loc["A_landmark", "Ellipse Dice"]) and math.isnan(row.loc["A_landmark", "Mask Dice"])
    assert best["MRE mm"] == ["A_landmark"] and best["MRE px"] == ["A_landmark"]  # min
    assert best["SDR@2mm"] == ["B_seg"] and best["SDR@2.5mm"] == ["B_seg"]  # max
    assert best["HC MAE mm"] == ["B_seg"] and best["BPD MAE mm"] == ["B_seg"] and best["OFD MAE mm"] == ["B_seg"]
    assert best["HC bias mm"] == ["B_seg"]  # |0.5| < |-2.0| although -2.0 < 0.5
    assert best["failed"] == ["B_seg"]
    assert best["Ellipse Dice"] == ["B_seg"] and best["Mask Dice"] == ["B_seg"]  # NaN never wins
    assert "HC LoA low" not in best and "HC LoA high" not in best  # direction "none"


def test_compare_table_abs_direction_other_way_round() -> None:
    m = {"A": _metrics(1, 0.5, 1, -0.1, 0, "landmark"), "B": _metrics(1, 0.5, 1, 3.0, 0, "landmark")}
    _, best = compare_table(m)
    assert best["HC bias mm"] == ["A"]
    m = {"A": _metrics(1, 0.5, 1, -3.0, 0, "landmark"), "B": _metrics(1, 0.5, 1, 0.0, 0, "landmark")}
    _, best = compare_table(m)
    assert best["HC bias mm"] == ["B"]


def test_compare_table_ties_and_missing_metrics() -> None:
    m = {"first": _metrics(1.0, 0.5, 2.0, 0.1, 1, "landmark"), "second": _metrics(1.0, 0.5, 2.0, -0.1, 1, "landmark")}
    _, best = compare_table(m)
    assert best["MRE mm"] == ["first", "second"] and best["HC bias mm"] == ["first", "second"]  # ties: all named
    assert best["failed"] == ["first", "second"]
    md = markdown_table(*compare_table(m), {"note": "n/a"}, "data")
    assert "MRE mm: `first` = `second`" in md
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith(("| first", "| second"))]
    assert len(rows) == 2 and all(r[2] == "**1.000**" for r in rows)  # column "MRE mm", bold in both rows
    assert "Ellipse Dice" not in best and "Mask Dice" not in best  # all NaN: no best
    table, best = compare_table({"only": {"family": "landmark"}})
    assert table.drop(columns=["variant", "family"]).isna().all(axis=None) and best == {}


def test_best_of_family() -> None:
    table, _ = compare_table(METRICS)
    assert best_of_family(table, "landmark") == "A_landmark"
    assert best_of_family(table, "segmentation") == "B_seg"
    assert best_of_family(table, "nothing") is None


def test_markdown_table_lists_every_variant_and_marks_the_best() -> None:
    table, best = compare_table(METRICS)
    md = markdown_table(table, best, {"note": "needs one landmark and one segmentation variant"}, "data: synthetic")
    lines = md.splitlines()
    assert lines[0] == "# Variant comparison" and "data: synthetic" in md
    header = next(ln for ln in lines if ln.startswith("| variant"))
    assert all(c in header for c, _, _ in TABLE_COLUMNS)
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| variant")]
    assert len(rows) == 2
    for name in METRICS:
        assert sum(ln.startswith(f"| {name} |") for ln in rows) == 1
    n_cols = header.count("|")
    assert all(ln.count("|") == n_cols for ln in rows)
    a_row = next(ln for ln in rows if ln.startswith("| A_landmark"))
    b_row = next(ln for ln in rows if ln.startswith("| B_seg"))
    assert "**0.800**" in a_row and "**0.500**" in b_row and "**0**" in b_row  # MRE, |bias|, failed
    assert "–" in a_row  # missing Dice
    assert "Best per metric" in md and "`B_seg`" in md and "needs one landmark" in md


def test_paired_hc_test_and_markdown() -> None:
    rng = np.random.default_rng(0)
    names = [f"{i}.png" for i in range(20)]
    a = pd.DataFrame({"image_name": names, "hc_abs_err_mm": rng.uniform(0, 1, 20)})
    b = pd.DataFrame({"image_name": names[::-1], "hc_abs_err_mm": rng.uniform(2, 3, 20)})
    res = paired_hc_test({"A": a, "B": b}, "A", "B")
    assert res["variant_a"] == "A" and res["variant_b"] == "B" and res["n"] == 20
    assert res["p_value"] < 0.01
    table, best = compare_table(METRICS)
    md = markdown_table(table, best, res, "")
    assert "Paired Wilcoxon" in md and "n = 20" in md
    assert "note" in paired_hc_test({}, None, "B")
