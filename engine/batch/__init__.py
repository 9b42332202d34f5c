"""Batch valuation of a bordereau (`tiv batch`).

`readers` turns JSONL or CSV rows into shipment facts; `runner` values them over worker
processes (`pool`) into a JSONL or CSV output that survives a kill (`--resume`);
`progress` is the terminal progress bar every long verb shows.
"""

from engine.batch.options import FORMATS, BatchError, BatchOptions, Summary, format_of
from engine.batch.readers import Row, count_rows, csv_columns, read_rows
from engine.batch.runner import csv_header, progress_path, run_batch

__all__ = [
    "FORMATS",
    "BatchError",
    "BatchOptions",
    "Row",
    "Summary",
    "count_rows",
    "csv_columns",
    "csv_header",
    "format_of",
    "progress_path",
    "read_rows",
    "run_batch",
]
