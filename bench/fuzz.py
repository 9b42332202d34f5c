"""The fuzz suite at scale (issue 12): generated facts, mutated rule files, hostile
expressions and YAML bombs, each case in a worker process with a time limit.

    .venv/bin/python bench/fuzz.py [--facts 10000] [--rules 10000] [--limit 5] [--seed 0]

The strategies and the property are tests/test_fuzz.py's (`make test` runs them small):
every input gives a result or one of the project's errors with a JSON path or file:line,
within the time limit and the worker's memory limit. Prints, per family and in total:
results, located errors, errors without a location, uncaught exceptions (the CLI's exit
70, the service's 500), cases over the time limit (killed), valuations stopped by their
own time budget (located errors, counted apart), the share of errors with a location,
the workers' peak memory and the longest case; then the first failures of each kind.
Exit 1 when any case broke the property.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import tests.test_fuzz  # noqa: E402
from tests.test_fuzz import (  # noqa: E402
    HOSTILE,
    SHIPMENT,
    Outcome,
    Tally,
    Worker,
    bomb_cases,
    hostile_facts,
    mutated_rule_file,
    with_condition,
    with_formula,
)


def run_generated(
    name: str, strategy: Any, family: str, count: int, worker: Worker, tally: Tally, rng: int
) -> None:
    done = 0
    started = time.monotonic()

    @seed(rng)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def each(case: Any) -> None:
        nonlocal done
        outcome = worker.run((family, case))
        what = f"{name} #{done}"
        if family == "facts":
            what += f" ({case[0]}: {case[1][:160].decode('utf-8', 'replace')})"
        tally.add(outcome, what)
        done += 1
        if done % 500 == 0:
            rate = done / (time.monotonic() - started)
            print(f"  {name}: {done:,}/{count:,} ({rate:.1f}/s)", file=sys.stderr, flush=True)
            report(f"{name} so far", tally, worker.peak_kb)
            sys.stdout.flush()

    each()


def run_listed(cases: Iterable[tuple[str, tuple[str, Any]]], worker: Worker, tally: Tally) -> None:
    for name, case in cases:
        outcome: Outcome = worker.run(case)
        tally.add(outcome, name)
        print(f"  {outcome.kind:11} {outcome.seconds:6.2f} s  {name}", file=sys.stderr, flush=True)


def report(name: str, tally: Tally, peak_kb: int) -> int:
    counts = tally.outcomes
    total = sum(counts.values())
    errors = counts.get("located", 0) + counts.get("unlocated", 0)
    located = 100.0 * counts.get("located", 0) / errors if errors else 100.0
    bad = total - counts.get("result", 0) - counts.get("located", 0)
    print(
        f"{name:18} {total:7,} cases  results {counts.get('result', 0):6,}  "
        f"located errors {counts.get('located', 0):6,}  unlocated {counts.get('unlocated', 0):4,}  "
        f"uncaught (exit 70) {counts.get('uncaught', 0):4,}  over budget "
        f"{counts.get('over_budget', 0):3,}  stopped by the valuation budget {tally.stopped:3,}  "
        f"errors located {located:5.1f}%  "
        f"peak {peak_kb / 1024:,.0f} MiB  longest {tally.longest[0]:.2f} s"
    )
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=10_000, help="generated shipments")
    parser.add_argument("--rules", type=int, default=10_000, help="mutated rule files")
    parser.add_argument("--limit", type=float, default=5.0, help="seconds per case (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=5, help="failures shown per kind")
    parser.add_argument(
        "--no-listed", action="store_true", help="skip the hostile expressions and YAML bombs"
    )
    args = parser.parse_args()

    families: list[tuple[str, Tally, int]] = []
    started = time.monotonic()

    if args.facts:
        tests.test_fuzz.preload()  # before the fork: each worker starts with the rules read
    worker = Worker(args.limit)
    tally = Tally()
    if not args.no_listed:
        run_hostile(worker, tally, families)

    worker.peak_kb, tally = 0, Tally()
    if args.facts:
        run_generated("facts", hostile_facts(), "facts", args.facts, worker, tally, args.seed)
        families.append(("facts", tally, worker.peak_kb))

    worker.peak_kb, tally = 0, Tally()
    if args.rules:
        run_generated(
            "rule files", mutated_rule_file(), "rules", args.rules, worker, tally, args.seed
        )
        families.append(("rule files", tally, worker.peak_kb))
    worker.stop()
    return summary(families, started, args.limit, args.show)


def run_hostile(worker: Worker, tally: Tally, families: list[tuple[str, Tally, int]]) -> None:
    print("hostile expressions:", file=sys.stderr)
    run_listed(
        (
            (
                name,
                (
                    "expression",
                    ((with_formula if kind == "formula" else with_condition)(make()), SHIPMENT),
                ),
            )
            for name, kind, make in HOSTILE
        ),
        worker,
        tally,
    )
    families.append(("expressions", tally, worker.peak_kb))

    worker.peak_kb, tally = 0, Tally()
    print("YAML bombs:", file=sys.stderr)
    run_listed(bomb_cases(), worker, tally)
    families.append(("yaml bombs", tally, worker.peak_kb))


def summary(families: list[tuple[str, Tally, int]], started: float, limit: float, show: int) -> int:
    print(f"\nfuzz: {time.monotonic() - started:,.0f} s, time limit {limit:g} s per case")
    broken = 0
    for name, family_tally, peak in families:
        broken += report(name, family_tally, peak)
    for name, family_tally, _ in families:
        for kind, failures in sorted(family_tally.failures.items()):
            print(f"\n{name}, {kind} ({len(failures)}):")
            for line in failures[:show]:
                print(f"  {line[:300]}")
        print(
            f"{name}: longest case {family_tally.longest[0]:.2f} s: {family_tally.longest[1][:200]}"
        )
    print(f"\n{broken} case(s) broke the property")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
