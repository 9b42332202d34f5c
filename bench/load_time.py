"""Time to load and compile the whole shipped rule repository, each run in a fresh process.

    .venv/bin/python bench/load_time.py [--runs 9]

A fresh process is what a CLI call or a service start pays: no warm caches. Each run
times `load_rules(ROOT)` (every rule file read, parsed, validated and compiled) and,
inside it, the time spent turning YAML text into data (engine.loading.yamlfile), so
the split shows YAML against the rest. Imports are timed apart. Issue 9's goal: the
whole load in at most 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 0.3


def one_run() -> dict[str, float]:
    """Load once in this process; the figures in seconds, wall and CPU."""
    started = time.perf_counter()
    from engine import load_rules
    from engine.loading import yamlfile

    imported = time.perf_counter()
    spent = {"yaml": 0.0, "yaml_cpu": 0.0}
    parse = yamlfile._load

    def timed(*args: object, **kwargs: object) -> object:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return parse(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            spent["yaml"] += time.perf_counter() - wall
            spent["yaml_cpu"] += time.process_time() - cpu

    yamlfile._load = timed  # type: ignore[assignment]
    wall, cpu = time.perf_counter(), time.process_time()
    load_rules(ROOT)
    return {
        "import": imported - started,
        "load": time.perf_counter() - wall,
        "load_cpu": time.process_time() - cpu,
        **spent,
        "libyaml": float(getattr(yamlfile, "WITH_LIBYAML", False)),  # False before libyaml
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run()))
        return
    runs: list[dict[str, float]] = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, __file__, "--one"], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout))

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    print(f"load and compile the shipped repository, median of {args.runs} fresh processes")
    print("(wall time, and the CPU time the process got, which holds up on a busy machine):")
    for label, key, note in (
        ("total", "load", f"goal ≤ {GOAL_S * 1000:.0f} ms"),
        ("YAML", "yaml", "engine.loading.yamlfile"),
    ):
        print(
            f"  {label:<6} {median(key) * 1000:7.1f} ms  CPU {median(key + '_cpu') * 1000:7.1f} ms"
            f"   ({note})"
        )
    rest, rest_cpu = median("load") - median("yaml"), median("load_cpu") - median("yaml_cpu")
    print(
        f"  rest   {rest * 1000:7.1f} ms  CPU {rest_cpu * 1000:7.1f} ms"
        "   (validate, compile, examples)"
    )
    print(f"  imports {median('import') * 1000:6.1f} ms (not in the total)")
    print(f"  libyaml {'yes' if median('libyaml') else 'no'}")


if __name__ == "__main__":
    main()
