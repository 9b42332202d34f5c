"""Bordereaux in (Parquet, JSON Lines, CSV) and results out (Parquet, JSON Lines)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from engine.atomic import write_atomic
from engine.batch.spark.columns import FACTS
from engine.batch.spark.errors import SparkJobError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def read_input(spark: SparkSession, path: str, input_format: str | None = None) -> DataFrame:
    """A bordereau as a DataFrame: Parquet in the shipments schema, JSON Lines as a
    `facts` column of text (one row per physical line, in file order), or CSV through
    batch's own reader on the driver (small bordereaux; convert big ones to Parquet)."""
    kind = input_format or format_of(path)
    split_for(spark, path)
    if kind == "parquet":
        return spark.read.parquet(path)
    if kind == "jsonl":
        # wholetext off, lineSep \n: one row per line, as batch reads them.
        return spark.read.text(path, lineSep="\n").withColumnRenamed("value", FACTS)
    if kind == "csv":
        return csv_frame(spark, Path(path))
    raise SparkJobError(f"unknown input format {kind!r} (formats: parquet, jsonl, csv)")


def split_for(spark: Any, path: str) -> None:
    """Cut the input into a few partitions per core, of at most 4 MB: a file smaller than
    Spark's 128 MB split would otherwise be one task on one core, and a large one tasks
    whose results do not fit in memory together. Splits follow file order, so the
    partition order is the input's order (rows are numbered by it)."""
    try:
        cores = int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect: no SparkContext on the client
        cores = int(spark.conf.get("spark.default.parallelism", "8"))
    if "://" in path:  # a remote store: Spark's own splits suit the large files there
        return
    source = Path(path)
    files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    # At most 4 MB of input per task: a task's results (about 1.4 KB a row, ten times
    # the Parquet input) must fit twice in a 1 GB driver when JSON Lines stream through it.
    target = max(256 * 1024, min(size // max(1, 4 * cores), 4 * 1024 * 1024))
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(target))
    spark.conf.set("spark.sql.files.openCostInBytes", str(target))


def format_of(path: str) -> str:
    lowered = path.lower().rstrip("/")
    known = lowered.endswith((".jsonl", ".ndjson", ".json", ".csv", ".tsv"))
    if lowered.endswith(".parquet") or (not known and ("://" in path or Path(path).is_dir())):
        return "parquet"  # a folder (a table's location) is Parquet
    return "csv" if lowered.endswith((".csv", ".tsv")) else "jsonl"


def csv_frame(spark: SparkSession, path: Path) -> DataFrame:
    """CSV rows as batch's reader makes them (on the driver: CSV is for small bordereaux;
    convert big ones to Parquet): numbered, facts as JSON text of the nested dict (CSV
    cells are text, so nothing is lost), a row's reading problems pickled beside it."""
    from engine.batch.rows import csv_rows

    records = [
        (
            row.number,
            row.line,
            None if row.problems else json.dumps(row.facts, ensure_ascii=False),
            pickle.dumps(row.problems) if row.problems else None,
        )
        for row in csv_rows(path)
    ]
    return spark.createDataFrame(records, "row long, line long, facts string, problems binary")


def csv_headers(path: str) -> dict[str, str]:
    """Field path -> CSV header, so error rows name the column as batch's do."""
    from engine.batch.rows import csv_headers as headers

    return headers(path)


def output_format_of(output: str) -> str:
    return "jsonl" if output.lower().endswith((".jsonl", ".ndjson", ".json")) else "parquet"


def write_output(
    result: DataFrame,
    output: str,
    output_format: str | None = None,
    partition_by: Sequence[str] = (),
    parts: str | os.PathLike[str] | None = None,
) -> int:
    """Write `result`: Parquet (a folder, partitioned by `partition_by`) or JSON Lines
    (one file, rows in order, byte-identical to `tiv batch`'s). Returns rows written.

    Results never pass through the driver's memory: the executors write part files, and
    for one JSON Lines file on this machine the driver joins them, in row order, a byte
    copy. Only a local file written by a cluster's executors (which cannot reach it)
    comes through the driver, a partition at a time; to a store (`s3a://...`) a `.jsonl`
    output is a folder of part files, each line carrying its row number. `parts`: the
    folder `result`'s tasks write their lines to (`value_dataframe(lines_to=...)`):
    the job is run for that alone, then the parts joined into `output` and removed.
    """
    if parts is not None:
        try:
            result.write.format("noop").mode("overwrite").save()  # the tasks write
            return _join(Path(parts), Path(output))
        finally:
            shutil.rmtree(parts, ignore_errors=True)
    kind = output_format or output_format_of(output)
    if kind == "parquet":
        writer = result.write.mode("error")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(output)
        return int(result.sparkSession.read.parquet(output).count())  # footers only
    if kind != "jsonl":
        raise SparkJobError(f"unknown output format {kind!r} (formats: parquet, jsonl)")
    lines = result.select("result")
    if "://" in output:
        lines.write.mode("error").text(output)
        return int(result.sparkSession.read.text(output).count())
    target = Path(output)
    if not local_master(result.sparkSession):
        return _stream(result, target)
    parts = target.with_name(f".{target.name}.parts")
    shutil.rmtree(parts, ignore_errors=True)
    try:
        lines.write.text(os.fspath(parts))
        return _join(parts, target)
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def local_master(spark: Any) -> bool:
    """Whether `spark` runs on this machine (its executors write this machine's files)."""
    try:
        return str(spark.conf.get("spark.master", "")).startswith("local")
    except Exception:  # Spark Connect may not say: a server is not this machine's files
        return False


def _join(parts: Path, target: Path) -> int:
    """The part files' lines into `target`, parts in the order of their first row (a
    folder's files become partitions in size order, so part names are not input order);
    returns the lines. Written whole or not at all (engine.atomic)."""
    keyed = []
    for part in parts.glob("part-*"):
        with part.open("rb") as handle:
            first = handle.readline()
        if first:  # `{"row": N, ...`: every line of tiv batch's output starts so
            keyed.append((int(first[8 : first.index(b",")]), part))
    keyed.sort()
    count = 0

    def copy(handle: TextIO) -> None:
        nonlocal count
        out = handle.buffer  # the parts are UTF-8 already: copied as bytes
        for _, part in keyed:
            with part.open("rb") as read:
                while chunk := read.read(1 << 20):
                    out.write(chunk)
                    count += chunk.count(b"\n")

    write_atomic(target, copy)
    return count


def _stream(result: DataFrame, target: Path) -> int:
    count = 0

    def write(handle: TextIO) -> None:
        nonlocal count
        # In row order, a partition at a time: the driver holds one at most.
        for row in result.select("row", "result").orderBy("row").toLocalIterator():
            handle.write(row[1] + "\n")
            count += 1

    write_atomic(target, write)
    return count
