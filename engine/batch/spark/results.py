"""Result columns from the JSON lines `tiv batch` writes (money stays decimal text)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from engine.batch.rows import Row
from engine.batch.spark.columns import LINE_FIELDS, RESULT_FIELDS, TEXT
from engine.batch.spark.rules import RulesPayload


def line_batch(
    source: pa.RecordBatch,
    keys: Sequence[str],
    rows: Sequence[Row],
    lines: Sequence[str],
    *,
    with_text: bool = True,
) -> pa.RecordBatch:
    # An error row starts {"row": N, "line": M, "error": ...; a valuation {"row"..., "valuation"
    status = ["error" if '"error": {' in text[:64] else "ok" for text in lines]
    arrays = [source.column(k) for k in keys]
    arrays += [
        pa.array([r.number for r in rows], pa.int64()),
        pa.array([r.line for r in rows], pa.int64()),
        pa.array(status, TEXT),
        pa.array(lines, TEXT) if with_text else pa.nulls(len(lines), TEXT),
    ]
    return pa.RecordBatch.from_arrays(arrays, names=[*keys, *(n for n, _ in LINE_FIELDS)])


def result_batch(
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
