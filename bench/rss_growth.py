"""Does memory stay flat over many valuations? RSS growth over N valuations, in one process.

    .venv/bin/python bench/rss_growth.py [--n 1000000] [--matcher compiled] [--trace on|off]

Loads the shipped rules once, values the example shipments (under their own packs)
round-robin through `engine.value_many` as an embedding would, and reads the process's
resident set size (VmRSS, /proc/self/status) after a warm-up and then every tenth of the
run. Each result is read as a caller would (its JSON written out, which builds the
deferred trace), then dropped. The figure is the growth from the warm-up to the end;
the goal is at most 5 MB over 1,000,000 valuations. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine import TivError, available_matchers, load_rules, read_facts, value_many
from engine.facts import FactsReference

ROOT = Path(__file__).resolve().parent.parent
SHIPMENTS = ["seed-electronics.yaml"]
WARM_UP = 20_000


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="valuations after warm-up")
    parser.add_argument("--matcher", choices=[m.name for m in available_matchers()])
    parser.add_argument("--trace", choices=["on", "off"], default="on")
    parser.add_argument("--policy", default="standard")
    args = parser.parse_args()

    rules = load_rules(ROOT)
    matcher = next(
        (m for m in available_matchers() if m.name == args.matcher), available_matchers()[0]
    )
    reference = FactsReference(rules.currencies, rules.countries)
    # The facts as a caller's dicts (canonical JSON form): no YAML parsing in the loop.
    facts = [
        read_facts(ROOT / "examples/shipments" / name, reference).canonical() for name in SHIPMENTS
    ]

    def run(count: int) -> Iterator[Any]:
        stream = itertools.islice(itertools.cycle(facts), count)
        results = value_many(
            rules, stream, policy=args.policy, matcher=matcher, trace=args.trace == "on"
        )
        for result in results:
            if isinstance(result, TivError):
                raise result
            yield result.model_dump_json()

    for _ in run(WARM_UP):
        pass
    gc.collect()
    start_rss = rss_mib()
    started, cpu = time.perf_counter(), time.process_time()
    print(
        f"{args.n:,} valuations of {', '.join(SHIPMENTS)} under {args.policy}, "
        f"matcher {matcher.name}, trace {args.trace}; RSS after {WARM_UP:,} warm-up: "
        f"{start_rss:.1f} MiB"
    )
    step = max(1, args.n // 10)
    done = 0
    peak = start_rss
    while done < args.n:
        count = min(step, args.n - done)
        for _ in run(count):
            pass
        done += count
        now = rss_mib()
        peak = max(peak, now)
        print(f"  {done:>9,}: RSS {now:7.1f} MiB ({now - start_rss:+.2f})", flush=True)
    gc.collect()
    end_rss = rss_mib()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"RSS growth over {args.n:,} valuations: {end_rss - start_rss:+.2f} MiB "
        f"(peak {peak - start_rss:+.2f}); {args.n / elapsed:,.0f} valuations/s wall, "
        f"{cpu / args.n * 1e6:.1f} µs CPU each"
    )


if __name__ == "__main__":
    main()
