"""Reasons templated from parameters and figures (engine/compiling/reasons.py): `{name}`
is written in exactly, parameters at load and formulas per valuation; an unknown name is a
load error at the reason's file:line naming the names it may use."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import RulesError, load_rules, value
from engine.compiling.reasons import compile_reason, written
from engine.errors import Location, Problem
from tests.conftest import line_of, mini, repo, shipment

LIMIT = "  margin_rate: 0.10\n  limit_usd: 1000\n  watched: [DE, FR]\n"


def pack(rules: str) -> str:
    return mini(rules, replace={"  margin_rate: 0.10\n": LIMIT})


ABOVE = pack(
    """\
    - id: above-limit
      when: tiv > limit_usd
      decide: refer
      reason: "The TIV {tiv} is above the {limit_usd} USD limit (margin {margin_rate}; {{tiv}})"
    - id: watched
      when: shipment.destination.country in watched
      flag: watched
      reason: "Bound for one of {watched}: TIV {tiv}"
    """
)


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(RulesError) as info:
        load_rules(files=repo(text))
    return list(info.value.problems)


def test_parameters_are_written_in_at_load_and_figures_per_valuation() -> None:
    rules = load_rules(files=repo(ABOVE))
    (pack_,) = rules.packs["mini"]
    shown = {r.id: r.reason for r in pack_.rules}
    # Parameters are in at load; the figure stays named until a valuation has it.
    assert shown["above-limit"] == "The TIV {tiv} is above the 1000 USD limit (margin 0.10; {tiv})"
    # invoice 1,000.00, no charges, margin (1,000.00 + 0) × 0.10 = 100.0000, no duties:
    # tiv = round(1,000.00 + 0 + 100.0000 + 0) = 1,100.00 > 1,000 -> refer.
    result = value(rules, shipment(destination={"country": "DE"}), policy="mini")
    assert result.decision == "refer"
    (reason,) = result.reasons
    assert reason.reason == "The TIV 1100.00 is above the 1000 USD limit (margin 0.10; {tiv})"
    (flag,) = result.flags
    assert flag.reason == "Bound for one of DE, FR: TIV 1100.00"


def test_a_figure_is_the_valuation_own() -> None:
    rules = load_rules(files=repo(ABOVE))
    # invoice 2,000.00: margin 200.0000, tiv = round(2,200.0000) = 2,200.00.
    facts = shipment(invoice={"amount": "2000.00"})
    (reason,) = value(rules, facts, policy="mini").reasons
    assert reason.reason.startswith("The TIV 2200.00 is above")


def test_an_unknown_name_is_a_load_error_naming_the_known_ones() -> None:
    text = pack(
        """\
        - id: above-limit
          when: tiv > limit_usd
          decide: refer
          reason: "above the {limit} USD limit"
        """
    )
    (problem,) = problems_of(text)
    assert problem.code == "reason.unknown_name"
    assert problem.location.line == line_of(text, 'reason: "above the {limit} USD limit"')
    assert "did you mean `{limit_usd}`?" in problem.message
    assert "parameters: margin_rate, limit_usd, watched" in problem.message
    assert "formulas: invoice, freight, margin, duties, tiv" in problem.message


def test_a_charge_rule_reason_names_parameters_only() -> None:
    text = pack(
        """\
        - id: drop-origin
          for: charge
          when: charge.type == "origin_charges"
          exclude_charge: true
          reason: "left out above {tiv}"
        """
    )
    (problem,) = problems_of(text)
    assert "computed after charges are counted" in problem.message


def test_an_excluded_charge_type_reason_is_templated_too() -> None:
    text = pack("").replace(
        "detention: {excluded: Detention is a penalty}",
        'detention: {excluded: "Detention is a penalty (margin {margin_rate} not applied)"}',
    )
    rules = load_rules(files=repo(text))
    facts = shipment(charges=[{"type": "detention", "amount": "50.00"}])
    (excluded,) = value(rules, facts, policy="mini").excluded_charges
    assert excluded.reason == "Detention is a penalty (margin 0.10 not applied)"


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("above {limit_usd:,}", "names a value as {name} only"),
        ("above {limit_usd!r}", "names a value as {name} only"),
        ("above { limit", "braces do not pair up"),
        ("above } limit", "braces do not pair up"),
    ],
)
def test_only_plain_names_and_paired_braces(reason: str, says: str) -> None:
    text = pack(
        f"""\
        - id: r
          when: tiv > limit_usd
          decide: refer
          reason: "{reason}"
        """
    )
    (problem,) = problems_of(text)
    assert problem.code == "reason.template"
    assert says in problem.message


def test_values_are_written_exactly() -> None:
    assert written(Decimal("2E+6")) == "2000000"
    assert written(Decimal("0.0035")) == "0.0035"
    assert written(Decimal("1.10")) == "1.10"  # the places as the rule file wrote them
    assert written(True) == "true"
    assert written(datetime.date(2022, 3, 1)) == "2022-03-01"
    assert written(("CU", "IR")) == "CU, IR"


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_a_number_parameter_reads_back_as_the_same_decimal(number: Decimal) -> None:
    shown, template, problems = compile_reason(
        "limit {x} USD", Location("p.yaml", 3), {"x": number}, ()
    )
    assert not problems and template is None
    text = shown.removeprefix("limit ").removesuffix(" USD")
    assert "e" not in text.lower()  # never scientific notation
    assert Decimal(text) == number


def test_blue_harbour_limit_reason_templated_as_the_readme_shows() -> None:
    # blue-harbour 1.1.0 with its limit reason templated, as a draft 1.2.0 (published
    # versions never change; this is the walk-through's example on a real pack).
    from tests.conftest import REFERENCE, ROOT

    text = (ROOT / "policies/blue-harbour/1.1.0.yaml").read_text(encoding="utf-8")
    old = (
        "reason: The TIV is above the 2,000,000 USD per-conveyance limit; an underwriter "
        "must accept the excess."
    )
    new = (
        "reason: The TIV {tiv} is above the {per_conveyance_limit_usd} USD per-conveyance "
        "limit; an underwriter must accept the excess."
    )
    assert text.count(old) == 1
    draft = (
        text.replace(old, new)
        .replace("version: 1.1.0", "version: 1.2.0")
        .replace("status: published", "status: draft")
    )
    rules = load_rules(files={**REFERENCE, "policies/blue-harbour/1.2.0.yaml": draft})
    facts = {
        "id": "BH-LIMIT",
        "date": "2025-08-04",
        "currency": "USD",
        "mode": "air",
        "origin": {"country": "FR"},
        "destination": {"country": "AE"},
        "invoice": {"amount": "2500000.00"},
        "goods": [{"description": "Laptops", "category": "electronics", "value": "2500000.00"}],
        "charges": [{"type": "air_freight", "amount": "20000.00"}],
        "duties": [],
    }
    result = value(rules, facts, policy="blue-harbour@1.2.0", allow_draft=True)
    # TIV = (2,500,000.00 + 20,000.00) × 1.10 + 0 = 2,772,000.00 > 2,000,000 USD: refer
    (reason,) = [r for r in result.reasons if r.rule == "above-conveyance-limit"]
    assert reason.reason == (
        "The TIV 2772000.00 is above the 2000000 USD per-conveyance limit; an underwriter "
        "must accept the excess."
    )
