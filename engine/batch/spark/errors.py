"""What stops a Spark job before any task runs (never a bad row: that is an error row)."""

from __future__ import annotations


class SparkJobError(Exception):
    """A Spark job cannot start (not a bad row): one line saying what to do."""
