"""compare-runs: two runs' per-image HC errors paired image by image, with the checks that make
the pairing honest (same images, folds, reference) and a subject-grouped bootstrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stage_cli import app  # the stage scripts and the fetalbio command in one app
from typer.testing import CliRunner

from fetalbio.reporting.runs import compare_runs, pair_runs, read_run, runs_markdown, subject_bootstrap_ci

runner = CliRunner()


def _table(n_subjects: int = 40, seed: int = 0) -> pd.DataFrame:
    """Two images per subject (``007_HC.png``, ``007_2HC.png``), five folds by subject."""
    rng = np.random.default_rng(seed)
    names, folds = [], []
    for s in range(n_subjects):
        for suffix in ("HC", "2HC"):
            names.append(f"{s:03d}_{suffix}.png")
            folds.append(s % 5)
    return pd.DataFrame(
        {
            "image_name": names,
            "fold": folds,
            "status": "ok",
            "ref_hc_mm": rng.uniform(60.0, 190.0, len(names)),
            "hc_err_mm": rng.normal(0.0, 1.5, len(names)),
            "hc_abs_err_mm": 0.0,  # extra columns are ignored
        }
    )


def _write(root: Path, variant: str, table: pd.DataFrame) -> str:
    d = root / "plots" / "variants" / variant
    d.mkdir(parents=True)
    table.to_csv(d / "per_image.csv", index=False)
    return f"{root}:{variant}"


def test_paired_difference_and_interval(tmp_path: Path) -> None:
    a = _table()
    b = a.copy()
    # B is worse by exactly 1 mm on every image: |err| + 1 with the sign kept
    b["hc_err_mm"] = np.sign(a["hc_err_mm"]) * (a["hc_err_mm"].abs() + 1.0)
    b.loc[3, "hc_err_mm"] = np.nan  # a failed fit in B: counted, left out of the pairs
    res = compare_runs(read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "w", b)), n_boot=500)
    p = res["paired"]
    assert res["a"]["n"] == 80 and res["a"]["failed"] == 0
    assert res["b"]["n"] == 79 and res["b"]["failed"] == 1
    assert p["n_images"] == 79 and p["n_subjects"] == 40
    assert p["mae_diff"] == pytest.approx(-1.0)
    lo, hi = p["mae_diff_ci95"]
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(-1.0)  # a constant difference has no spread
    assert p["share_a_closer"] == 1.0 and p["wilcoxon_p"] < 1e-6
    assert res["a"]["mae"] == pytest.approx(a["hc_err_mm"].abs().mean())
    assert res["b"]["bias"] == pytest.approx(b["hc_err_mm"].mean())
    assert sum(t["n"] for t in p["by_ref_hc_tercile"]) == 79
    md = runs_markdown(res)
    assert "| B | 79 | 1 |" in md and "-1.000 mm" in md


def test_no_difference_interval_covers_zero(tmp_path: Path) -> None:
    a = _table(seed=1)
    b = a.copy()
    b["hc_err_mm"] = _table(seed=2)["hc_err_mm"]  # same distribution, other draws
    p = compare_runs(read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "v", b)))["paired"]
    lo, hi = p["mae_diff_ci95"]
    assert lo < p["mae_diff"] < hi
    assert lo < 0.0 < hi


def test_subject_bootstrap_resamples_whole_subjects() -> None:
    # one subject with many identical images dominates an image bootstrap, not a subject one
    values = np.array([10.0] * 50 + [0.0, 0.0, 0.0, 0.0])
    subjects = np.array(["big"] * 50 + ["a", "b", "c", "d"])
    lo, hi = subject_bootstrap_ci(values, subjects, n_boot=4000, seed=0)
    # a draw without "big" has mean 0; one with it is far above; the interval spans both
    assert lo == pytest.approx(0.0) and hi > 9.0
    assert subject_bootstrap_ci(values, subjects, n_boot=200, seed=3) == subject_bootstrap_ci(values, subjects, n_boot=200, seed=3)
    with pytest.raises(ValueError, match="finite"):
        subject_bootstrap_ci(np.array([1.0, np.nan]), np.array(["a", "b"]))


def test_different_folds_refused(tmp_path: Path) -> None:
    a = _table()
    b = a.copy()
    b.loc[b["image_name"] == "012_2HC.png", "fold"] = 4
    with pytest.raises(ValueError, match=r"different folds: 1 image\(s\) differ, e.g. 012_2HC.png is in fold 2"):
        pair_runs(read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "v", b)))


def test_different_images_refused(tmp_path: Path) -> None:
    a = _table()
    b = a.drop(index=[5]).reset_index(drop=True)
    with pytest.raises(ValueError, match=r"1 image\(s\) only in .*A/plots/variants/v/per_image.csv \(002_2HC.png\)"):
        pair_runs(read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "v", b)))


def test_different_reference_refused(tmp_path: Path) -> None:
    a = _table()
    b = a.copy()
    b.loc[0, "ref_hc_mm"] += 2.0
    with pytest.raises(ValueError, match="different reference HCs: 1 image.*000_HC.png"):
        pair_runs(read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "v", b)))


def _set(row: int, col: str, value):
    """A table edit: cell (row, col) of :func:`_table` set to ``value``."""

    def edit(t: pd.DataFrame) -> pd.DataFrame:
        t = t.astype({col: object})
        t.loc[row, col] = value
        return t

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.drop(columns=["fold"]), r"per_image.csv: missing column\(s\) fold"),
        (_set(6, "hc_err_mm", "1.2mm"), r"per_image.csv: row 8, column hc_err_mm: '1.2mm' is not a finite number"),
        (_set(2, "image_name", "000_2HC.png"), r"row 4, column image_name: '000_2HC.png' appears more than once"),
        (_set(9, "fold", ""), r"row 11, column fold: '' is not a fold number"),
        (_set(0, "ref_hc_mm", np.inf), r"row 2, column ref_hc_mm: 'inf' is not a finite number"),
    ],
    ids=["missing-column", "text-error", "repeated-image", "empty-fold", "infinite-reference"],
)
def test_bad_tables_name_file_row_and_column(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_run(_write(tmp_path / "A", "v", edit(_table())))


def test_bad_specs_and_unreadable_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected RUN_DIR:VARIANT"):
        read_run("results-without-variant")
    with pytest.raises(FileNotFoundError, match="no per-image table at"):
        read_run(f"{tmp_path}:nothing")
    (tmp_path / "F" / "plots" / "variants" / "v").mkdir(parents=True)
    (tmp_path / "F" / "plots" / "variants" / "v" / "per_image.csv").write_text("")
    with pytest.raises(ValueError, match=r"F/plots/variants/v/per_image.csv: not a readable CSV table"):
        read_run(f"{tmp_path / 'F'}:v")


def test_terciles_and_limits(tmp_path: Path) -> None:
    a = _table()
    ref = a["ref_hc_mm"].to_numpy()
    a["hc_err_mm"] = np.where(ref > np.quantile(ref, 2 / 3), 3.0, 0.5)  # only the largest heads are off
    b = a.copy()
    b["hc_err_mm"] = -1.0
    b.loc[0, "hc_err_mm"] = 1.0  # one sign flip: the absolute error ties with the others
    res = compare_runs(read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "v", b)), n_boot=200)
    t = res["paired"]["by_ref_hc_tercile"]
    assert [x["mae_a"] for x in t] == pytest.approx([0.5, 0.5, 3.0])
    assert [x["mae_b"] for x in t] == pytest.approx([1.0, 1.0, 1.0])
    assert [x["n"] for x in t] == [27, 26, 27]
    e = b["hc_err_mm"]
    assert res["b"]["loa_low"] == pytest.approx(e.mean() - 1.96 * e.std())
    assert res["b"]["loa_high"] == pytest.approx(e.mean() + 1.96 * e.std())
    assert res["b"]["median_ae"] == 1.0 and res["b"]["p95_ae"] == 1.0
    assert res["paired"]["share_tied"] == 0.0
    assert res["paired"]["share_a_closer"] == pytest.approx(np.mean(a["hc_err_mm"] < 1.0))


def test_no_common_measurement_refused(tmp_path: Path) -> None:
    a = _table()
    b = a.copy()
    a.loc[: len(a) // 2 - 1, "hc_err_mm"] = np.nan
    b.loc[len(b) // 2 :, "hc_err_mm"] = np.nan
    with pytest.raises(ValueError, match="no image was measured by both"):
        compare_runs(read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "v", b)))


def test_cli_writes_report_and_reports_errors(tmp_path: Path) -> None:
    a = _table()
    b = a.copy()
    b["hc_err_mm"] = a["hc_err_mm"] * 2.0
    spec_a, spec_b = _write(tmp_path / "A", "v", a), _write(tmp_path / "B", "v", b)
    out, js = tmp_path / "out" / "runs.md", tmp_path / "out" / "runs.json"
    res = runner.invoke(app, ["compare-runs", spec_a, spec_b, "--out", str(out), "--json", str(js), "--resamples", "200"])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("# Paired comparison of two runs")
    assert '"mae_diff"' in js.read_text()
    bad = runner.invoke(app, ["compare-runs", spec_a, f"{tmp_path}:missing", "--out", str(out)])
    assert bad.exit_code == 1 and "no per-image table" in bad.output and "Traceback" not in bad.output


def test_cli_pairs_several_variants_of_one_run_with_b(tmp_path: Path) -> None:
    """``RUN_DIR:V1,V2`` pairs each variant with B: one summary row each, in the order given."""
    base = _table(seed=3)
    better, worse = base.copy(), base.copy()
    better["hc_err_mm"] = base["hc_err_mm"] * 0.5
    worse["hc_err_mm"] = np.sign(base["hc_err_mm"]) * (base["hc_err_mm"].abs() + 2.0)
    _write(tmp_path / "run", "better", better)
    _write(tmp_path / "run", "worse", worse)
    spec_b = _write(tmp_path / "run", "ref", base)
    out = tmp_path / "vs.md"
    res = runner.invoke(app, ["compare-runs", f"{tmp_path / 'run'}:worse,better", spec_b, "--out", str(out), "--resamples", "200"])
    assert res.exit_code == 0, res.output
    md = out.read_text()
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [f"{tmp_path / 'run'}:worse", f"{tmp_path / 'run'}:better"]
    assert "| +2.000 |" in rows[0] and rows[1].split("|")[5].strip().startswith("-")
    assert md.count("## Paired comparison") == 2
    bad = runner.invoke(app, ["compare-runs", f"{tmp_path / 'run'}:better,missing", spec_b, "--out", str(out)])
    assert bad.exit_code == 1 and "missing" in bad.output


def test_landmark_mre_is_paired_on_trusted_images_only(tmp_path: Path) -> None:
    """With point errors in both tables, the per-image MRE (trusted labels only) is paired too."""
    a = _table(seed=4)
    rng = np.random.default_rng(5)
    pts = rng.uniform(1.0, 3.0, (len(a), 4))
    for i, p in enumerate(("ofd_1", "ofd_2", "bpd_1", "bpd_2")):
        a[f"err_{p}_mm"] = pts[:, i]
    a["label_trusted"] = [i % 4 != 0 for i in range(len(a))]  # a quarter untrusted
    b = a.copy()
    for p in ("ofd_1", "ofd_2", "bpd_1", "bpd_2"):
        b[f"err_{p}_mm"] = a[f"err_{p}_mm"] + 0.5
    b.loc[~a["label_trusted"], "err_ofd_1_mm"] = 99.0  # untrusted rows must not count
    res = compare_runs(read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "w", b)), n_boot=300)
    q = res["paired_mre"]
    assert q["n_images"] == int(a["label_trusted"].sum())
    assert q["mre_diff"] == pytest.approx(-0.5) and q["mre_diff_ci95"] == pytest.approx([-0.5, -0.5])
    assert q["mre_a"] == pytest.approx(pts[a["label_trusted"].to_numpy()].mean())
    assert "MRE" in runs_markdown(res)
    # tables without point errors: no landmark pairing
    assert compare_runs(read_run(_write(tmp_path / "C", "v", _table())), read_run(_write(tmp_path / "D", "v", _table())), n_boot=100)["paired_mre"] is None


def test_common_images_pair_runs_on_other_data_and_folds(tmp_path: Path) -> None:
    a = _table(n_subjects=40)  # a run on more data (subjects 0-39), its own folds
    a["fold"] = (a.index // 2) % 3
    b = _table(n_subjects=30)  # an earlier run on subjects 0-29, five folds
    b["hc_err_mm"] = b["hc_err_mm"] + 1.0  # B is 1 mm off on every image
    a.loc[: len(b) - 1, "ref_hc_mm"] = b["ref_hc_mm"].to_numpy()  # the same reference on the shared images
    ra, rb = read_run(_write(tmp_path / "A", "v", a)), read_run(_write(tmp_path / "B", "v", b))
    with pytest.raises(ValueError, match="only in"):
        compare_runs(ra, rb)  # without the option: refused
    res = compare_runs(ra, rb, n_boot=200, common=True)
    assert res["common_images_only"] and res["paired"]["n_images"] == len(b)
    shared = a.iloc[: len(b)]
    assert res["paired"]["mae_a"] == pytest.approx(shared["hc_err_mm"].abs().mean())
    assert res["paired"]["mae_b"] == pytest.approx(b["hc_err_mm"].abs().mean())
    assert "Paired on the images both runs measured" in runs_markdown(res)
    off = b.copy()
    off.loc[0, "ref_hc_mm"] += 5.0
    with pytest.raises(ValueError, match="different reference HCs"):  # the reference must still agree
        compare_runs(ra, read_run(_write(tmp_path / "C", "v", off)), common=True)
