"""Arrow batches of input in, `tiv batch`'s rows out, numbered as `tiv batch` numbers them.

`row`: the Nth non-blank line or record; `line`: the physical line (for Parquet, the
record number). Without `row`/`line` columns, a small counting job gives each input
partition its offsets first.
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


def partition_counts(df: DataFrame, text: bool) -> dict[int, tuple[int, int]]:
    """Per input partition: (lines, non-blank lines); lines = records for Parquet."""
    from pyspark.sql import functions as F

    # Only the partition id (and for text, blankness) is read: Parquet prunes the rest.
    filled = F.when(F.trim(F.col(FACTS)) == "", 0).otherwise(1) if text else F.lit(1)
    narrow = df.select(F.spark_partition_id().alias("p"), filled.alias("filled"))
    counted = narrow.groupBy("p").agg(F.count(F.lit(1)).alias("n"), F.sum("filled").alias("k"))
    return {r["p"]: (int(r["n"]), int(r["k"] or 0)) for r in counted.collect()}


def offsets_of(counts: Mapping[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Per partition: (lines before it, rows before it), partitions in id order."""
    offsets, lines, rows = {}, 0, 0
    for pid in sorted(counts):
        offsets[pid] = (lines, rows)
        lines += counts[pid][0]
        rows += counts[pid][1]
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
) -> tuple[list[Row], list[int]]:
    """Batch rows (as `tiv batch` reads them) and the positions in `batch` they came from."""
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
        shipment = [n for n in names if n not in ("row", "line")]
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
