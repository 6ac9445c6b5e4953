"""Data: ingest, label audit, folds, tables, transforms (no torch here).

Public names are re-exported lazily (PEP 562) so that a stage importing one light module does
not pay for sklearn/scipy imports it does not use. The image reading and safe paths live in
:mod:`fetalbio.io` (the bottom layer) and are re-exported here.
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
    "ImageReadError": "fetalbio.io",
    "UnsafePathError": "fetalbio.io",
    "read_gray8": "fetalbio.io",
    "safe_join": "fetalbio.io",
    "AuditResult": "labels",
    "audit": "labels",
    "draw_audit_picture": "labels",
    "read_clean": "tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = _EXPORTS[name]
        return getattr(importlib.import_module(module if module.startswith("fetalbio.") else f"fetalbio.data.{module}"), name)
    raise AttributeError(f"module 'fetalbio.data' has no attribute {name!r}")
