"""Three-way agreement at scale: every matcher values the same generated shipments alike.

    .venv/bin/python bench/differential.py [--n 1000000] [--seed 9] [--trace]

The corpus and the test pack are tests/test_differential.py's (every rule of the pack
fires in it). Each shipment is valued on every available matcher (compiled, durable_rules
where it imports, python) through `engine.value_many`; results are compared whole, the
field naming the matcher aside, and the first difference stops the run (exit 1). Prints
progress, then per matcher the valuations per second, and which rules fired how often.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import TivError, available_matchers, value_many  # noqa: E402
from tests.test_differential import RULE_IDS, RULES, corpus, fired, outcome  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="shipments (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--trace", action="store_true", help="compare traces too (slower)")
    args = parser.parse_args()
    matchers = available_matchers()
    print(f"{args.n:,} shipments on {', '.join(m.name for m in matchers)}", flush=True)
    streams = [
        value_many(RULES, corpus(args.n, args.seed), policy="mini", matcher=m, trace=args.trace)
        for m in matchers
    ]
    spent = [0.0] * len(matchers)
    counts: Counter[str] = Counter()
    errors = 0
    start = time.perf_counter()
    for index in range(args.n):
        items = []
        for position, stream in enumerate(streams):
            began = time.perf_counter()
            items.append(next(stream))
            spent[position] += time.perf_counter() - began
        first, *others = (outcome(item) for item in items)
        for matcher, other in zip(matchers[1:], others, strict=True):
            if other != first:
                print(f"shipment {index}: {matcher.name} differs from {matchers[0].name}")
                return 1
        if isinstance(items[0], TivError):
            errors += 1
        else:
            counts.update(fired(items[0]))
        if (index + 1) % 50_000 == 0:
            elapsed = time.perf_counter() - start
            print(f"  {index + 1:,} agree ({elapsed:.0f} s)", flush=True)
    print(f"all {args.n:,} agree; {errors:,} refused alike")
    for matcher, seconds in zip(matchers, spent, strict=True):
        print(f"  {matcher.name:14} {args.n / seconds:>10,.0f} valuations/s")
    missing = [rule for rule in RULE_IDS if not counts[rule]]
    for rule, count in sorted(counts.items()):
        print(f"  fired {rule:30} {count:>10,}")
    if missing:
        print(f"rules that never fired: {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
