"""Rate tables, claims, pack inheritance, charge rejection and custom functions, on small packs."""

from __future__ import annotations

import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from engine import (
    EvaluationError,
    FactsError,
    RulesError,
    claim,
    custom_function,
    load_rules,
    value,
)
from tests.conftest import ROOT, line_of, mini, repo, shipment

RATED_FORMULAS = """\
  tiv: round(invoice + freight + margin + duties)
  route: region(shipment.destination.country)
  rate: lookup("base_rate")
  premium: round(max(tiv * rate, from_currency(45, "USD")))
  deductible: max(250, tiv * 0.005)
  sum_insured: shipment.sum_insured if exists(shipment.sum_insured) else tiv
  average: min(1, sum_insured / tiv)"""

RATED = mini(
    replace={
        "  tiv: round(invoice + freight + margin + duties)": RATED_FORMULAS,
        "  components: [invoice, freight, margin, duties]": (
            "  components: [invoice, freight, margin, duties]\n"
            "  premium: premium\n  deductible: deductible\n  figures: [rate, average]"
        ),
    }
) + textwrap.dedent("""\
    regions:
      europe: [DE, FR, GB]
      north_america: [US, CA]
    tables:
      base_rate:
        match: most_specific
        on_gap: refer
        gap_reason: No base rate for this mode and route
        keys: {mode: shipment.mode, route: route}
        rows:
          #  mode    route           rate
          - [ocean,  "*",            0.0030]
          - [ocean,  north_america,  0.0025]
          - [air,    europe,         0.0020]
    claims:
      formulas:
        damage: >-
          1 if loss.kind == "total"
          else (loss.damage_percent / 100 if exists(loss.damage_percent)
                else (loss.gross_sound_value - loss.gross_damaged_value) / loss.gross_sound_value)
        gross_loss: sum_insured * damage
        after_average: gross_loss * average
        indemnity: round(max(0, after_average - deductible))
      result:
        indemnity: indemnity
        components: [gross_loss, after_average]
    """)


def rated():
    return load_rules(files=repo(RATED))


def test_most_specific_row_wins_and_minimum_premium_converts() -> None:
    rules = rated()
    # to US by ocean: rows "*" and north_america both match; north_america is more specific
    result = value(rules, shipment(invoice={"amount": "100000.00"}), policy="mini")
    # TIV = 100,000 × 1.10 = 110,000.00; premium = 110,000 × 0.0025 = 275.00
    assert result.figures["rate"] == Decimal("0.0025") and result.premium == Decimal("275.00")
    # deductible = max(250, 110,000 × 0.005 = 550) = 550.00
    assert result.deductible == Decimal("550.00")
    # to GB by ocean: only "*" matches: 0.0030
    result = value(
        rules,
        shipment(invoice={"amount": "100000.00"}, destination={"country": "GB"}),
        policy="mini",
    )
    assert result.premium == Decimal("330.00")  # 110,000 × 0.0030
    # valued in EUR with 1 USD = 0.90 EUR: 1,000 × 1.1 × 0.0030 = 3.30 < 45 USD = 40.50 EUR
    small = shipment(
        currency="EUR",
        invoice={"amount": "1000.00"},
        fx={"USD": "0.90"},
        destination={"country": "GB"},
    )
    assert value(rules, small, policy="mini").premium == Decimal("40.50")


def test_a_table_gap_refers_and_reports_null_never_zero() -> None:
    rules = rated()
    # by air to the US: no row (air rows cover europe only)
    result = value(rules, shipment(mode="air"), policy="mini")
    assert result.decision == "refer"
    (reason,) = result.reasons
    assert reason.rule == "tables.base_rate"
    assert "mode = air, route = north_america" in reason.reason
    assert result.premium is None and result.figures["rate"] is None
    assert result.total_insured_value == Decimal("1100.00")  # the TIV does not depend on the rate
    table_line = line_of(RATED, "base_rate:")
    assert reason.source == f"policies/mini/1.0.0.yaml:{table_line}"


def test_a_table_gap_can_be_an_error() -> None:
    rules = load_rules(files=repo(RATED.replace("on_gap: refer", "on_gap: error")))
    with pytest.raises(EvaluationError, match="table `base_rate` has no row for mode = air"):
        value(rules, shipment(mode="air"), policy="mini")


def test_first_match_takes_the_first_row() -> None:
    rules = load_rules(files=repo(RATED.replace("match: most_specific", "match: first")))
    result = value(rules, shipment(invoice={"amount": "100000.00"}), policy="mini")
    assert Decimal(result.figures["rate"]) == Decimal("0.0030")  # the "*" row comes first


def test_table_key_must_be_known() -> None:
    moved = RATED.replace(
        '  route: region(shipment.destination.country)\n  rate: lookup("base_rate")',
        '  rate: lookup("base_rate")\n  route: region(shipment.destination.country)',
    )
    with pytest.raises(
        RulesError, match="looks up column `route` by `route`, which is not known at this point"
    ):
        load_rules(files=repo(moved))


def test_claims_total_partial_average_deductible() -> None:
    rules = rated()
    facts = shipment(invoice={"amount": "100000.00"}, sum_insured="88000.00")
    # TIV 110,000.00; declared sum insured 88,000.00, so average = 88,000 / 110,000 = 0.8
    # deductible = max(250, 110,000 × 0.005) = 550.00
    total = claim(rules, facts, {"kind": "total"}, policy="mini")
    # total: 88,000 × 1 = 88,000; × 0.8 = 70,400; − 550 = 69,850.00
    assert total.indemnity == Decimal("69850.00")
    assert total.components == {
        "gross_loss": Decimal("88000.00"),
        "after_average": Decimal("70400.00"),
    }
    part = claim(rules, facts, {"kind": "partial", "damage_percent": "25"}, policy="mini")
    # 88,000 × 0.25 = 22,000; × 0.8 = 17,600; − 550 = 17,050.00
    assert part.indemnity == Decimal("17050.00")
    values = claim(
        rules,
        facts,
        {"kind": "partial", "gross_sound_value": "12000", "gross_damaged_value": "9000"},
        policy="mini",
    )
    # s.71: (12,000 − 9,000) / 12,000 = 0.25, the same as 25%: 17,050.00
    assert values.indemnity == Decimal("17050.00")
    claim_steps = [s.name for s in values.trace]
    assert claim_steps == ["damage", "gross_loss", "after_average", "indemnity"]
    assert values.trace[0].source == f"policies/mini/1.0.0.yaml:{line_of(RATED, 'damage: >-')}"
    tiny = claim(rules, facts, {"kind": "partial", "damage_percent": "0.5"}, policy="mini")
    # 88,000 × 0.005 × 0.8 = 352 − 550 < 0 -> 0
    assert tiny.indemnity == Decimal("0.00")


def test_a_bad_loss_is_a_facts_error_naming_the_field() -> None:
    with pytest.raises(FactsError) as info:
        claim(rated(), shipment(), {"kind": "partial"}, policy="mini")
    assert str(info.value.problems[0].location).startswith("loss")


BASE = mini(
    rules="""\
    - id: big
      when: tiv > 1000000
      decide: refer
      reason: Above the limit
    """
)
CHILD = """\
kind: policy
schema_version: 1
id: child
version: 1.0.0
status: published
effective_from: 2021-01-01
title: Child
description: Extends mini.
provenance: {author: a, approver: b, approved_on: 2021-01-01, changelog: c}
extends: mini@^1
parameters:
  margin_rate: 0.15
formulas:
  margin: (invoice + freight) * margin_rate + 1
rules:
  - id: art
    for: goods
    when: goods.category == "fine_art"
    decide: refer
    reason: Art
"""


def test_extends_overrides_and_adds_and_records_every_file() -> None:
    rules = load_rules(files=repo(BASE, CHILD))
    facts = shipment(
        invoice={"amount": "2000000.00"},
        goods=[{"description": "Painting", "category": "fine_art"}],
    )
    result = value(rules, facts, policy="child")
    # margin = 2,000,000 × 0.15 + 1 = 300,001; TIV = 2,300,001.00
    assert result.total_insured_value == Decimal("2300001.00")
    assert [r.rule for r in result.reasons] == ["big", "art"]  # inherited, then added
    assert [(f.id, f.source) for f in result.policy.files] == [
        ("mini", "policies/mini/1.0.0.yaml"),
        ("child", "policies/child/1.0.0.yaml"),
    ]
    steps = {s.name: s.source for s in result.trace if s.kind == "formula"}
    assert steps["margin"].startswith("policies/child/1.0.0.yaml:")  # overridden here
    assert steps["tiv"].startswith("policies/mini/1.0.0.yaml:")  # inherited from there


def test_extends_missing_base_and_cycle_are_errors() -> None:
    with pytest.raises(RulesError, match=r"no published version of `mini` matches \^2"):
        load_rules(files=repo(BASE, CHILD.replace("mini@^1", "mini@^2")))
    looped = BASE.replace("title: Mini", "title: Mini\nextends: child@^1")
    with pytest.raises(RulesError, match="extends goes round in a cycle"):
        load_rules(files=repo(looped, CHILD))


def test_reject_charge_names_the_charge() -> None:
    rules = load_rules(
        files=repo(
            mini(
                rules="""\
        - id: cif-insurance
          for: charge
          when: charge.type == "origin_charges" and "insurance" in shipment.invoice_includes
          reject_charge: true
          reason: A CIF price already includes the insurance
        """
            )
        )
    )
    facts = shipment(
        incoterm="CIF",
        charges=[
            {"type": "ocean_freight", "amount": "1"},
            {"type": "origin_charges", "amount": "1"},
        ],
    )
    with pytest.raises(FactsError) as info:
        value(rules, facts, policy="mini")
    assert str(info.value.problems[0].location) == "charges[1]"
    assert "already includes the insurance" in info.value.problems[0].message
    facts["incoterm"] = "FOB"
    # 1,002 × 1.1 = 1,102.20
    assert value(rules, facts, policy="mini").total_insured_value == Decimal("1102.20")


def test_overlaps_in_a_condition() -> None:
    rules = load_rules(
        files=repo(
            mini(
                rules="""\
        - id: transit
          when: overlaps(shipment.transit_countries, ["IR", "KP"])
          decide: decline
          reason: Sanctioned transit
        """
            )
        )
    )
    assert (
        value(rules, shipment(transit_countries=["SG", "IR"]), policy="mini").decision == "decline"
    )
    assert value(rules, shipment(transit_countries=["SG"]), policy="mini").decision == "accept"
    assert value(rules, shipment(), policy="mini").decision == "accept"


sys.path.insert(0, str(ROOT / "examples/functions"))
from tiv_example_functions import FUNCTIONS, chargeable_weight_kg  # noqa: E402

WEIGHED = mini(
    replace={
        "  tiv: round(invoice + freight + margin + duties)": (
            "  weight: chargeable_weight_kg(2500, 18000000, 6000)\n"
            "  tiv: round(invoice + freight + margin + duties)"
        ),
        "  components: [invoice, freight, margin, duties]": (
            "  components: [invoice, freight, margin, duties]\n  figures: [weight]"
        ),
    }
)


def test_custom_function_passed_in_and_recorded() -> None:
    rules = load_rules(files=repo(WEIGHED), functions=FUNCTIONS, entry_points=False)
    result = value(rules, shipment(), policy="mini")
    # volumetric 18,000,000 cm³ / 6,000 = 3,000 kg > 2,500 kg actual
    assert result.figures["weight"] == Decimal("3000.00")
    assert [(f.name, f.version) for f in result.policy.functions] == [
        ("chargeable_weight_kg", "1.0.0")
    ]


def test_unregistered_function_fails_validation_naming_it() -> None:
    with pytest.raises(RulesError, match="unknown function `chargeable_weight_kg`"):
        load_rules(files=repo(WEIGHED), entry_points=False)


def test_custom_function_found_through_its_entry_point(tmp_path: Path, monkeypatch) -> None:
    # A real installed distribution: metadata and entry points on sys.path.
    dist = tmp_path / "tiv_example_functions-1.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tiv-example-functions\nVersion: 1.0.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[tiv.functions]\ncargo = tiv_example_functions:FUNCTIONS\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rules = load_rules(files=repo(WEIGHED))
    assert value(rules, shipment(), policy="mini").figures["weight"] == Decimal("3000.00")


def test_custom_function_declares_types_and_must_return_them() -> None:
    with pytest.raises(RulesError, match=r"chargeable_weight_kg\(\): argument 1 must be a number"):
        load_rules(
            files=repo(WEIGHED.replace("(2500,", '("heavy",')),
            functions=FUNCTIONS,
            entry_points=False,
        )

    @custom_function("leaky", "0.1", args=["number"], returns="number")
    def leaky(x: Decimal) -> float:
        return float(x)

    leaking = mini(replace={"  tiv: round(": "  junk: leaky(1)\n  tiv: round("})
    rules = load_rules(files=repo(leaking), functions=[leaky], entry_points=False)
    with pytest.raises(EvaluationError, match="returned float, not the declared number"):
        value(rules, shipment(), policy="mini")
    assert chargeable_weight_kg.version == "1.0.0"
