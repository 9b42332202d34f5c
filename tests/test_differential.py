"""Every matcher, whole valuations: every example and generated shipments give identical results.

test_matching.py compares the JSON backends on random conditions; this compares what
users see: the same Valuation (figures, exclusions, reasons, flags, trace) whichever
backend matched the rules (compiled closures, durable_rules, the production Python
matcher). `corpus` makes a reproducible corpus in which every rule of the test pack
fires; bench/differential.py runs it at a million shipments.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import TivError, available_matchers, run_examples, value, value_many
from tests.conftest import load_mini

MATCHERS = available_matchers()
# The compiled and production matchers run everywhere; durable_rules where it imports.

RULES = load_mini("""\
    - id: big
      when: tiv > 2500.005
      decide: refer
      reason: Above the limit
    - id: sanctioned
      when: shipment.destination.country in ["IR", "KP", "SY"] or "IR" in shipment.transit_countries
      decide: decline
      reason: Sanctioned
    - id: collect
      for: charge
      when: shipment.payment_method == "collect" and charge.group == "main_carriage"
      exclude_charge: true
      reason: Freight collect
    - id: art
      for: goods
      when: goods.category in ["fine_art", "antiques"] and not (goods.value < 1000)
      decide: refer
      reason: Professional valuation
    - id: no-hs
      for: goods
      when: not exists(goods.hs_code)
      flag: missing_hs_code
      reason: No HS code
    - id: domestic
      when: shipment.origin.country == shipment.destination.country
      flag: domestic
      reason: Domestic transit
    - id: late
      when: shipment.date >= "2024-06-01" and not exists(shipment.sum_insured)
      flag: no_sum_insured
      reason: No declared sum insured
    - id: freight-heavy
      when: charges.main_carriage * 4 > invoice and not (shipment.mode == "air")
      flag: freight_heavy
      reason: Freight above a quarter of the invoice
    - id: dear-line
      for: charge
      when: charge.amount * 10 > shipment.invoice.amount * 2
      flag: dear_charge
      reason: A charge above a fifth of the invoice
    - id: under-insured
      when: shipment.sum_insured < tiv - 100
      decide: refer
      reason: Sum insured well under the TIV
    """)
RULE_IDS = [
    "big",
    "sanctioned",
    "collect",
    "art",
    "no-hs",
    "domestic",
    "late",
    "freight-heavy",
    "dear-line",
    "under-insured",
]
CHARGE_TYPES = [
    "ocean_freight",
    "air_freight",
    "origin_charges",
    "destination_charges",
    "detention",
    "demurrage",
]
COUNTRIES = ["US", "IR", "DE", "CN", "KP", "GB"]


def _amount(rng: random.Random) -> str:
    # Cents, with a share of values on and around the rules' thresholds.
    cents = rng.choice([rng.randrange(0, 400_000_00), rng.randrange(0, 3_000_00), 1000_00])
    return str(Decimal(cents).scaleb(-2))


def corpus(n: int, seed: int = 9) -> Iterator[dict[str, Any]]:
    """`n` shipments for the test pack, shipment i drawn from its own (seed, i) generator."""
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        facts: dict[str, Any] = {
            "id": f"D{i}",
            "date": f"{rng.choice([2020, 2023, 2024, 2025])}-{rng.randint(1, 12):02d}-15",
            "currency": "USD",
            "mode": rng.choice(["ocean", "air"]),
            "origin": {"country": rng.choice(COUNTRIES)},
            "destination": {"country": rng.choice(COUNTRIES)},
            "payment_method": rng.choice(["prepaid", "collect"]),
            "invoice": {"amount": _amount(rng)},
            "charges": [
                {"type": rng.choice(CHARGE_TYPES), "amount": _amount(rng)}
                for _ in range(rng.randint(0, 4))
            ],
            "goods": [],
        }
        for _ in range(rng.randint(0, 3)):
            line: dict[str, Any] = {"description": "item"}
            if rng.random() < 0.8:
                line["hs_code"] = rng.choice(["8471", "9701"])
            if rng.random() < 0.6:
                line["category"] = rng.choice(["fine_art", "antiques", "toys"])
            if rng.random() < 0.7:
                line["value"] = _amount(rng)
            facts["goods"].append(line)
        if rng.random() < 0.4:
            facts["sum_insured"] = _amount(rng)
        if rng.random() < 0.5:
            facts["transit_countries"] = rng.sample(COUNTRIES, rng.randint(0, 3))
        if rng.random() < 0.3:
            facts["duties"] = []
        yield facts


def fired(result: Any) -> set[str]:
    return (
        {r.rule for r in result.reasons}
        | {f.rule for f in result.flags}
        | {c.rule for c in result.excluded_charges}
    )


def outcome(item: Any) -> Any:
    """A result without the field naming its matcher, or the error's problems."""
    if isinstance(item, TivError):
        return [str(problem) for problem in item.problems]
    return comparable(item)


def comparable(result: Any) -> dict[str, Any]:
    """The result as JSON data, without the field that names the matcher."""
    data = result.model_dump(mode="json")
    del data["matcher"]
    return data


def test_every_shipped_example_agrees(shipped) -> None:
    outcomes = [run_examples(shipped, matcher=m) for m in MATCHERS]
    assert all(outcome == outcomes[0] for outcome in outcomes[1:])
    assert all(o.passed for o in outcomes[0])


amounts = st.decimals(min_value=0, max_value=Decimal("400000"), places=2, allow_nan=False)
countries = st.sampled_from(["US", "IR", "DE", "CN", "KP", "GB"])
charge = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "ocean_freight",
                "air_freight",
                "origin_charges",
                "destination_charges",
                "detention",
                "demurrage",
            ]
        ),
        "amount": amounts.map(str),
    }
)
goods = st.fixed_dictionaries(
    {"description": st.just("item")},
    optional={
        "hs_code": st.sampled_from(["8471", "9701"]),
        "category": st.sampled_from(["fine_art", "antiques", "toys"]),
        "value": amounts.map(str),
    },
)
shipments = st.fixed_dictionaries(
    {
        "id": st.just("G"),
        "date": st.dates(min_value=__import__("datetime").date(2020, 1, 1)).map(str),
        "currency": st.just("USD"),
        "mode": st.sampled_from(["ocean", "air"]),
        "origin": st.fixed_dictionaries({"country": countries}),
        "destination": st.fixed_dictionaries({"country": countries}),
        "payment_method": st.sampled_from(["prepaid", "collect"]),
        "invoice": st.fixed_dictionaries({"amount": amounts.map(str)}),
        "charges": st.lists(charge, max_size=4),
        "goods": st.lists(goods, max_size=3),
    },
    optional={
        "sum_insured": amounts.map(str),
        "transit_countries": st.lists(countries, max_size=3, unique=True),
        "duties": st.just([]),
    },
)


@settings(max_examples=150, deadline=None)
@given(facts=shipments)
def test_generated_shipments_agree(facts: dict[str, Any]) -> None:
    first, *others = (comparable(value(RULES, facts, policy="mini", matcher=m)) for m in MATCHERS)
    assert all(other == first for other in others)


def test_ten_thousand_generated_shipments_agree_on_every_matcher_and_fire_every_rule() -> None:
    # One stream per matcher through value_many; every result, trace included, compared.
    n = 10_000
    streams = [value_many(RULES, corpus(n), policy="mini", matcher=m) for m in MATCHERS]
    seen: set[str] = set()
    errors = 0
    for index, items in enumerate(zip(*streams, strict=True)):
        first, *others = (outcome(item) for item in items)
        assert all(other == first for other in others), (index, [m.name for m in MATCHERS])
        if isinstance(items[0], TivError):
            errors += 1
        else:
            seen |= fired(items[0])
    assert set(RULE_IDS) <= seen  # every rule of the pack (and charge_types exclusions)
    assert errors < n // 100  # the corpus is meant to be valued, not refused
