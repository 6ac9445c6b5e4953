"""scripts/collect_results.py: a run stopped before `final` must not pass off the checkout's
(sample) model card and final metrics as its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("collect_results", REPO / "scripts" / "collect_results.py")
collect_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collect_results)


def _lock(final_compare_md5: str, final_seed: int) -> dict:
    return {
        "compare": {"outs": [{"path": "metrics/compare.json", "md5": "aaa"}]},
        "final": {"deps": [{"path": "metrics/compare.json", "md5": final_compare_md5}], "params": {"params.yaml": {"seed": final_seed}}},
    }


def test_final_is_current() -> None:
    ok = collect_results._final_is_current
    assert ok(_lock("aaa", 42), {"seed": 42})
    assert not ok(_lock("bbb", 42), {"seed": 42})  # final ran on another compare output
    assert not ok(_lock("aaa", 42), {"seed": 1})  # final ran with other params
    assert not ok({"compare": _lock("aaa", 42)["compare"]}, {"seed": 42})  # no final at all
    assert not ok({"final": {"deps": [{"path": "x", "md5": "1"}]}}, {})  # nothing to compare
