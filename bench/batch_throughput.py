"""Shipments per second of `tiv batch` on a generated bordereau, for 1 and 2 workers.

    .venv/bin/python bench/batch_throughput.py [--rows 100000] [--workers 1 2] [--seed 7]

Generates the corpus (engine.corpus when this build has it, else the small generator
below), writes it as JSONL, then values it once per worker count with `run_batch`, the
code behind `tiv batch`: reading, valuing, writing and checkpointing all included.
Checks that every worker count wrote the same bytes, and reports the peak memory of
the main process and of the largest worker (flat memory: it does not grow with --rows).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.batch import BatchOptions, run_batch  # noqa: E402


def shipments(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """`n` shipments valid for the `standard` pack: engine.corpus if present, else a local
    generator (amounts as decimal strings, a mix of modes, currencies and charges)."""
    try:
        from engine.corpus import generate  # type: ignore[import-not-found]
    except ImportError:
        yield from _local(n, seed)
        return
    yield from generate(n, seed)


def _local(n: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    lanes = [("CN", "US"), ("DE", "US"), ("VN", "US"), ("IN", "US"), ("CN", "DE"), ("BR", "GB")]
    for number in range(n):
        origin, destination = rng.choice(lanes)
        currency = "EUR" if destination == "DE" else "USD"
        invoice_currency = rng.choice([currency, "USD", "EUR"])
        mode = rng.choice(["ocean", "ocean", "air", "road"])
        main = {"ocean": "ocean_freight", "air": "air_freight", "road": "road_freight"}[mode]
        charges = [{"type": main, "amount": f"{rng.randint(200, 9000)}.{rng.randint(0, 99):02d}"}]
        if rng.random() < 0.5:
            charges.append({"type": "origin_charges", "amount": f"{rng.randint(50, 900)}.00"})
        if rng.random() < 0.2:
            charges.append({"type": "demurrage", "amount": f"{rng.randint(100, 2000)}.00"})
        facts: dict[str, Any] = {
            "id": f"G-{seed}-{number}",
            "date": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "currency": currency,
            "mode": mode,
            "origin": {"country": origin},
            "destination": {"country": destination},
            "invoice": {
                "amount": f"{rng.randint(1_000, 2_000_000)}.{rng.randint(0, 99):02d}",
                "currency": invoice_currency,
            },
            "charges": charges,
            # Declared duties (possibly none): duty estimates need country rules that a
            # generated lane may not have.
            "duties": [{"type": "customs_fee", "amount": f"{rng.randint(0, 3000)}.00"}]
            if rng.random() < 0.5
            else [],
        }
        if invoice_currency != currency:
            facts["fx"] = {invoice_currency: "1.0850" if invoice_currency == "EUR" else "0.9215"}
        yield facts


def _peak_kib() -> tuple[int, int]:
    """(this process, largest child) peak resident set, in KiB (Linux units)."""
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tiv-bench-") as folder:
        source = Path(folder) / "bordereau.jsonl"
        started = time.perf_counter()
        with source.open("w", encoding="utf-8") as handle:
            for facts in shipments(args.rows, args.seed):
                handle.write(json.dumps(facts) + "\n")
        print(
            f"corpus: {args.rows:,} shipments, {source.stat().st_size / 1e6:.1f} MB, "
            f"generated in {time.perf_counter() - started:.1f} s"
        )
        outputs = []
        for workers in args.workers:
            output = Path(folder) / f"out-{workers}.jsonl"
            options = BatchOptions(input=source, output=output, policy="standard", workers=workers)
            summary = run_batch(ROOT, options)
            rate = summary.rows / summary.seconds
            own, child = _peak_kib()
            print(
                f"workers={workers}: {summary.rows:,} rows ({summary.failed:,} failed) in "
                f"{summary.seconds:.1f} s = {rate:,.0f} shipments/s; peak RSS main "
                f"{own / 1024:.0f} MiB, largest worker {child / 1024:.0f} MiB"
            )
            outputs.append(output.read_bytes())
        same = all(out == outputs[0] for out in outputs)
        print(f"outputs identical across worker counts: {same}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
