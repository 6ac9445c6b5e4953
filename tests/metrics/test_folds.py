"""Mean ± std over cross-validation folds."""

import math

import pandas as pd
import pytest

from fetalbio.metrics import summarize_over_folds


def test_summarize_over_folds_hand():
    df = pd.DataFrame({"fold": [0, 0, 1, 1, 2, 2], "mre_mm": [1.0, 3.0, 2.0, 2.0, 5.0, 7.0]})
    out = summarize_over_folds(df, ["mre_mm"])
    # per-fold means [2, 2, 6]: mean 10/3; deviations [-4/3, -4/3, 8/3] -> (96/9) / 2 = 48/9
    assert out["mre_mm"]["mean"] == pytest.approx(10 / 3)
    assert out["mre_mm"]["std"] == pytest.approx(math.sqrt(48 / 9))
    assert out["mre_mm"]["n_folds"] == 3


def test_summarize_over_folds_single_fold_and_missing_column():
    out = summarize_over_folds(pd.DataFrame({"k": [0], "dice": [0.9]}), ["dice"], fold_col="k")
    assert out["dice"]["mean"] == pytest.approx(0.9) and math.isnan(out["dice"]["std"])
    with pytest.raises(KeyError):
        summarize_over_folds(pd.DataFrame({"fold": [0]}), ["hc_mm"])
