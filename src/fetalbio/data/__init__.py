"""Data: ingest, label audit, folds (no torch here)."""

from fetalbio.data.folds import assign_folds, fold_summary, head_size
from fetalbio.data.ingest import TABLE_COLUMNS, IngestError, IngestResult, Issue, ingest, read_ingested, subject_from_name
from fetalbio.data.io import ImageReadError, UnsafePathError, read_gray8, safe_join
from fetalbio.data.labels import AuditResult, audit, draw_audit_picture, read_clean

__all__ = [
    "TABLE_COLUMNS",
    "AuditResult",
    "ImageReadError",
    "IngestError",
    "IngestResult",
    "Issue",
    "UnsafePathError",
    "assign_folds",
    "audit",
    "draw_audit_picture",
    "fold_summary",
    "head_size",
    "ingest",
    "read_clean",
    "read_gray8",
    "read_ingested",
    "safe_join",
    "subject_from_name",
]
