"""Arrow batches of input in, `tiv batch`'s rows out, numbered as `tiv batch` numbers them.

`row`: the Nth non-blank line or record; `line`: the physical line (for Parquet, the
record number). Without `row`/`line` columns, a small counting job gives each input
partition its offsets first, partitions in input order.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from engine.batch.rows import Row
from engine.batch.spark.columns import FACTS
from engine.errors import Problem

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def input_offsets(df: DataFrame, text: bool) -> dict[int, tuple[int, int]]:
    """Per input partition: (lines before it, rows before it), from one small counting job.

    Partitions are taken in input order: by the file and the place in it where each
    starts (Spark packs a folder's files into partitions by size, not name; `tiv batch`
    reads a folder's part files in name order), or by partition id where the DataFrame
    does not come straight from files. Lines are records for Parquet; for text a blank
    line (whitespace only, as batch strips it) is a line but not a row.
    """
    from pyspark.sql import functions as F

    # Only the partition id, the file, and for text blankness are read: Parquet prunes
    # every other column.
    blank = F.regexp_replace(F.col(FACTS), r"^\s+", "") == ""
    filled = F.when(blank, 0).otherwise(1) if text else F.lit(1)
    narrow = df.select(
        F.spark_partition_id().alias("p"),
        F.input_file_name().alias("file"),
        F.input_file_block_start().alias("start"),
        filled.alias("filled"),
    )
    counted = narrow.groupBy("p").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum("filled").alias("k"),
        F.min("file").alias("file"),
        F.min("start").alias("start"),
    )
    found = counted.collect()
    found.sort(
        key=lambda r: (r["file"] or "", r["start"] if r["start"] is not None else -1, r["p"])
    )
    offsets, lines, rows = {}, 0, 0
    for r in found:
        offsets[int(r["p"])] = (lines, rows)
        lines += int(r["n"])
        rows += int(r["k"] or 0)
    return offsets


def partition_id() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.partitionId() if context is not None else 0


def rows_of(
    batch: pa.RecordBatch,
    text: bool,
    counters: list[int],
    minor_units: Mapping[str, int],
    numbered: bool,
    not_facts: frozenset[str] = frozenset(),
) -> tuple[list[Row], list[int]]:
    """Batch rows (as `tiv batch` reads them) and the positions in `batch` they came from.

    `not_facts`: columns kept for the output that are not shipment facts (a table's
    partition column named as a key, say)."""
    from engine.batch.parquet import facts_of

    rows: list[Row] = []
    kept: list[int] = []
    names = batch.schema.names
    given_rows = batch.column("row").to_pylist() if numbered else None
    given_lines = batch.column("line").to_pylist() if numbered and "line" in names else None
    if "problems" in names:  # CSV read by batch's reader on the driver: rows as it made them
        pairs = zip(
            batch.column(FACTS).to_pylist(), batch.column("problems").to_pylist(), strict=True
        )
        for index, (item, found) in enumerate(pairs):
            number = int(given_rows[index]) if given_rows else index + 1
            line = int(given_lines[index]) if given_lines else number
            if found is not None:
                rows.append(Row(number, line, None, pickle.loads(found)))
            else:
                rows.append(Row(number, line, json.loads(item)))
            kept.append(index)
        return rows, kept
    if text:
        values = batch.column(FACTS).to_pylist()
    else:
        shipment = [n for n in names if n not in ("row", "line") and n not in not_facts]
        values = batch.select(shipment).to_pylist()
    for index, item in enumerate(values):
        counters[0] += 1  # the physical line (or record)
        raw = b""
        if text:
            raw = (item or "").encode("utf-8").strip()
            if not raw:
                continue
            if counters[0] == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
        counters[1] += 1
        if given_rows is not None:
            number = int(given_rows[index])
            line = int(given_lines[index]) if given_lines is not None else number
        else:
            number, line = counters[1], counters[0]
        if text:
            if raw[:1] != b"{":  # the same check, code and words as batch's JSONL reader
                problem = Problem(
                    "facts.type", "each line must be one JSON object of shipment facts"
                )
                rows.append(Row(number, line, None, (problem,)))
            else:
                rows.append(Row(number, line, raw))
        else:
            rows.append(Row(number, line, facts_of(item, minor_units)))
        kept.append(index)
    return rows, kept
