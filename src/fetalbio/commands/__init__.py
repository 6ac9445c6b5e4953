"""Thin Typer commands, one per DVC stage: options -> params section -> one library call -> outputs."""
