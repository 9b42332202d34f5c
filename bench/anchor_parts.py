"""Where one valuation of the anchor decision goes: `value()` taken apart, in µs.

    .venv/bin/python bench/anchor_parts.py [--anchors ../shared/anchors] [--n 20000]

Uses the anchor harness's own pack, corpus and facts mapping (`../shared/anchors`, its
`impl_tiv.py` and `common.py`), so the parts add up to what its `tiv-default` rows time.
Each part is timed alone over the same shipments (best of 7 loops); `value()` is timed
whole, with and without the trace. The parts, for one shipment:

- the harness's mapping of its shipment to tiv's facts (outside tiv);
- reading the facts on the plain road (`facts.read_plain`: the pack's own pydantic-core
  validator, giving dicts) and, for comparison, as a `Shipment` (`facts.read_facts`);
- selecting the version and its plain line (`api._PlainRoad`);
- the valuation (`evaluating.valuation.evaluate_plain`), and within it the pack's
  generated function alone;
- `value()`'s own work: the rest (its time budget's deadline, the road's checks).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import value  # noqa: E402
from engine.api import _COMPILED  # noqa: E402
from engine.evaluating.valuation import evaluate_plain  # noqa: E402
from engine.facts import read_facts, read_plain  # noqa: E402


def best_of(function: Callable[[Any], Any], items: Sequence[Any], loops: int = 7) -> float:
    """The fastest loop's time per item, in µs."""
    best = float("inf")
    for _ in range(loops):
        start = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=Path, default=ROOT.parent / "shared" / "anchors")
    parser.add_argument("--n", type=int, default=20000, help="shipments (default 20000)")
    args = parser.parse_args()
    if not (args.anchors / "impl_tiv.py").exists():
        raise SystemExit(f"no anchor harness at {args.anchors} (give --anchors PATH)")
    os.environ["TIV_PROJECT"] = str(ROOT)
    sys.path.insert(0, str(args.anchors.resolve()))
    import common  # type: ignore[import-not-found]
    import impl_tiv  # type: ignore[import-not-found]

    evaluate = impl_tiv.make_evaluator("default", trace=False)
    rules = next(
        cell.cell_contents
        for cell in evaluate.__closure__ or ()
        if type(cell.cell_contents).__name__ == "RuleSet"
    )
    shipments = common.generate_shipments(args.n)
    facts = [impl_tiv._facts(s) for s in shipments]
    for item in facts[:1000]:  # warm: the pack's validators and lines are made on first use
        value(rules, item, policy="anchor", trace=False)

    road = rules.plain_roads["anchor"]
    reference = road.reference
    plain = [read_plain(item, reference) for item in facts]
    if any(item is None for item in plain):
        raise SystemExit("a shipment left the plain road: the figures would not add up")
    chosen = [road.versions[item["date"], False][:2] for item in plain]
    work = list(zip(plain, chosen, strict=True))

    def valuation(pair: Any) -> Any:
        item, (pack, line) = pair
        return evaluate_plain(rules, pack, line, item, reference, item["date"], _COMPILED, False)

    def generated(pair: Any) -> Any:
        item, (_pack, line) = pair
        places = rules.currencies[item["currency"]]
        return line.function(item, places, True, rules.incoterms, None, None)

    def selected(item: Any) -> Any:
        found = road.versions.get((item["date"], False))
        return found if found is not None else road.version(rules, item["date"], False)

    whole_off = best_of(lambda item: value(rules, item, policy="anchor", trace=False), facts)
    whole_on = best_of(lambda item: value(rules, item, policy="anchor", trace=True), facts)
    mapping = best_of(impl_tiv._facts, shipments)
    harness = best_of(evaluate, shipments)
    reading = best_of(lambda item: read_plain(item, reference), facts)
    models = best_of(lambda item: read_facts(item, reference), facts)
    selecting = best_of(selected, plain)
    valuing = best_of(valuation, work)
    function = best_of(generated, work)
    rest = whole_off - reading - selecting - valuing
    print(f"anchor pack, {len(facts):,} shipments, load {os.getloadavg()[0]:.2f}; µs each")
    print(f"  harness call (mapping + value(), trace off) {harness:6.2f}")
    print(f"  the harness's facts mapping                  {mapping:6.2f}")
    print(f"  value(), trace on                            {whole_on:6.2f}")
    print(f"  value(), trace off                           {whole_off:6.2f}")
    print(f"    reading the facts (plain dicts)            {reading:6.2f}")
    print(f"      (as a Shipment instead: {models:.2f})")
    print(f"    selecting the version and its line         {selecting:6.2f}")
    print(f"    the valuation                              {valuing:6.2f}")
    print(f"      of which the generated function          {function:6.2f}")
    print(f"    value()'s own work (the rest)              {rest:6.2f}")


if __name__ == "__main__":
    main()
