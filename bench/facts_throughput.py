"""Microseconds per facts validation (`read_facts`), as a mapping and as JSON bytes.

    .venv/bin/python bench/facts_throughput.py [--seconds 1] [--repeats 5]

Validates, against the `standard` pack's facts reference (the one `engine.value`
reads facts against), the way a caller does: an already-parsed mapping (a library
caller, the batch runner) and JSON bytes (an HTTP body, a JSONL row):

* anchor: 1,000 shipments shaped like the anchor harness's facts (../shared/anchors,
  impl_tiv.py `_facts`): ten keys, one goods line, 3 to 6 charges with decimal-text
  amounts, all in USD; made here from random.Random(42), taken in turn;
* seed: the seed shipment (examples/shipments/seed-electronics.yaml);
* 20 lines: the seed with 20 goods lines that add up to the same invoice.

Each figure is the best of `--repeats` timed runs of `--seconds` each, so another
process's burst on a shared machine does not count against us; the CPU time this
process got is shown beside the wall time for the same reason. Goals (issue 9 item 4
and the anchor budget): the seed in at most 15 µs, anchor-shaped facts in at most 3 µs.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine import load_rules
from engine.facts import FactsReference, read_facts
from engine.loading.yamlfile import parse_yaml_data

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples/shipments/seed-electronics.yaml"
GOALS_US = {"anchor": 3.0, "seed": 15.0}
CHARGE_TYPES = (
    "ocean_freight",
    "air_freight",
    "origin_charges",
    "destination_charges",
    "detention",
    "demurrage",
)


def per_call_us(
    call: Callable[[Any], object], inputs: Sequence[Any], seconds: float, repeats: int
) -> tuple[float, float]:
    """(wall µs, CPU µs) per call, each the best of `repeats` runs over `inputs` in turn.
    The CPU figure counts only the time this process ran, so it holds up on a machine
    shared with others."""
    for item in inputs[:200]:
        call(item)
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        deadline = start + seconds
        while True:
            for item in inputs:
                call(item)
            count += len(inputs)
            now = time.perf_counter()
            if now >= deadline:
                break
        best_cpu = min(best_cpu, (time.process_time() - cpu) / count * 1e6)
        best_wall = min(best_wall, (now - start) / count * 1e6)
    return best_wall, best_cpu


def anchor_shaped(count: int) -> list[dict[str, Any]]:
    """Facts shaped as the anchor harness maps its shipments (impl_tiv.py `_facts`)."""
    rng = random.Random(42)
    shipments = []
    for number in range(count):
        goods: dict[str, Any] = {"description": "goods", "hs_code": f"{rng.randint(10, 99)}0110"}
        if rng.random() < 0.1:
            goods["category"] = "art"
        charges = [
            {"type": kind, "amount": f"{rng.randint(50, 20000)}.{rng.randint(0, 99):02d}"}
            for kind in rng.sample(CHARGE_TYPES, rng.randint(3, 6))
        ]
        shipments.append(
            {
                "id": f"A-{number:06d}",
                "date": "2025-06-01",
                "currency": "USD",
                "mode": "ocean",
                "origin": {"country": "CN"},
                "destination": {"country": rng.choice(["US", "DE", "GB", "CN", "AU"])},
                "invoice": {"amount": f"{rng.randint(1000, 900000)}.{rng.randint(0, 99):02d}"},
                "goods": [goods],
                "charges": charges,
                "duties": [],
            }
        )
    return shipments


def twenty_lines(seed: dict[str, Any]) -> dict[str, Any]:
    """The seed shipment with 20 goods lines that add up to the same invoice."""
    data = copy.deepcopy(seed)
    line = data["goods"][0]
    data["goods"] = [
        {**line, "description": f"Laptop batch {n + 1}", "quantity": 100, "value": "25000.00"}
        for n in range(20)
    ]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rules = load_rules(ROOT)
    reference: FactsReference = rules.pack_facts_reference("standard")
    seed = parse_yaml_data(SEED.read_text(encoding="utf-8"), SEED.name).data
    cases: dict[str, list[dict[str, Any]]] = {
        "anchor": anchor_shaped(1000),
        "seed": [seed] * 100,
        "20 lines": [twenty_lines(seed)] * 100,
    }
    print(f"read_facts, µs per call (best of {args.repeats} × {args.seconds:g} s):")
    for label, datas in cases.items():
        bodies = [json.dumps(data).encode() for data in datas]
        for data, body in zip(datas, bodies, strict=True):  # all valid before timing
            assert read_facts(data, reference) == read_facts(body, reference)

        def mapping_call(data: dict[str, Any]) -> object:
            return read_facts(data, reference)

        def bytes_call(body: bytes) -> object:
            return read_facts(body, reference)

        mapping = per_call_us(mapping_call, datas, args.seconds, args.repeats)
        raw = per_call_us(bytes_call, bodies, args.seconds, args.repeats)
        goal = GOALS_US.get(label)
        mark = f"  (goal ≤ {goal:g} µs)" if goal else ""
        print(
            f"  {label:>8}: mapping {mapping[0]:6.1f} µs (CPU {mapping[1]:6.1f})   "
            f"JSON bytes {raw[0]:6.1f} µs (CPU {raw[1]:6.1f}){mark}"
        )


if __name__ == "__main__":
    main()
