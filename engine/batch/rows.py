"""The one place Spark and Parquet code reach into the batch module's row encoding.

`tiv batch` turns each input row into one line of JSON (a valuation or an error row);
Spark and the Parquet reader must produce byte-identical lines, so they use the very
same code rather than a copy. When `engine.batch` is split into a package, repoint the
import below and nothing else changes.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# The batch row reader and encoder: repoint these imports here only.
from engine.batch.options import BatchOptions
from engine.batch.readers import Row, RowsChunk, read_rows
from engine.batch.runner import _headers, _Job, _Valuer
from engine.loading.snapshot import Snapshot

__all__ = ["Row", "RowEncoder", "csv_headers", "csv_rows"]


def csv_rows(path: str | Path) -> Iterator[Row]:
    """A CSV bordereau's rows exactly as `tiv batch` reads them (header of field paths)."""
    return read_rows(_options(path))


def csv_headers(path: str | Path) -> dict[str, str]:
    """Field path -> CSV header, so error rows name the column as batch's do."""
    return _headers(_options(path))


def _options(path: str | Path) -> BatchOptions:
    # Only the input matters to the reader; the output is never opened.
    return BatchOptions(input=Path(path), output=Path(path), policy="", input_format="csv")


class RowEncoder:
    """Rows in, the JSON lines `tiv batch` writes for them out (without the newline)."""

    def __init__(
        self,
        snapshot: Snapshot,
        policy: str,
        *,
        as_of: datetime.date | None = None,
        allow_draft: bool = False,
        trace: bool = False,
        audit: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        job = _Job(
            policy=policy,
            as_of=as_of,
            allow_draft=allow_draft,
            trace=trace,
            output_format="jsonl",
            header=(),
            headers=dict(headers or {}),  # field path -> CSV header, for error rows
            audit=audit,
        )
        self._valuer = _Valuer(snapshot, job)

    def encode(self, rows: Sequence[Row]) -> list[str]:
        data, _count, _failed = self._valuer.run(RowsChunk(tuple(rows)))
        text = data.decode("utf-8")
        # JSON escapes newlines inside strings: one line per row, always.
        return text.split("\n")[:-1] if text else []

    def close(self) -> None:
        audit: Any = self._valuer.audit
        if audit is not None:
            audit.close()
