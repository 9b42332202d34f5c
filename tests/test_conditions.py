"""Conditions compile to durable_rules JSON, and numbers are encoded so comparisons stay exact."""

from __future__ import annotations

import operator
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.compiling.conditions import (
    MAX_EXACT,
    compile_condition,
    encode_fact,
    encode_number,
    scale_of,
)
from engine.compiling.expressions import parse
from engine.compiling.formulas import BOOL, DATE, LIST, MISSING, NUMBER, TEXT, Symbol
from engine.errors import Location

WHERE = Location("p.yaml", 5, 11, "rules[0].when")
SYMBOLS = {
    "shipment.destination.country": Symbol(TEXT),
    "shipment.origin.country": Symbol(TEXT),
    "shipment.date": Symbol(DATE),
    "shipment.sum_insured": Symbol(NUMBER, optional=True),
    "shipment.transit_countries": Symbol(LIST, optional=True, element=TEXT),
    "tiv": Symbol(NUMBER),
    "under_insured": Symbol(BOOL),
    "limit": Symbol(NUMBER, constant=Decimal("2500000")),
    "sanctioned": Symbol(LIST, element=TEXT, constant=("KP", "IR")),
}

OPS = {
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
}

decimals = st.decimals(
    min_value=Decimal("-1e9"),
    max_value=Decimal("1e9"),
    allow_nan=False,
    allow_infinity=False,
    places=6,
)


@given(x=decimals, c=decimals, op=st.sampled_from(sorted(OPS)))
def test_encoding_preserves_every_comparison_exactly(x: Decimal, c: Decimal, op: str) -> None:
    # The literal decides the scale; the fact value may have any number of places.
    scale = scale_of(c.normalize()) if c != 0 else 0
    c_enc = encode_number(c.normalize() if c != 0 else Decimal(0), scale)
    assert OPS[op](encode_number(x, scale), c_enc) == OPS[op](x, c)


def test_encoding_by_hand() -> None:
    # 1,000,000.004 at scale 2: 100,000,000.4 -> 2 * 100,000,000 + 1 = 200,000,001
    assert encode_number(Decimal("1000000.004"), 2) == 200_000_001
    # the literal 1,000,000.00 at scale 2: 2 * 100,000,000 = 200,000,000, so x > c holds
    assert encode_number(Decimal("1000000.00"), 2) == 200_000_000
    # -0.5 at scale 0: floor(-0.5) = -1 -> 2 * -1 + 1 = -1, between -2 (-1) and 0 (0)
    assert encode_number(Decimal("-0.5"), 0) == -1


def test_too_large_to_compare_exactly_is_refused() -> None:
    with pytest.raises(OverflowError):
        encode_number(Decimal(MAX_EXACT), 0)


def compile_ok(text: str, scope: str = "shipment"):
    expr, problems = parse(text, WHERE)
    assert expr is not None, problems
    condition, problems = compile_condition(expr, WHERE, scope, SYMBOLS)
    assert condition is not None, problems
    return condition


def compile_fails(text: str) -> str:
    expr, problems = parse(text, WHERE)
    assert expr is not None, problems
    condition, problems = compile_condition(expr, WHERE, "shipment", SYMBOLS)
    assert condition is None
    return problems[0].message


def test_in_list_becomes_or_of_equalities() -> None:
    c = compile_ok('shipment.destination.country in ["KP", "IR"]')
    assert c.json == {
        "$and": [
            {"kind": "shipment"},
            {
                "$or": [
                    {"shipment__destination__country": "KP"},
                    {"shipment__destination__country": "IR"},
                ]
            },
        ]
    }


def test_parameters_are_constants() -> None:
    c = compile_ok("shipment.destination.country in sanctioned and tiv > limit")
    body = c.json["$and"][1]
    assert body["$and"][1] == {"$gt": {"tiv__s0": 5_000_000}}  # 2 × 2,500,000


def test_not_is_pushed_down() -> None:
    c = compile_ok('not (shipment.destination.country == "US" or tiv >= 10.5)')
    body = c.json["$and"][1]
    # not (a or b) = (not a) and (not b); not (x >= 10.5) = x < 10.5, at scale 1: 2 × 105
    assert body == {
        "$and": [{"$neq": {"shipment__destination__country": "US"}}, {"$lt": {"tiv__s1": 210}}]
    }


def test_exists_uses_an_explicit_presence_field() -> None:
    c = compile_ok("not exists(shipment.sum_insured)")
    assert c.json["$and"][1] == {"shipment__sum_insured__present": False}
    fact = encode_fact({"shipment.sum_insured": MISSING}, c.fields)
    assert fact == {"shipment__sum_insured__present": False}


def test_dates_compare_as_iso_text() -> None:
    c = compile_ok('shipment.date >= "2025-08-29"')
    assert c.json["$and"][1] == {"$gte": {"shipment__date": "2025-08-29"}}


def test_constant_in_list_fact_uses_iany() -> None:
    c = compile_ok('"IR" in shipment.transit_countries')
    assert c.json["$and"][1] == {"$iany": {"shipment__transit_countries": {"$i": "IR"}}}


def test_text_names_compare_by_reference() -> None:
    c = compile_ok("shipment.origin.country == shipment.destination.country")
    assert c.json["$and"][1] == {
        "shipment__origin__country": {"$m": "shipment__destination__country"}
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tiv * 2 > 100", "compute anything else in a formula"),
        ("shipment.sum_insured < tiv", "comparing two numbers is done in a formula"),
        ('tiv == "a"', "cannot compare `tiv` (number) with a text"),
        ("tiv", "is a number, not true/false"),
        ("tvi > 3", "did you mean `tiv`"),
        ('shipment.date > "29/08/2025"', "not an ISO date"),
    ],
)
def test_conditions_outside_the_subset_are_explained(text: str, fragment: str) -> None:
    assert fragment in compile_fails(text)


def test_boolean_formula_by_name() -> None:
    c = compile_ok("under_insured")
    assert c.json["$and"][1] == {"under_insured": True}
