"""Quotes and binds per second on SQLite and PostgreSQL, with 8 concurrent clients.

    .venv/bin/python bench/applications_throughput.py [--clients 8] [--n 50] [--audit]
                                                    [--pg postgresql://...] [--no-pg]

Each client is a process of its own (as service workers are) with its own Book on the
same database: all make `--n` quotes each, then bind their own quotes, and each phase is
timed from the moment all clients start it until the last one finishes. A quote values
the shipment (blue-harbour 1.1.0, with its trace) and writes one transaction; a bind
locks the quote, checks it and writes the policy in one transaction. With `--audit`,
every change is also appended to one shared audit chain (a SQLite file), as in
production. PostgreSQL is a throwaway cluster from Debian's postgresql package
(tests/postgres.py) unless `--pg URL` names one.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def facts(client: int, n: int) -> dict[str, Any]:
    return {
        "id": f"BENCH-{client}-{n}",
        "date": "2026-12-10",
        "currency": "USD",
        "incoterm": "FOB",
        "mode": "ocean",
        "origin": {"country": "CN"},
        "destination": {"country": "DE"},
        "invoice": {"amount": f"{200000 + n}.00"},
        "goods": [{"description": "Laptops", "category": "electronics", "value": "200000.00"}],
        "charges": [{"type": "ocean_freight", "amount": "6000.00"}],
        "duties": [{"type": "import_duty", "amount": "4000.00"}],
    }


def client(
    index: int, db: str, audit: str | None, n: int, barrier: Any, out: Any
) -> None:  # pragma: no cover - runs in a child process
    from engine import load_rules
    from engine.applications import Book

    now = datetime.datetime(2026, 11, 29, 12, tzinfo=datetime.UTC)
    book = Book(db, load_rules(ROOT), audit=audit, clock=lambda: now)
    barrier.wait()
    started = time.perf_counter()
    quotes = [
        book.quote(facts(index, i), policy="blue-harbour", insured=f"Client {index}")
        for i in range(n)
    ]
    quoting = time.perf_counter() - started
    barrier.wait()
    started = time.perf_counter()
    for q in quotes:
        book.bind(q.id, payment_ref=f"PAY-{q.id}", amount=q.premium_due)
    binding = time.perf_counter() - started
    book.close()
    out.put((index, quoting, binding))


def measure(label: str, db: str, clients: int, n: int, audit: str | None) -> None:
    from engine import load_rules
    from engine.applications import Book

    Book(db, load_rules(ROOT)).close()  # migrate once, before the clock starts
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(clients + 1)
    out = context.Queue()
    procs = [
        context.Process(target=client, args=(i, db, audit, n, barrier, out)) for i in range(clients)
    ]
    for p in procs:
        p.start()
    barrier.wait()  # everyone loaded its rules: quoting starts
    t0 = time.perf_counter()
    barrier.wait()  # everyone quoted: binding starts
    t1 = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    t2 = time.perf_counter()
    for p in procs:
        p.join()
    total = clients * n
    quote_s, bind_s = t1 - t0, t2 - t1
    per_bind = statistics.median(r[2] for r in results) / n * 1000
    per_quote = statistics.median(r[1] for r in results) / n * 1000
    print(
        f"{label:10}  {clients} clients x {n}: "
        f"quotes {total / quote_s:7.1f}/s ({per_quote:6.1f} ms each per client)  "
        f"binds {total / bind_s:7.1f}/s ({per_bind:6.1f} ms each per client)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--n", type=int, default=50, help="quotes (and binds) per client")
    parser.add_argument("--audit", action="store_true", help="record in an audit chain too")
    parser.add_argument("--pg", metavar="URL", help="an existing PostgreSQL database")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        audit = str(Path(tmp) / "audit.db") if args.audit else None
        where = "with an audit chain" if audit else "no audit chain"
        print(f"applications throughput, {where}, on {multiprocessing.cpu_count()} CPU(s)")
        measure("SQLite", str(Path(tmp) / "book.db"), args.clients, args.n, audit)
        if args.no_pg:
            return
        if args.pg:
            measure("PostgreSQL", args.pg, args.clients, args.n, audit)
            return
        from tests.postgres import PACKAGE_HINT, Cluster, find_binaries

        binaries = find_binaries()
        if binaries is None:
            print(f"PostgreSQL  skipped: {PACKAGE_HINT}")
            return
        cluster = Cluster(binaries, durable=True).start()
        try:
            url = cluster.create_database(f"bench_{uuid.uuid4().hex[:8]}")
            measure("PostgreSQL", url, args.clients, args.n, audit)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
