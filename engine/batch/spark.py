"""Scale-out on Apache Spark: value and compare whole books of shipments, Parquet in and out.

Imported only when used (`pip install 'tiv-engine[spark]'`). In: a Spark DataFrame of
shipments, either in the Parquet schema of `engine.batch.parquet` (one column per fact) or
with a `facts` column of JSON text (a JSON Lines bordereau, one line per row); and a
rule repository. Out: `value_dataframe`, one result row per input row; `impact_dataframe`
and `impact_summary`, the per-row differences between two pack versions and the very
report `tiv impact` prints.

Rules travel to executors as the exact bytes of a snapshot, checked there against its
rules id (the digest of every file), so every executor values with the rules the driver
loaded even if the files change meanwhile. Each executor Python process compiles them
once and keeps them for every later task (Spark reuses its Python workers); with
`compile_log` each compile appends `PID RULES_ID` to a file, so it can be counted.

Every row's `result` is the line local `tiv batch` writes for it, byte for byte: the
rows are encoded by batch's own encoder (`engine.batch.rows`), numbered as batch numbers
them (`row`: the Nth non-blank line or record; `line`: the physical line, for Parquet
the record number). A row with bad facts is an error row, never a failed job.

Money in the result columns is decimal text (`"1234.50"`), exactly as `tiv batch`
writes it, not a DecimalType: one column holds many currencies, and a fixed scale would
either cut KWD's third decimal or print JPY with decimals it does not have. Casting a
money column to `decimal(38,4)` is exact for every currency (see `engine.batch.parquet`).
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.batch.rows import Row, RowEncoder
from engine.errors import Problem
from engine.loading.snapshot import Snapshot, load_snapshot, snapshot_from_texts

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from engine.compliance.impact import ImpactReport, ShipmentImpact

FACTS = "facts"  # the column of JSON text, when the input is JSON Lines

_TEXT = pa.string()
RESULT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("status", _TEXT),
    ("shipment_id", _TEXT),
    ("currency", _TEXT),
    ("currency_minor_units", pa.int32()),
    ("total_insured_value", _TEXT),
    ("components", pa.map_(_TEXT, _TEXT)),
    ("premium", _TEXT),
    ("deductible", _TEXT),
    ("decision", _TEXT),
    ("reasons", pa.list_(_TEXT)),
    ("flags", pa.list_(_TEXT)),
    ("figures", pa.map_(_TEXT, _TEXT)),
    ("policy_id", _TEXT),
    ("policy_version", _TEXT),
    ("policy_sha256", _TEXT),
    ("rules_id", _TEXT),
    ("audit_id", _TEXT),
    ("error", pa.struct([("kind", _TEXT), ("path", _TEXT), ("message", _TEXT)])),
    ("result", _TEXT),
)
# `value_dataframe(..., lines_only=True)`: what writing tiv batch's JSON Lines needs, no
# more (the structured columns cost a JSON parse per row).
LINE_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("status", _TEXT),
    ("result", _TEXT),
)
IMPACT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("shipment_id", _TEXT),
    ("currency", _TEXT),
    ("currency_minor_units", pa.int32()),
    ("tiv_before", _TEXT),
    ("tiv_after", _TEXT),
    ("tiv_change", _TEXT),
    ("premium_before", _TEXT),
    ("premium_after", _TEXT),
    ("premium_change", _TEXT),
    ("decision_before", _TEXT),
    ("decision_after", _TEXT),
    ("error_before", _TEXT),
    ("error_after", _TEXT),
    ("unreadable", pa.bool_()),
    ("changed", pa.bool_()),
)


class SparkJobError(Exception):
    """A Spark job cannot start (not a bad row): one line saying what to do."""


# --- the rules, as shipped to executors ---------------------------------------------


@dataclass(frozen=True)
class RulesPayload:
    """The exact bytes of a snapshot, small enough to travel in every task's closure."""

    texts: Mapping[str, bytes]
    name: str
    rules_id: str

    @classmethod
    def of(cls, rules: Snapshot | str | os.PathLike[str]) -> RulesPayload:
        snapshot = rules if isinstance(rules, Snapshot) else _load(rules)
        return cls(dict(snapshot.texts), snapshot.rules.source, snapshot.rules_id)


def _load(root: str | os.PathLike[str]) -> Snapshot:
    # The same checks as `tiv batch`: the rules load (examples and lock are validate's).
    return load_snapshot(Path(root), check_examples=False, check_lock=False)


_SNAPSHOTS: dict[str, Snapshot] = {}  # rules id -> compiled, per executor Python process
_SNAPSHOT_LOCK = threading.Lock()


def _snapshot(payload: RulesPayload, compile_log: str | None) -> Snapshot:
    """This process's compiled rules for `payload`: compiled on first use, then kept."""
    with _SNAPSHOT_LOCK:
        found = _SNAPSHOTS.get(payload.rules_id)
        if found is not None:
            return found
        snapshot = snapshot_from_texts(payload.texts, payload.name)
        if snapshot.rules_id != payload.rules_id:  # bytes damaged on the way: refuse
            raise SparkJobError(
                f"the rules rebuilt on this executor have id {snapshot.rules_id}, "
                f"not {payload.rules_id}"
            )
        _SNAPSHOTS[payload.rules_id] = snapshot
        if compile_log:
            with open(compile_log, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {payload.rules_id}\n")  # one short append
    return snapshot


def compiles(compile_log: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(pid, rules id) of every compile recorded in `compile_log`."""
    path = Path(compile_log)
    if not path.exists():
        return []
    return [
        (int(pid), rid)
        for pid, rid in (line.split() for line in path.read_text(encoding="utf-8").splitlines())
    ]


# --- numbering rows as tiv batch does -----------------------------------------------


def _partition_counts(df: DataFrame, text: bool) -> dict[int, tuple[int, int]]:
    """Per input partition: (lines, non-blank lines); lines = records for Parquet."""
    from pyspark.sql import functions as F

    # Only the partition id (and for text, blankness) is read: Parquet prunes the rest.
    filled = F.when(F.trim(F.col(FACTS)) == "", 0).otherwise(1) if text else F.lit(1)
    narrow = df.select(F.spark_partition_id().alias("p"), filled.alias("filled"))
    counted = narrow.groupBy("p").agg(F.count(F.lit(1)).alias("n"), F.sum("filled").alias("k"))
    return {r["p"]: (int(r["n"]), int(r["k"] or 0)) for r in counted.collect()}


def _offsets(counts: Mapping[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Per partition: (lines before it, rows before it), partitions in id order."""
    offsets, lines, rows = {}, 0, 0
    for pid in sorted(counts):
        offsets[pid] = (lines, rows)
        lines += counts[pid][0]
        rows += counts[pid][1]
    return offsets


def _partition_id() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.partitionId() if context is not None else 0


def _rows_of(
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


# --- valuing ------------------------------------------------------------------------


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
) -> DataFrame:
    """One result row per input row (blank JSON lines are skipped, as batch skips them).

    `df`: shipments in the Parquet schema, or a `facts` column of JSON text; with `row`
    (and `line`) columns the rows keep those numbers, else they are numbered in the
    order of the DataFrame's partitions (one small counting job). `keys`: input columns
    copied to the output. `audit`: a folder; each task appends its rows to its own
    hash-chained segment there; call `seal_audit` after the one action that computes
    the result (computing it again rewrites the segments, and must be sealed again).
    `matcher`: only the default matcher, the one `tiv batch` values with.

    Columns: the keys, then `RESULT_FIELDS`; money as decimal text (see module doc).
    With `lines_only`, the keys and `LINE_FIELDS` (row, line, status, result): cheaper,
    for writing the JSON Lines file `tiv batch` writes.
    Raises RulesError / SelectionError (rules or policy unusable) before any task runs.
    """
    _check_matcher(matcher)
    snapshot = rules if isinstance(rules, Snapshot) else _load(rules)
    if "@" in policy:
        snapshot.rules.select(policy, datetime.date.min, allow_draft=allow_draft)
    else:
        snapshot.rules.pack_versions(policy)
    payload = RulesPayload.of(snapshot)
    text = FACTS in df.columns
    numbered = "row" in df.columns
    offsets = {} if numbered else _offsets(_partition_counts(df, text))
    minor_units = dict(snapshot.rules.currencies)
    log = os.fspath(compile_log) if compile_log else None
    headers = dict(headers or {})
    segments = _segments_folder(audit) if audit else None
    keys = tuple(keys)

    def value_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        compiled = _snapshot(payload, log)
        pid = _partition_id()
        segment = _fresh_segment(segments, pid) if segments else None
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
        try:
            for batch in batches:
                rows, kept = _rows_of(batch, text, counters, minor_units, numbered)
                lines = encoder.encode(rows)
                source = batch.take(pa.array(kept, pa.int64()))
                if lines_only:
                    yield _line_batch(source, keys, rows, lines)
                else:
                    yield _result_batch(source, keys, lines, payload)
        finally:
            encoder.close()

    schema = _spark_schema(df, keys, LINE_FIELDS if lines_only else RESULT_FIELDS)
    return df.mapInArrow(value_partition, schema)


def _line_batch(
    source: pa.RecordBatch, keys: Sequence[str], rows: Sequence[Row], lines: Sequence[str]
) -> pa.RecordBatch:
    # An error row starts {"row": N, "line": M, "error": ...; a valuation {"row"..., "valuation"
    status = ["error" if '"error": {' in text[:64] else "ok" for text in lines]
    arrays = [source.column(k) for k in keys]
    arrays += [
        pa.array([r.number for r in rows], pa.int64()),
        pa.array([r.line for r in rows], pa.int64()),
        pa.array(status, _TEXT),
        pa.array(lines, _TEXT),
    ]
    return pa.RecordBatch.from_arrays(arrays, names=[*keys, *(n for n, _ in LINE_FIELDS)])


def _check_matcher(matcher: str | None) -> None:
    if matcher is None:
        return
    from engine import default_matcher

    default = default_matcher().name
    if matcher != default:
        raise ValueError(
            f"matcher {matcher!r}: results byte-identical to tiv batch come from its matcher, "
            f"{default!r}; compare matchers with `tiv impact --matcher`"
        )


def _result_batch(
    source: pa.RecordBatch, keys: Sequence[str], lines: Sequence[str], payload: RulesPayload
) -> pa.RecordBatch:
    columns: dict[str, list[Any]] = {name: [] for name, _ in RESULT_FIELDS}
    for text in lines:
        out = json.loads(text)
        valuation = out.get("valuation")
        error = out.get("error")
        columns["row"].append(out["row"])
        columns["line"].append(out["line"])
        columns["rules_id"].append(payload.rules_id)
        columns["result"].append(text)
        if valuation is not None:
            policy = valuation["policy"]
            columns["status"].append("ok")
            columns["error"].append(None)
            for name in ("shipment_id", "currency", "currency_minor_units"):
                columns[name].append(valuation[name])
            columns["total_insured_value"].append(valuation["total_insured_value"])
            columns["components"].append(list(valuation["components"].items()))
            columns["premium"].append(valuation.get("premium"))
            columns["deductible"].append(valuation.get("deductible"))
            columns["decision"].append(valuation["decision"])
            columns["reasons"].append([r["rule"] for r in valuation["reasons"]])
            columns["flags"].append([f["name"] for f in valuation["flags"]])
            columns["figures"].append(list(valuation.get("figures", {}).items()))
            columns["policy_id"].append(policy["id"])
            columns["policy_version"].append(policy["version"])
            columns["policy_sha256"].append(policy["sha256"])
            columns["audit_id"].append(valuation.get("audit_id"))
        else:
            problems = error["problems"]
            first = problems[0] if problems else {}
            columns["status"].append("error")
            columns["error"].append(
                {
                    "kind": error["error"],
                    "path": first.get("path"),
                    "message": "; ".join(
                        (f"{p['path']}: " if p.get("path") else "") + str(p["message"])
                        for p in problems
                    ),
                }
            )
            for name, _ in RESULT_FIELDS:
                if name not in ("row", "line", "rules_id", "result", "status", "error"):
                    columns[name].append(None)
    arrays = [source.column(k) for k in keys]
    arrays += [pa.array(columns[name], kind) for name, kind in RESULT_FIELDS]
    names = [*keys, *(name for name, _ in RESULT_FIELDS)]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _spark_schema(df: DataFrame, keys: Sequence[str], fields: Sequence[tuple[str, Any]]) -> Any:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise SparkJobError(
            f"no key column {missing[0]!r} in the input (columns: {', '.join(df.columns)}); "
            "keys are columns of a Parquet input"
        )
    key_fields = [df.schema[k] for k in keys]
    return StructType(
        [*key_fields, *(StructField(name, from_arrow_type(kind), True) for name, kind in fields)]
    )


# --- impact -------------------------------------------------------------------------

_IMPACT: dict[str, Any] = {}  # the (rules id, refs, matcher) engine.impact is set up for


def impact_dataframe(
    df: DataFrame,
    rules: Snapshot | str | os.PathLike[str],
    old: str,
    new: str,
    *,
    matcher: str | None = None,
    compile_log: str | os.PathLike[str] | None = None,
) -> DataFrame:
    """Every shipment valued under `old` and `new` (pinned versions; drafts allowed):
    one row per shipment with both figures, the change, and `changed` (what `tiv impact`
    counts as changed). `impact_summary` turns it into `tiv impact`'s report."""
    from engine.compliance.impact import _ANY_DAY

    snapshot = rules if isinstance(rules, Snapshot) else _load(rules)
    for ref in (old, new):
        if "@" not in ref:
            raise ValueError(f"{ref!r}: name a version, e.g. {ref}@1.0.0")
        snapshot.rules.select(ref, _ANY_DAY, allow_draft=True)
    _setup_impact(snapshot, old, new, matcher)  # a bad matcher fails here, not in a task
    payload = RulesPayload.of(snapshot)
    text = FACTS in df.columns
    numbered = "row" in df.columns
    offsets = {} if numbered else _offsets(_partition_counts(df, text))
    minor_units = dict(snapshot.rules.currencies)
    log = os.fspath(compile_log) if compile_log else None

    def impact_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from engine.compliance.impact import _value_line

        compiled = _snapshot(payload, log)
        _setup_impact(compiled, old, new, matcher)
        line_offset, row_offset = offsets.get(_partition_id(), (0, 0))
        counters = [line_offset, row_offset]
        for batch in batches:
            rows, _kept = _rows_of(batch, text, counters, minor_units, numbered)
            outcomes = []
            for row in rows:
                if row.problems:  # not a JSON object: unreadable, as tiv impact says
                    outcomes.append((row, _value_line(row.line, "")))
                    continue
                facts = row.facts
                body = facts.decode("utf-8") if isinstance(facts, bytes) else _json(facts)
                outcomes.append((row, _value_line(row.line, body)))
            yield _impact_batch(outcomes)

    schema = _spark_schema(df, (), IMPACT_FIELDS)
    return df.mapInArrow(impact_partition, schema)


def _setup_impact(snapshot: Snapshot, old: str, new: str, matcher: str | None) -> None:
    from engine.compliance.impact import _setup

    wanted = (snapshot.rules_id, old, new, matcher)
    if _IMPACT.get("for") != wanted:
        _setup(snapshot.rules, old, new, matcher)
        _IMPACT["for"] = wanted


def _json(facts: Any) -> str:
    """Parquet facts as JSON text, amounts as decimal strings (read back exactly)."""

    def default(value: Any) -> str:
        if isinstance(value, Decimal):
            return format(value, "f")
        if isinstance(value, datetime.date):
            return value.isoformat()
        raise TypeError(f"{type(value).__name__} in facts")

    return json.dumps(facts, default=default, ensure_ascii=False)


def _impact_batch(outcomes: Sequence[tuple[Row, Any]]) -> pa.RecordBatch:
    from engine.compliance.impact import _report

    columns: dict[str, list[Any]] = {name: [] for name, _ in IMPACT_FIELDS}
    for row, found in outcomes:
        # The change as `tiv impact` sees it: its own report over this one shipment.
        _, details = _report([found], "", "", "", 1)
        detail = details[0] if details else None
        values = {
            "row": row.number,
            "line": row.line,
            "shipment_id": found.shipment_id,
            "currency": found.currency,
            "currency_minor_units": found.places,
            "tiv_before": found.tiv[0],
            "tiv_after": found.tiv[1],
            "tiv_change": detail.tiv_change if detail else "",
            "premium_before": found.premium[0],
            "premium_after": found.premium[1],
            "premium_change": detail.premium_change if detail else "",
            "decision_before": found.decision[0],
            "decision_after": found.decision[1],
            "error_before": found.error[0],
            "error_after": found.error[1],
            "unreadable": found.unreadable,
            "changed": detail is not None,
        }
        for name, _ in IMPACT_FIELDS:
            columns[name].append(values[name])
    return pa.RecordBatch.from_arrays(
        [pa.array(columns[name], kind) for name, kind in IMPACT_FIELDS],
        names=[name for name, _ in IMPACT_FIELDS],
    )


def impact_summary(
    impacts: DataFrame, old: str, new: str, *, corpus: str = "", workers: int = 0
) -> tuple[ImpactReport, list[ShipmentImpact]]:
    """The report `tiv impact` prints (exact Decimal statistics per currency, decision
    flips, failures) and its per-shipment details, from `impact_dataframe`'s rows.

    Only the figures come back to the driver (a few short strings per shipment), in row
    order; the statistics are engine.impact's own, so they match `tiv impact` exactly.
    """
    from engine.compliance.impact import _report, _Row

    wanted = [name for name, _ in IMPACT_FIELDS if name not in ("tiv_change", "premium_change")]
    rows = []
    for r in impacts.select(*wanted).orderBy("row").toLocalIterator():
        rows.append(
            _Row(
                r["line"],
                r["shipment_id"],
                r["currency"],
                (r["tiv_before"], r["tiv_after"]),
                (r["premium_before"], r["premium_after"]),
                (r["decision_before"], r["decision_after"]),
                (r["error_before"], r["error_after"]),
                r["currency_minor_units"],
                r["unreadable"],
            )
        )
    return _report(rows, old, new, corpus, workers)


# --- sessions, inputs and outputs (the CLI's side) ----------------------------------


def session(master: str, app_name: str = "tiv", conf: Mapping[str, str] | None = None) -> Any:
    """A SparkSession on `master`: `local[N]`, `spark://host:port`, `yarn`, ... or a
    Spark Connect server `sc://host:port`. Raises SparkJobError if it cannot start."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkJobError("--spark needs PySpark: pip install 'tiv-engine[spark]'") from None
    builder = SparkSession.builder.appName(app_name)
    builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
    local: dict[str, str] = {}
    if master.startswith("local"):
        # Local executors run this very interpreter (its venv has tiv); a cluster's
        # executors use the Python their own environment names.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        local = {
            # One machine: listen on loopback only, and shuffle (the row count) into a
            # few partitions, not 200.
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.shuffle.partitions": "4",
        }
    settings = {
        **local,
        # Arrow batches of this size keep a task's memory flat and its progress visible.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
        "spark.ui.showConsoleProgress": "false",  # tiv prints the stages itself
        **(conf or {}),
    }
    for key, setting in settings.items():
        builder = builder.config(key, setting)
    try:
        spark = builder.getOrCreate()
        if not master.startswith("sc://"):
            spark.sparkContext.setLogLevel("ERROR")  # the summary says what matters
        return spark
    except Exception as error:  # Java missing, a master that does not answer
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SparkJobError(f"cannot start Spark on {master}: {first}") from None


def read_input(spark: SparkSession, path: str, input_format: str | None = None) -> DataFrame:
    """A bordereau as a DataFrame: Parquet in the shipments schema, JSON Lines as a
    `facts` column of text (one row per physical line, in file order), or CSV through
    batch's own reader on the driver (small bordereaux; convert big ones to Parquet)."""
    kind = input_format or _format_of(path)
    _split_for(spark, path)
    if kind == "parquet":
        return spark.read.parquet(path)
    if kind == "jsonl":
        # wholetext off, lineSep \n: one row per line, as batch reads them.
        return spark.read.text(path, lineSep="\n").withColumnRenamed("value", FACTS)
    if kind == "csv":
        return _csv_frame(spark, Path(path))
    raise SparkJobError(f"unknown input format {kind!r} (formats: parquet, jsonl, csv)")


def _split_for(spark: Any, path: str) -> None:
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


def _format_of(path: str) -> str:
    lowered = path.lower().rstrip("/")
    known = lowered.endswith((".jsonl", ".ndjson", ".json", ".csv", ".tsv"))
    if lowered.endswith(".parquet") or (not known and ("://" in path or Path(path).is_dir())):
        return "parquet"  # a folder (a table's location) is Parquet
    return "csv" if lowered.endswith((".csv", ".tsv")) else "jsonl"


def _csv_frame(spark: SparkSession, path: Path) -> DataFrame:
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


def _output_format(output: str) -> str:
    return "jsonl" if output.lower().endswith((".jsonl", ".ndjson", ".json")) else "parquet"


def write_output(
    result: DataFrame,
    output: str,
    output_format: str | None = None,
    partition_by: Sequence[str] = (),
) -> int:
    """Write `result`: Parquet (a folder, partitioned by `partition_by`) or JSON Lines
    (one file, rows in order, byte-identical to `tiv batch`'s). Returns rows written."""
    kind = output_format or _output_format(output)
    if kind == "parquet":
        writer = result.write.mode("errorifexists")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(output)
        return int(result.sparkSession.read.parquet(output).count())  # footers only
    if kind != "jsonl":
        raise SparkJobError(f"unknown output format {kind!r} (formats: parquet, jsonl)")
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as handle:
            # Partitions come back in order, one at a time: the driver holds one at most.
            for row in result.select("result").toLocalIterator(prefetchPartitions=True):
                handle.write(row[0] + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return count


# --- progress: Spark's stages -------------------------------------------------------


class StageProgress:
    """Prints Spark's active stages (tasks done / total) to `out` twice a second."""

    def __init__(self, spark: Any, out: Callable[[str], None], every: float = 0.5) -> None:
        self._spark = spark
        self._out = out
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StageProgress:
        try:
            self._tracker = self._spark.sparkContext.statusTracker()
        except Exception:  # Spark Connect has no status tracker on the client
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        last = ""
        while not self._stop.wait(self._every):
            parts = []
            for stage_id in sorted(self._tracker.getActiveStageIds()):
                info = self._tracker.getStageInfo(stage_id)
                if info is not None:
                    parts.append(
                        f"stage {stage_id}: {info.numCompletedTasks}/{info.numTasks} tasks"
                        + (f" ({info.numActiveTasks} running)" if info.numActiveTasks else "")
                    )
            text = "; ".join(parts)
            if text and text != last:
                self._out(text)
                last = text


# --- audit segments -----------------------------------------------------------------


def _segments_folder(audit: str | os.PathLike[str]) -> str:
    folder = Path(audit)
    folder.mkdir(parents=True, exist_ok=True)
    return os.fspath(folder.resolve())


def _fresh_segment(folder: str, partition: int) -> str:
    from engine.compliance.audit.segments import segment_path

    path = segment_path(folder, partition)
    for suffix in ("", "-wal", "-shm"):  # a retried task starts its segment over
        Path(path + suffix).unlink(missing_ok=True)
    return path


def seal_audit(audit: str | os.PathLike[str]) -> Any:
    """Write the manifest chaining the segments' heads (see engine.compliance.audit.segments)."""
    from engine.compliance.audit.segments import seal

    return seal(audit)


# --- the CLI's jobs -----------------------------------------------------------------


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
    snapshot = _load(root)
    if "://" not in output and Path(output).exists():  # a remote one: Spark refuses it
        raise SparkJobError(f"{output} exists: remove it or choose another output")
    session_ = spark or session(master)
    df = read_input(session_, input_path, input_format)
    is_csv = (input_format or _format_of(input_path)) == "csv"
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
        lines_only=(output_format or _output_format(output)) == "jsonl",
    )
    with StageProgress(session_, progress or (lambda _text: None)):
        rows = write_output(result, output, output_format, partition_by)
    if audit:
        seal_audit(audit)
    failed = _failed(session_, output, output_format)
    return SparkSummary(rows, failed, snapshot.rules_id, time.monotonic() - started, output)


def _failed(spark: Any, output: str, output_format: str | None) -> int:
    if (output_format or _output_format(output)) == "parquet":
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
    snapshot = _load(root)
    session_ = spark or session(master)
    df = read_input(session_, corpus, input_format)
    impacts = impact_dataframe(df, snapshot, old, new, matcher=matcher)
    with StageProgress(session_, progress or (lambda _text: None)):
        workers = session_.sparkContext.defaultParallelism if not master.startswith("sc://") else 0
        return impact_summary(impacts, old, new, corpus=corpus, workers=workers)


# --- the CLI verbs' Spark side (the verb modules call these from a one-line hook) ----


def _say(verb: str, quiet: bool) -> Callable[[str], None]:
    tty = sys.stderr.isatty()

    def say(text: str) -> None:
        if not quiet:
            end = "" if tty else "\n"
            sys.stderr.write(("\r\033[K" if tty else "") + f"tiv {verb}: {text}{end}")
            sys.stderr.flush()

    return say


def batch_command(args: Any, root: Path) -> int:
    """`tiv batch INPUT --spark MASTER -o OUTPUT`: exit 0, or 2 when rows failed."""
    from engine.cli.common import UsageError
    from engine.errors import FactsError

    refused = [
        flag
        for flag, given in (
            ("--resume", args.resume),
            ("--workers", args.workers),
            ("--columns", args.columns),
            ("--delimiter", args.delimiter != ","),
        )
        if given
    ]
    if refused:
        raise UsageError(
            f"{refused[0]} is for local runs; with --spark the cluster decides the workers, "
            "and a failed job is rerun whole (it writes nothing until it succeeds)"
        )
    if args.output_format == "csv" or args.output.lower().endswith(".csv"):
        raise UsageError("--spark writes Parquet (a folder) or JSON Lines (.jsonl), not CSV")
    say = _say("batch", args.quiet)
    try:
        summary = run_spark_batch(
            root,
            args.spark,
            args.input,
            args.output,
            args.policy,
            as_of=args.as_of,
            allow_draft=args.allow_draft,
            trace=args.trace,
            audit=args.audit,
            input_format=args.input_format,
            output_format=args.output_format,
            partition_by=args.partition_by or (),
            keys=args.key or (),
            progress=say,
        )
    except SparkJobError as error:
        raise UsageError(str(error)) from None
    if not args.quiet:
        rate = summary.rows / summary.seconds if summary.seconds else 0
        sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "")
        print(
            f"tiv batch: {summary.rows:,} rows, {summary.rows - summary.failed:,} valued, "
            f"{summary.failed:,} failed; {summary.seconds:.1f} s ({rate:,.0f} rows/s) on "
            f"Spark {args.spark}; rules {summary.rules_id}; output {summary.output}"
            + (f"; audit {args.audit} (sealed)" if args.audit else ""),
            file=sys.stderr,
        )
    return FactsError.exit_code if summary.failed else 0


def impact_command(args: Any, root: Path) -> int:
    """`tiv impact A B --corpus FILE --spark MASTER`: the report tiv impact prints."""
    from engine.cli.common import UsageError, emit
    from engine.compliance.impact import details_csv, details_json, render_impact

    if args.details and not args.details.endswith((".csv", ".json")):
        raise UsageError(f"{args.details}: the details file must end in .csv or .json")
    if not Path(args.corpus).exists():
        raise UsageError(f"{args.corpus}: no such file")
    say = _say("impact", args.no_progress)
    try:
        report, details = run_spark_impact(
            root, args.spark, args.before, args.after, args.corpus, matcher=args.matcher,
            progress=say,
        )  # fmt: skip
    except (SparkJobError, ValueError) as error:
        raise UsageError(str(error)) from None
    sys.stderr.write("\r\033[K" if sys.stderr.isatty() and not args.no_progress else "")
    if args.details:
        text = details_csv(details) if args.details.endswith(".csv") else details_json(details)
        emit(text, args.details)
    if args.format == "json":
        body = json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False)
        emit(body + "\n", args.output)
    else:
        extra = f"\nPer-shipment differences: {args.details}\n" if args.details else ""
        emit(render_impact(report) + extra, args.output)
    return 0


__all__ = [
    "FACTS",
    "IMPACT_FIELDS",
    "LINE_FIELDS",
    "RESULT_FIELDS",
    "RulesPayload",
    "SparkJobError",
    "SparkSummary",
    "StageProgress",
    "batch_command",
    "compiles",
    "impact_command",
    "impact_dataframe",
    "impact_summary",
    "read_input",
    "run_spark_batch",
    "run_spark_impact",
    "seal_audit",
    "session",
    "value_dataframe",
    "write_output",
]
