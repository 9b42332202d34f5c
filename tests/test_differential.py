"""Both matchers, whole valuations: every example and generated shipments give identical results.

test_matching.py compares the matchers on random conditions; this compares what users
see: the same Valuation (figures, exclusions, reasons, flags, trace) whichever backend
matched the rules.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import available_matchers, run_examples, value
from tests.conftest import load_mini

MATCHERS = available_matchers()
pytestmark = pytest.mark.skipif(len(MATCHERS) < 2, reason="durable_rules is not importable here")

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
    """)


def comparable(result: Any) -> dict[str, Any]:
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
