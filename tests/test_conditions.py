"""Conditions compile to durable_rules JSON, and numbers are encoded so comparisons stay exact."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import RulesError, available_matchers, load_rules, value
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
from tests.conftest import line_of, mini, repo

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
        ("tiv * 2 > shipment.destination.country", "cannot compare number with text"),
        ("shipment.transit_countries == sanctioned", "lists are compared with `in`"),
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


# --- Whole packs: limits are load errors, arithmetic runs on every matcher ---

# 17 real codes (rule files may only name real ones), none the shipment's CN or DE
COUNTRIES = ["AE", "AR", "AU", "BR", "CA", "CH", "CL", "EG", "ES", "FR", "GB", "ID", "IN", "IT",
             "JP", "KR", "MX"]  # fmt: skip
SHIPMENT = {
    "id": "A-1",
    "date": "2025-03-01",
    "currency": "USD",
    "mode": "ocean",
    "origin": {"country": "CN"},
    "destination": {"country": "DE"},
    "payment_method": "prepaid",
    "invoice": {"amount": "1000.00"},
    "charges": [
        {"type": "ocean_freight", "amount": "300.00"},
        {"type": "origin_charges", "amount": "40.00"},
    ],
    "goods": [{"description": "pumps", "value": "1000.00"}],
    "duties": [],
}


def test_a_when_past_the_alternatives_limit_is_a_load_error_naming_its_line() -> None:
    # 17 × 17 = 289 alternatives once `and` is distributed over the two `in`s: more than 256.
    text = mini(
        f"""\
        - id: too-wide
          when: shipment.origin.country in {COUNTRIES} and shipment.destination.country in {
            COUNTRIES
        }
          decide: refer
          reason: x
        """
    )
    with pytest.raises(RulesError) as info:
        load_rules(files=repo(text))
    (problem,) = info.value.problems
    assert problem.location.line == line_of(text, "when: shipment.origin.country in")
    assert problem.location.file == "policies/mini/1.0.0.yaml"
    assert "256 alternatives" in problem.message
    assert problem.code == "condition.limit"


def test_a_when_past_the_conjunction_limit_is_a_load_error_naming_its_line() -> None:
    # 25 comparisons in one alternative: more than the 24 durable_rules chains reliably.
    chain = " and ".join(f"shipment.invoice.amount != {n}" for n in range(25))
    text = mini(f"- id: too-long\n  when: {chain}\n  decide: refer\n  reason: x\n")
    with pytest.raises(RulesError) as info:
        load_rules(files=repo(text))
    (problem,) = info.value.problems
    assert problem.location.line == line_of(text, "when: shipment.invoice.amount != 0")
    assert "comparisons" in problem.message


def test_the_cli_validate_exits_3_naming_the_line(tmp_path: Path) -> None:
    text = mini(
        f"""\
        - id: too-wide
          when: shipment.origin.country in {COUNTRIES} and shipment.destination.country in {
            COUNTRIES
        }
          decide: refer
          reason: x
        """
    )
    for path, body in repo(text).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate"],
        env={**os.environ, "TIV_RULES": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    line = line_of(text, "when: shipment.origin.country in")
    assert result.returncode == 3, result.stderr
    assert f"policies/mini/1.0.0.yaml:{line}:" in result.stdout + result.stderr


ARITHMETIC = mini(
    """\
    - id: freight-heavy
      when: charges.main_carriage * 4 > invoice
      flag: freight_heavy
      reason: Freight above a quarter of the invoice
    - id: margin-gap
      when: tiv - invoice >= 440.50
      decide: refer
      reason: Large uplift
    - id: thin-margin
      when: margin < freight / 2
      flag: thin_margin
      reason: Margin under half the freight
    - id: dear-line
      for: charge
      when: charge.amount * 10 > shipment.invoice.amount * 2
      flag: dear_charge
      reason: A charge above a fifth of the invoice
    - id: never
      when: tiv * 0 > 1
      decide: decline
      reason: Cannot happen
    """
)


@pytest.mark.parametrize("matcher", available_matchers(), ids=lambda m: m.name)
def test_arithmetic_in_when_on_every_matcher(matcher: Any) -> None:
    rules = load_rules(files=repo(ARITHMETIC))
    result = value(rules, SHIPMENT, policy="mini", matcher=matcher)
    # freight = 300 + 40 = 340; margin = (1000 + 340) × 0.10 = 134; tiv = 1000 + 340 + 134 = 1474
    assert result.total_insured_value == Decimal("1474.00")
    # freight-heavy: main carriage 300 × 4 = 1200 > 1000 holds.
    # margin-gap: 1474 - 1000 = 474 >= 440.50 holds, so the decision is refer.
    # thin-margin: 134 < 340 / 2 = 170 holds.
    # dear-line: charges[0] 300 × 10 = 3000 > 1000 × 2 = 2000 holds; charges[1] 400 does not.
    # never: 1474 × 0 = 0 > 1 never holds.
    assert result.decision == "refer"
    assert [r.rule for r in result.reasons] == ["margin-gap"]
    flags = {f.name: f.subjects for f in result.flags}
    assert flags == {
        "freight_heavy": ["shipment"],
        "thin_margin": ["shipment"],
        "dear_charge": ["charges[0]"],
    }


def test_arithmetic_near_the_threshold_is_exact() -> None:
    # invoice 1000.00 and freight 340: tiv - invoice = 474 exactly; 474 >= 474.00 holds,
    # 474 >= 474.01 does not, on every matcher.
    for threshold, holds in [("474.00", True), ("474.01", False)]:
        rules = load_rules(files=repo(ARITHMETIC.replace("440.50", threshold)))
        for matcher in available_matchers():
            result = value(rules, SHIPMENT, policy="mini", matcher=matcher)
            assert ("margin-gap" in [r.rule for r in result.reasons]) == holds, matcher.name
