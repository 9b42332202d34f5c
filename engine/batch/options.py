"""What a batch run is given and what it answers: options, summary, the errors it raises."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FORMATS", "BatchError", "BatchOptions", "Summary", "format_of"]

FORMATS = ("jsonl", "csv")


class BatchError(Exception):
    """The batch cannot start or resume (not a bad row): one line saying what to do."""


@dataclass(frozen=True)
class BatchOptions:
    input: Path
    output: Path
    policy: str
    as_of: datetime.date | None = None
    allow_draft: bool = False
    workers: int = 1
    audit: Path | None = None
    resume: bool = False
    trace: bool = False
    input_format: str | None = None  # from the suffix when None: .csv, else jsonl
    output_format: str | None = None
    columns: Mapping[str, str | None] | None = None  # CSV header -> field path
    delimiter: str = ","
    # Rows per task sent to a worker (and between progress reports): each task is one
    # bytes object out and one back, so the hop costs little per row.
    chunk: int = 500


@dataclass(frozen=True)
class Summary:
    rows: int  # rows in the output (all of them, including those of an earlier run)
    failed: int
    resumed_from: int  # rows already done when this run started
    seconds: float
    rules_id: str
    already_complete: bool = False  # resumed a run that had finished: nothing was done
    valuing_seconds: float = 0.0  # from the first row valued to the last: what rate measures

    @property
    def rate(self) -> float:
        """Rows valued by this run per second of valuing (what the progress bar shows)."""
        new = self.rows - self.resumed_from
        return new / self.valuing_seconds if self.valuing_seconds > 0 else 0.0


def format_of(path: Path, given: str | None) -> str:
    if given:
        return given
    if path.suffix.lower() == ".parquet" or path.is_dir():  # a Parquet file or dataset folder
        return "parquet"
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"
