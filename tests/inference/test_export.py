"""The final stage's choices: which variant, the uncertainty threshold; the tercile metric."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fetalbio import UNC_COLUMNS
from fetalbio.inference.export import choose_variant, uncertainty_threshold
from fetalbio.metrics.biometry import errors_by_tercile

CMP = {"best": {"HC MAE mm": ["seg_b", "seg_a"]}, "table": []}


def test_choose_variant_auto_named_and_refused() -> None:
    assert choose_variant(CMP, "auto", ["hm_unet", "seg_a", "seg_b"]) == "seg_b"  # ties: the first listed
    assert choose_variant({"best": {"HC MAE mm": "seg_a"}}, "auto", ["seg_a"]) == "seg_a"
    assert choose_variant(CMP, "hm_unet", ["hm_unet", "seg_b"]) == "hm_unet"
    with pytest.raises(ValueError, match="not among the trained variants"):
        choose_variant(CMP, "seg_c", ["hm_unet", "seg_b"])
    with pytest.raises(ValueError, match="not among the trained variants"):
        choose_variant(CMP, "auto", ["hm_unet"])
    with pytest.raises(ValueError, match="names no best variant"):
        choose_variant({"best": {}}, "auto", ["hm_unet"])


def test_uncertainty_threshold_is_the_quantile_of_ok_rows() -> None:
    u = np.arange(1, 11, dtype=float)  # per-image mean uncertainty 1..10
    oof = pd.DataFrame({c: u for c in UNC_COLUMNS}).assign(status="ok")
    oof.loc[9, "status"] = "failed"  # the 10 is left out
    oof.loc[0, UNC_COLUMNS[0]] = np.nan  # a NaN point does not hide the others
    assert uncertainty_threshold(oof, 0.5) == pytest.approx(5.0)
    assert uncertainty_threshold(oof.assign(**{c: np.nan for c in UNC_COLUMNS}), 0.95) is None


def test_errors_by_tercile_by_hand() -> None:
    ref = np.array([100.0, 110, 120, 200, 210, 220, 300, 310, 320])
    pred = ref + np.array([1.0, -1, 1, 2, 2, -2, 3, np.nan, -3])
    out = errors_by_tercile(pred, ref)
    t = out["terciles"]
    assert [x["n"] for x in t] == [3, 3, 3] and [x["n_failed"] for x in t] == [0, 0, 1]
    assert [x["mae"] for x in t] == pytest.approx([1.0, 2.0, 3.0])
    assert t[0]["bias"] == pytest.approx(1 / 3) and t[2]["bias"] == pytest.approx(0.0)
    assert out["largest_over_smallest"] == pytest.approx(3.0)
    assert errors_by_tercile(pred[:2], ref[:2])["terciles"] == []
