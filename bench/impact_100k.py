"""Impact analysis over 100,000 synthetic shipments: seconds and shipments per second.

    .venv/bin/python bench/impact_100k.py [--n 100000] [--workers N] [--matcher NAME]

Generates the corpus (seed 1) in a temporary folder, then times the shipped change
`impact(standard@1.0.0, standard@1.1.0)` (1.1.0 leaves out what the Incoterm already puts
in the invoice price): every shipment valued under both versions, across every core
unless --workers says otherwise. Generation is timed separately.
--repeat times the impact several times; the load average is printed with each run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from engine.compliance.corpus import generate
from engine.compliance.impact import impact, render_impact

ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process, and of its children that have ended."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--matcher", help="durable_rules or python (default: the engine's)")
    parser.add_argument("--repeat", type=int, default=1, help="times to run the impact")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "shipments.jsonl"
        started = time.perf_counter()
        with corpus.open("w") as handle:
            for facts in generate(args.n, 1):
                handle.write(json.dumps(facts, separators=(",", ":")) + "\n")
        generated = time.perf_counter() - started
        print(f"generated {args.n:,} shipments in {generated:.1f} s ({args.n / generated:,.0f}/s)")

        for run in range(args.repeat):
            before = os.getloadavg()[0]
            cpu = _cpu_seconds()
            started = time.perf_counter()
            report, details = impact(
                ROOT,
                "standard@1.0.0",
                "standard@1.1.0",
                corpus,
                workers=args.workers,
                matcher=args.matcher,
            )
            elapsed = time.perf_counter() - started
            main_cpu, workers_cpu = (b - a for a, b in zip(cpu, _cpu_seconds(), strict=True))
            if run == 0:
                print(render_impact(report))
            print(
                f"impact: {report.shipments:,} shipments ({2 * report.shipments:,} valuations) "
                f"in {elapsed:.1f} s with {report.workers} worker(s): "
                f"{report.shipments / elapsed:,.0f} shipments/s; {len(details):,} rows of "
                f"differences; CPU main {main_cpu:.1f} s, workers {workers_cpu:.1f} s; "
                f"load average {before:.2f} before, {os.getloadavg()[0]:.2f} after"
            )


if __name__ == "__main__":
    main()
