"""Valuations per second of `standard` on the seed example, in one process.

    .venv/bin/python bench/value_throughput.py [--seconds 5] [--matcher durable_rules|python]

Loads the rules once (as any embedding does), warms up, then values the seed
shipment repeatedly for a fixed time, with and without building the trace, on every
matcher. Two figures each: `value()` as a caller uses it (reading and validating the
facts included), and the valuation alone (pack selection and evaluation of an
already-validated Shipment), which is what the rule engine itself costs; for the compiled
matcher also the valuation alone on the interpreted path (no straight line).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from engine import Matcher, RuleSet, Shipment, available_matchers, load_rules, read_facts, value
from engine.evaluating.valuation import _evaluate, evaluate
from engine.explaining.trace import NullTracer, RecordingTracer
from engine.facts import FactsReference

ROOT = Path(__file__).resolve().parent.parent


def measure(
    rules: RuleSet, facts: dict[str, Any], matcher: Matcher, trace: bool, seconds: float
) -> tuple[int, float]:
    for _ in range(50):
        value(rules, facts, policy="standard", matcher=matcher, trace=trace)
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        value(rules, facts, policy="standard", matcher=matcher, trace=trace)
        count += 1
    return count, time.perf_counter() - start


def measure_engine(
    rules: RuleSet,
    shipment: Shipment,
    matcher: Matcher,
    trace: bool,
    seconds: float,
    interpreted: bool = False,
) -> tuple[int, float]:
    """The valuation without reading facts: select the pack, evaluate the Shipment.

    `interpreted` skips the pack's straight line (engine.evaluating.straightline): what the
    compiled matcher costs on the path every unusual case and every error takes.
    """
    run = _evaluate if interpreted else evaluate

    def once() -> None:
        pack = rules.select("standard", shipment.date)
        tracer = RecordingTracer() if trace else NullTracer()
        run(rules, pack, shipment, as_of=shipment.date, matcher=matcher, tracer=tracer)

    for _ in range(50):
        once()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        once()
        count += 1
    return count, time.perf_counter() - start


def _facts(rules: RuleSet, path: Path) -> dict[str, Any]:
    shipment = read_facts(path, FactsReference(rules.currencies, rules.countries))
    return shipment.canonical()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--matcher", choices=[m.name for m in available_matchers()])
    args = parser.parse_args()

    started = time.perf_counter()
    rules = load_rules(ROOT)
    print(f"load rules: {(time.perf_counter() - started) * 1000:.1f} ms")
    # The facts as a caller's dict (canonical JSON form), so YAML parsing is not timed.
    seed = ROOT / "examples/shipments/seed-electronics.yaml"
    facts = _facts(rules, seed)
    shipment = read_facts(facts, rules.pack_facts_reference("standard"))
    for matcher in available_matchers():
        if args.matcher and matcher.name != args.matcher:
            continue
        for trace in (True, False):
            count, elapsed = measure(rules, facts, matcher, trace, args.seconds)
            alone, alone_elapsed = measure_engine(rules, shipment, matcher, trace, args.seconds)
            print(
                f"{matcher.name:>13} trace={'on ' if trace else 'off'}: {count / elapsed:8.0f} "
                f"valuations/s ({elapsed / count * 1e6:.0f} µs each, {count} runs); "
                f"facts excluded {alone / alone_elapsed:8.0f}/s "
                f"({alone_elapsed / alone * 1e6:.0f} µs)"
            )
            if matcher.name == "compiled":
                alone, alone_elapsed = measure_engine(
                    rules, shipment, matcher, trace, args.seconds, interpreted=True
                )
                print(
                    f"{'':>13} interpreted path, facts excluded {alone / alone_elapsed:8.0f}/s "
                    f"({alone_elapsed / alone * 1e6:.0f} µs)"
                )


if __name__ == "__main__":
    main()
