"""`value_dataframe`: one result row per input row, each the line local `tiv batch` writes."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from engine.batch.parquet import SHIPMENTS
from engine.batch.rows import RowEncoder
from engine.batch.spark.arrow_rows import input_offsets, partition_id, rows_of
from engine.batch.spark.audit import fresh_segment, segments_folder
from engine.batch.spark.columns import FACTS, LINE_FIELDS, RESULT_FIELDS, spark_schema
from engine.batch.spark.facts_json import facts_as_json
from engine.batch.spark.parts import PartFile, parts_folder
from engine.batch.spark.results import line_batch, result_batch
from engine.batch.spark.rules import RulesPayload, compiled_rules, load_rules
from engine.loading.snapshot import Snapshot

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def value_dataframe(
    df: DataFrame,
    rules: Snapshot | str | os.PathLike[str],
    policy: str,
    as_of: datetime.date | None = None,
    matcher: str | None = None,
    *,
    keys: Sequence[str] = (),
    allow_draft: bool = False,
    trace: bool = False,
    audit: str | os.PathLike[str] | None = None,
    compile_log: str | os.PathLike[str] | None = None,
    headers: Mapping[str, str] | None = None,
    lines_only: bool = False,
    lines_to: str | os.PathLike[str] | None = None,
) -> DataFrame:
    """One result row per input row (blank JSON lines are skipped, as batch skips them).

    `df`: shipments in the Parquet schema, or a `facts` column of JSON text; with `row`
    (and `line`) columns the rows keep those numbers, else they are numbered in the
    order of the input (one small counting job). `keys`: input columns copied to the
    output (a key that is not a column of the shipments schema, a table's partition
    column say, is not taken as a fact). `audit`: a folder; each task appends its rows
    to its own hash-chained segment there; call `seal_audit` after the one action that computes
    the result (computing it again rewrites the segments, and must be sealed again).
    `matcher`: only the default matcher, the one `tiv batch` values with.

    Columns: the keys, then `RESULT_FIELDS`; money as decimal text (see module doc).
    With `lines_only`, the keys and `LINE_FIELDS` (row, line, status, result): cheaper,
    for writing the JSON Lines file `tiv batch` writes. With `lines_to` (a folder every
    executor reaches: this machine's, for local[N]) as well, each task writes its lines
    to its own part file there and `result` is left null: the lines never cross the JVM
    (`write_output(..., parts=lines_to)` joins them).
    Raises RulesError / SelectionError (rules or policy unusable) before any task runs.
    """
    check_matcher(matcher)
    snapshot = rules if isinstance(rules, Snapshot) else load_rules(rules)
    if "@" in policy:
        snapshot.rules.select(policy, datetime.date.min, allow_draft=allow_draft)
    else:
        snapshot.rules.pack_versions(policy)
    payload = RulesPayload.of(snapshot)
    keys = tuple(keys)
    lines_only = lines_only or lines_to is not None  # the lines go to files: no columns
    schema = spark_schema(df, keys, LINE_FIELDS if lines_only else RESULT_FIELDS)
    text = FACTS in df.columns
    numbered = "row" in df.columns
    offsets = {} if numbered else input_offsets(df, text)
    minor_units = dict(snapshot.rules.currencies)
    # Parquet in the shipments schema: Spark writes each record's facts as JSON text
    # (the counting above read the table itself: the same partitions, fewer columns).
    as_json = None if text else facts_as_json(df, minor_units, keys)
    if as_json is not None:
        df, text = as_json, True
    log = os.fspath(compile_log) if compile_log else None
    headers = dict(headers or {})
    segments = segments_folder(audit) if audit else None
    parts = parts_folder(lines_to) if lines_to else None
    not_facts = frozenset(k for k in keys if k not in SHIPMENTS.names)

    def value_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        compiled = compiled_rules(payload, log)
        pid = partition_id()
        segment = fresh_segment(segments, pid) if segments else None
        encoder = RowEncoder(
            compiled,
            policy,
            as_of=as_of,
            allow_draft=allow_draft,
            trace=trace,
            audit=segment,
            headers=headers,
        )
        line_offset, row_offset = offsets.get(pid, (0, 0))
        counters = [line_offset, row_offset]
        part = PartFile(parts, pid) if parts else None
        try:
            for batch in batches:
                rows, kept = rows_of(batch, text, counters, minor_units, numbered, not_facts)
                lines = encoder.encode(rows)
                source = batch.take(pa.array(kept, pa.int64()))
                if part is not None:
                    part.write(lines)
                    yield line_batch(source, keys, rows, lines, with_text=False)
                elif lines_only:
                    yield line_batch(source, keys, rows, lines)
                else:
                    yield result_batch(source, keys, lines, payload)
            if part is not None:
                part.commit()
        finally:
            encoder.close()
            if part is not None:
                part.discard()

    return df.mapInArrow(value_partition, schema)


def check_matcher(matcher: str | None) -> None:
    if matcher is None:
        return
    from engine import default_matcher

    default = default_matcher().name
    if matcher != default:
        raise ValueError(
            f"matcher {matcher!r}: results byte-identical to tiv batch come from its matcher, "
            f"{default!r}; compare matchers with `tiv impact --matcher`"
        )
