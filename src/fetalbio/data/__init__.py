"""Data: ingest, label audit, folds, tables, transforms (no torch here).

Public names are re-exported lazily (PEP 562) so that a stage importing one light module does
not pay for sklearn/scipy imports it does not use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "assign_folds": "folds",
    "fold_summary": "folds",
    "head_size": "folds",
    "TABLE_COLUMNS": "ingest",
    "IngestError": "ingest",
    "IngestResult": "ingest",
    "Issue": "ingest",
    "ingest": "ingest",
    "read_ingested": "ingest",
    "subject_from_name": "tables",
    "ImageReadError": "io",
    "UnsafePathError": "io",
    "read_gray8": "io",
    "safe_join": "io",
    "AuditResult": "labels",
    "audit": "labels",
    "draw_audit_picture": "labels",
    "read_clean": "tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fetalbio.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fetalbio.data' has no attribute {name!r}")
