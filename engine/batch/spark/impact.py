"""`impact_dataframe` and `impact_summary`: `tiv impact` over a whole book on Spark."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.batch.rows import Row
from engine.batch.spark.arrow_rows import input_offsets, partition_id, rows_of
from engine.batch.spark.columns import FACTS, IMPACT_FIELDS, spark_schema
from engine.batch.spark.facts_json import facts_as_json
from engine.batch.spark.rules import RulesPayload, compiled_rules, load_rules
from engine.loading.snapshot import Snapshot

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from engine.compliance.impact import ImpactReport, ShipmentImpact


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

    snapshot = rules if isinstance(rules, Snapshot) else load_rules(rules)
    for ref in (old, new):
        if "@" not in ref:
            raise ValueError(f"{ref!r}: name a version, e.g. {ref}@1.0.0")
        snapshot.rules.select(ref, _ANY_DAY, allow_draft=True)
    _setup_impact(snapshot, old, new, matcher)  # a bad matcher fails here, not in a task
    payload = RulesPayload.of(snapshot)
    text = FACTS in df.columns
    numbered = "row" in df.columns
    offsets = {} if numbered else input_offsets(df, text)
    minor_units = dict(snapshot.rules.currencies)
    # Parquet in the shipments schema: Spark writes each record's facts as JSON text
    # (the counting above read the table itself: the same partitions, fewer columns).
    as_json = None if text else facts_as_json(df, minor_units)
    if as_json is not None:
        df, text = as_json, True
    log = os.fspath(compile_log) if compile_log else None

    def impact_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from engine.compliance.impact import _value_line

        compiled = compiled_rules(payload, log)
        _setup_impact(compiled, old, new, matcher)
        line_offset, row_offset = offsets.get(partition_id(), (0, 0))
        counters = [line_offset, row_offset]
        for batch in batches:
            rows, _kept = rows_of(batch, text, counters, minor_units, numbered)
            outcomes = []
            for row in rows:
                if row.problems:  # not a JSON object: unreadable, as tiv impact says
                    outcomes.append((row, _value_line(row.line, "")))
                    continue
                facts = row.facts
                body = facts.decode("utf-8") if isinstance(facts, bytes) else _json(facts)
                outcomes.append((row, _value_line(row.line, body)))
            yield _impact_batch(outcomes)

    schema = spark_schema(df, (), IMPACT_FIELDS)
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
