"""Writers for metrics, plots data and reports."""

from fetalbio.reporting.files import write_csv, write_json, write_text

__all__ = ["write_csv", "write_json", "write_text"]
