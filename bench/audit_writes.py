"""Audit writes per second: one valuation recorded again and again in a fresh store.

    .venv/bin/python bench/audit_writes.py [--n 2000]

Each record is its own transaction (BEGIN IMMEDIATE ... COMMIT with synchronous=FULL, so
an fsync per record): the figure is durable writes, the price of "committed when
`record` returns". The valuation is computed once, so only recording is timed; the
verify of the whole chain afterwards is timed too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from engine import load_rules, value
from engine.compliance.audit import AuditLog

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    rules = load_rules(ROOT)
    seed = ROOT / "examples/shipments/seed-electronics.yaml"
    result = value(rules, seed, policy="standard")
    facts = {"id": result.shipment_id}  # the facts' size barely matters next to the trace
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(Path(tmp) / "audit.db")
        started = time.perf_counter()
        for _ in range(args.n):
            log.record("valuation", facts, result, rules)
        elapsed = time.perf_counter() - started
        size = (Path(tmp) / "audit.db").stat().st_size + sum(
            p.stat().st_size for p in Path(tmp).glob("audit.db-*")
        )
        started = time.perf_counter()
        report = log.verify()
        checked = time.perf_counter() - started
    print(
        f"audit: {args.n:,} records in {elapsed:.2f} s: {args.n / elapsed:,.0f} durable writes/s "
        f"({elapsed / args.n * 1000:.2f} ms each), {size / args.n / 1024:.1f} KiB per record"
    )
    print(
        f"verify: {report.records:,} records in {checked:.2f} s ({report.records / checked:,.0f}/s)"
    )


if __name__ == "__main__":
    main()
