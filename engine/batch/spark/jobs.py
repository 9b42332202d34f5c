"""The CLI's Spark jobs: value a bordereau, or compare two versions over a corpus."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.batch.spark.audit import seal_audit
from engine.batch.spark.errors import SparkJobError
from engine.batch.spark.files import (
    csv_headers,
    format_of,
    local_master,
    output_format_of,
    read_input,
    write_output,
)
from engine.batch.spark.impact import impact_dataframe, impact_summary
from engine.batch.spark.progress import StageProgress
from engine.batch.spark.rules import load_rules
from engine.batch.spark.session import session
from engine.batch.spark.valuing import value_dataframe

if TYPE_CHECKING:
    from engine.compliance.impact import ImpactReport, ShipmentImpact


@dataclass(frozen=True)
class SparkSummary:
    rows: int
    failed: int
    rules_id: str
    seconds: float
    output: str


def run_spark_batch(
    root: str | os.PathLike[str],
    master: str,
    input_path: str,
    output: str,
    policy: str,
    *,
    as_of: datetime.date | None = None,
    allow_draft: bool = False,
    trace: bool = False,
    audit: str | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    partition_by: Sequence[str] = (),
    keys: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    spark: Any = None,
) -> SparkSummary:
    """`tiv batch INPUT --spark MASTER`: value a bordereau on Spark, write the results."""
    started = time.monotonic()
    snapshot = load_rules(root)
    if "://" not in output and Path(output).exists():  # a remote one: Spark refuses it
        raise SparkJobError(f"{output} exists: remove it or choose another output")
    session_ = spark or session(master)
    df = read_input(session_, input_path, input_format)
    is_csv = (input_format or format_of(input_path)) == "csv"
    jsonl = (output_format or output_format_of(output)) == "jsonl"
    # One JSON Lines file on this machine: the tasks write their own parts (see parts).
    parts = None
    if jsonl and "://" not in output and local_master(session_):
        target = Path(output).absolute()
        parts = os.fspath(target.with_name(f".{target.name}.parts"))
    result = value_dataframe(
        df,
        snapshot,
        policy,
        as_of,
        keys=keys,
        allow_draft=allow_draft,
        trace=trace,
        audit=audit,
        headers=csv_headers(input_path) if is_csv else None,
        lines_only=jsonl,
        lines_to=parts,
    )
    with StageProgress(session_, progress or (lambda _text: None)):
        rows = write_output(result, output, output_format, partition_by, parts)
    if audit:
        seal_audit(audit)
    failed = failed_rows(session_, output, output_format)
    return SparkSummary(rows, failed, snapshot.rules_id, time.monotonic() - started, output)


def failed_rows(spark: Any, output: str, output_format: str | None) -> int:
    if (output_format or output_format_of(output)) == "parquet":
        from pyspark.sql import functions as F

        return int(spark.read.parquet(output).where(F.col("status") == "error").count())
    count = 0
    with open(output, encoding="utf-8") as handle:
        for line in handle:
            count += line.startswith('{"row"') and '"error": {' in line[:80]
    return count


def run_spark_impact(
    root: str | os.PathLike[str],
    master: str,
    old: str,
    new: str,
    corpus: str,
    *,
    matcher: str | None = None,
    input_format: str | None = None,
    progress: Callable[[str], None] | None = None,
    spark: Any = None,
) -> tuple[ImpactReport, list[ShipmentImpact]]:
    """`tiv impact OLD NEW --corpus FILE --spark MASTER`: the same report, on Spark."""
    snapshot = load_rules(root)
    session_ = spark or session(master)
    df = read_input(session_, corpus, input_format)
    impacts = impact_dataframe(df, snapshot, old, new, matcher=matcher)
    with StageProgress(session_, progress or (lambda _text: None)):
        workers = session_.sparkContext.defaultParallelism if not master.startswith("sc://") else 0
        return impact_summary(impacts, old, new, corpus=corpus, workers=workers)
