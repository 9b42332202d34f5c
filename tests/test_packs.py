"""The shipped insurer packs: version selection by date, decisions, rating gaps, claims.

Every figure is computed by hand in the comment beside it; the packs' own examples
(`tiv test`) check more cases, these check what examples cannot: which version a date
selects, the whole list of reasons with their decisions, and the library's claim().
"""

from __future__ import annotations

import datetime
import itertools
from decimal import Decimal
from typing import Any

import pytest

from engine import EvaluationError, FactsError, RuleSet, SelectionError, claim, value
from engine.result import Valuation
from tests.conftest import shipment


def _forwarder_shipment(date: str) -> dict[str, Any]:
    return shipment(
        id=f"FAR-{date}",
        date=date,
        incoterm="FOB",
        invoice={"amount": "100000.00"},
        charges=[
            {"type": "ocean_freight", "amount": "4000.00"},
            {"type": "origin_charges", "amount": "500.00"},
            {"type": "destination_charges", "amount": "300.00"},
        ],
        duties=[{"type": "import_duty", "amount": "2500.00"}],
    )


def test_forwarder_on_the_last_day_of_2021_uses_the_older_formula(shipped: RuleSet) -> None:
    result = value(shipped, _forwarder_shipment("2021-12-31"), policy="forwarder-all-risks")
    assert result.policy.version == "1.0.0"
    # (100,000.00 + 4,800.00 + 2,500.00) × 1.10 = 107,300.00 × 1.10 = 118,030.00
    assert Decimal(result.total_insured_value) == Decimal("118030.00")
    assert Decimal(result.components["margin"]) == Decimal("10730.00")
    # 118,030.00 × 0.0030 = 354.09
    assert Decimal(result.premium or "") == Decimal("354.09")


def test_forwarder_from_2022_uses_duties_after_the_margin(shipped: RuleSet) -> None:
    result = value(shipped, _forwarder_shipment("2022-01-01"), policy="forwarder-all-risks")
    assert result.policy.version == "2.0.0"
    # (100,000.00 + 4,800.00) × 1.10 + 2,500.00 = 115,280.00 + 2,500.00 = 117,780.00
    assert Decimal(result.total_insured_value) == Decimal("117780.00")
    assert Decimal(result.components["margin"]) == Decimal("10480.00")
    # 117,780.00 × 0.0025 = 294.45
    assert Decimal(result.premium or "") == Decimal("294.45")


def test_as_of_picks_the_version_whatever_the_shipment_date(shipped: RuleSet) -> None:
    result = value(
        shipped,
        _forwarder_shipment("2022-01-01"),
        policy="forwarder-all-risks",
        as_of=datetime.date(2021, 12, 31),
    )
    assert result.policy.version == "1.0.0"
    assert Decimal(result.total_insured_value) == Decimal("118030.00")


def test_forwarder_has_no_version_before_2015(shipped: RuleSet) -> None:
    with pytest.raises(SelectionError):
        value(shipped, _forwarder_shipment("2014-12-31"), policy="forwarder-all-risks")


def test_forwarder_minimum_premium_needs_a_usd_rate_in_eur(shipped: RuleSet) -> None:
    facts = _forwarder_shipment("2024-02-12") | {
        "currency": "EUR",
        "mode": "road",
        "origin": {"country": "NL"},
        "destination": {"country": "FR"},
        "invoice": {"amount": "12000.00"},
        "charges": [{"type": "road_freight", "amount": "500.00"}],
        "duties": [],
    }
    with pytest.raises(EvaluationError) as raised:
        value(shipped, facts, policy="forwarder-all-risks")
    assert [p.code for p in raised.value.problems] == ["fx.missing"]
    # With fx.USD = 0.9215: TIV = 12,500.00 × 1.10 = 13,750.00 EUR; 13,750.00 × 0.0025 =
    # 34.375 is below 45 × 0.9215 = 41.4675, so the premium is 41.47 EUR.
    result = value(shipped, facts | {"fx": {"USD": "0.9215"}}, policy="forwarder-all-risks")
    assert Decimal(result.premium or "") == Decimal("41.47")


def test_cif_premium_inclusive_vector(shipped: RuleSet) -> None:
    facts = _forwarder_shipment("2024-05-06") | {
        "invoice": {"amount": "17050.00"},
        "charges": [{"type": "ocean_freight", "amount": "2500.00"}],
        "duties": [],
    }
    result = value(shipped, facts, policy="cif-premium-inclusive")
    # A = 19,550.00 × 1.10 / (1 − 0.0055 × 1.10) = 21,505.00 / 0.99395 = 21,635.8971... -> 21,635.90
    assert result.total_insured_value == Decimal("21635.90")
    # P = 21,635.90 × 0.0055 = 118.99745 -> 119.00
    assert result.premium == Decimal("119.00")


def test_acme_extends_standard_and_records_both_files(shipped: RuleSet) -> None:
    facts = _forwarder_shipment("2024-09-09")
    result = value(shipped, facts, policy="acme-marine")
    # (100,000.00 + 4,800.00) × 1.15 + 2,500.00 = 120,520.00 + 2,500.00 = 123,020.00
    assert Decimal(result.total_insured_value) == Decimal("123020.00")
    assert [(f.id, f.version) for f in result.policy.files] == [
        ("standard", "1.0.0"),
        ("acme-marine", "1.0.0"),
    ]
    standard = value(shipped, facts, policy="standard")
    # the same shipment under standard: 104,800.00 × 1.10 + 2,500.00 = 117,780.00
    assert Decimal(standard.total_insured_value) == Decimal("117780.00")


# blue-harbour --------------------------------------------------------------------------


def _blue(**overrides: Any) -> dict[str, Any]:
    """Electronics, FOB Shanghai-Hamburg: accepted with no flag unless overridden."""
    facts: dict[str, Any] = {
        "id": "BH-T",
        "date": "2025-05-02",
        "incoterm": "FOB",
        "destination": {"country": "DE"},
        "invoice": {"amount": "200000.00"},
        "goods": [{"description": "Laptops", "category": "electronics", "value": "200000.00"}],
        "charges": [
            {"type": "ocean_freight", "amount": "6000.00"},
            {"type": "origin_charges", "amount": "800.00"},
            {"type": "destination_charges", "amount": "700.00"},
        ],
        "duties": [{"type": "import_duty", "amount": "4000.00"}],
        **overrides,
    }
    return shipment(**facts)


def _reasons(result: Valuation) -> dict[str, str]:
    return {r.rule: r.decision for r in result.reasons}


def test_blue_harbour_plain_shipment_is_accepted_and_rated(shipped: RuleSet) -> None:
    result = value(shipped, _blue(), policy="blue-harbour")
    # TIV = 200,000.00 + 7,500.00 + 20,750.00 + 4,000.00 = 232,250.00
    assert result.total_insured_value == Decimal("232250.00")
    # class 2, ocean, asia -> europe: the row without "*" (0.0035) beats [2,*,*,*] (0.0030)
    assert Decimal(result.figures["rate"] or "") == Decimal("0.0035")
    # 232,250.00 × 0.0035 = 812.875 -> 812.88; deductible 232,250.00 × 0.005 = 1,161.25
    assert result.premium == Decimal("812.88")
    assert result.deductible == Decimal("1161.25")
    assert (result.decision, result.reasons, result.flags) == ("accept", [], [])


def test_blue_harbour_every_reason_is_listed_and_decline_wins(shipped: RuleSet) -> None:
    facts = _blue(
        date="2025-08-04",
        transit_countries=["SG", "IR"],  # sanctioned transit: decline
        goods=[
            {"description": "Laptops", "category": "electronics", "value": "200000.00"},
            {"description": "Gold bars", "category": "precious_metals", "value": "10000.00"},
        ],  # precious metals: refer
        sum_insured="100000.00",  # under-insured: flag
    )
    del facts["duties"]  # no duty lines: refer
    result = value(shipped, facts, policy="blue-harbour")
    assert result.decision == "decline"
    assert _reasons(result) == {
        "sanctioned-transit": "decline",
        "professional-valuation": "refer",
        "duties-not-declared": "refer",
    }
    valuation_reason = next(r for r in result.reasons if r.rule == "professional-valuation")
    assert valuation_reason.subjects == ["goods[1]"]
    # TIV = 232,250.00 − 4,000.00 duties = 228,250.00; 100,000.00 < 228,250.00
    assert result.total_insured_value == Decimal("228250.00")
    assert [f.name for f in result.flags] == ["under_insured"]
    # 100,000.00 ÷ 228,250.00 = 0.438116... -> 0.4381
    assert Decimal(result.figures["average_proportion"] or "") == Decimal("0.4381")


SANCTIONED = {"transit_countries": ["SY"]}
FINE_ART = {
    "goods": [{"description": "Painting", "category": "fine_art", "value": "200000.00"}],
    "mode": "air",  # class 4 is rated by air only; by ocean the base-rate gap would refer too
}
# TIV = (2,000,000.00 + 7,500.00) × 1.10 + 4,000.00 = 2,212,250.00 > 2,000,000.00
ABOVE_LIMIT = {"invoice": {"amount": "2000000.00"}}


@pytest.mark.parametrize(
    ("sanctioned", "fine_art", "above_limit"), list(itertools.product([False, True], repeat=3))
)
def test_blue_harbour_strongest_decision_wins(
    shipped: RuleSet, sanctioned: bool, fine_art: bool, above_limit: bool
) -> None:
    facts = _blue()
    for wanted, extra in (
        (sanctioned, SANCTIONED),
        (fine_art, FINE_ART),
        (above_limit, ABOVE_LIMIT),
    ):
        if wanted:
            facts.update(extra)
    result = value(shipped, facts, policy="blue-harbour", trace=False)
    expected = {
        rule: decision
        for rule, decision, wanted in (
            ("sanctioned-transit", "decline", sanctioned),
            ("professional-valuation", "refer", fine_art),
            ("above-conveyance-limit", "refer", above_limit),
        )
        if wanted
    }
    assert _reasons(result) == expected
    if above_limit:
        assert result.total_insured_value == Decimal("2212250.00")
    strongest = "decline" if sanctioned else "refer" if fine_art or above_limit else "accept"
    assert result.decision == strongest


def test_blue_harbour_rating_gap_refers_and_leaves_the_premium_open(shipped: RuleSet) -> None:
    facts = _blue(goods=[{"description": "Solvents", "category": "chemicals", "value": "1.00"}])
    result = value(shipped, facts, policy="blue-harbour")
    assert result.decision == "refer"
    [reason] = result.reasons
    assert reason.rule == "tables.commodity_class"
    assert "chemicals" in reason.reason
    assert reason.source.startswith("policies/blue-harbour/1.0.0.yaml:")
    # the TIV needs no rate: 232,250.00 as for electronics; the rate is never taken as zero
    assert result.total_insured_value == Decimal("232250.00")
    assert result.premium is None
    assert result.figures["rate"] is None and result.figures["base_rate"] is None
    assert result.deductible == Decimal("1161.25")


def test_blue_harbour_base_rate_gap_names_the_keys(shipped: RuleSet) -> None:
    facts = _blue(goods=[{"description": "Rings", "category": "jewellery", "value": "1.00"}])
    result = value(shipped, facts, policy="blue-harbour")
    assert _reasons(result) == {"tables.base_rate": "refer", "professional-valuation": "refer"}
    gap = next(r for r in result.reasons if r.rule == "tables.base_rate")
    assert "class = 4" in gap.reason and "mode = ocean" in gap.reason
    assert result.premium is None


def test_blue_harbour_rejects_an_insurance_charge_on_a_cif_invoice(shipped: RuleSet) -> None:
    facts = _blue(
        incoterm="CIF",
        charges=[
            {"type": "ocean_freight", "amount": "6000.00"},
            {"type": "insurance_premium", "amount": "150.00"},
        ],
    )
    with pytest.raises(FactsError) as raised:
        value(shipped, facts, policy="blue-harbour")
    [problem] = raised.value.problems
    assert problem.code == "facts.rejected_charge"
    assert problem.location.path == "charges[1]"
    assert "insurance-in-price" in problem.message


def test_blue_harbour_freight_collect_is_excluded_with_its_reason(shipped: RuleSet) -> None:
    result = value(shipped, _blue(payment_method="collect"), policy="blue-harbour")
    [excluded] = result.excluded_charges
    assert (excluded.type, excluded.rule) == ("ocean_freight", "freight-collect")
    assert "s.16(2)" in excluded.reason
    # freight = 800.00 + 700.00 = 1,500.00; TIV = 201,500.00 × 1.10 + 4,000.00 = 225,650.00
    assert result.total_insured_value == Decimal("225650.00")


def test_blue_harbour_claim_with_average_and_deductible(shipped: RuleSet) -> None:
    facts = _blue(
        incoterm="CFR",
        invoice={"amount": "150000.00"},
        goods=[{"description": "Press", "category": "machinery", "value": "150000.00"}],
        charges=[
            {"type": "ocean_freight", "amount": "5000.00"},
            {"type": "destination_charges", "amount": "600.00"},
        ],
        duties=[{"type": "import_duty", "amount": "3000.00"}],
        sum_insured="150000.00",
    )
    settled = claim(
        shipped, facts, {"kind": "partial", "damage_percent": "20"}, policy="blue-harbour"
    )
    # TIV = 150,000.00 + 600.00 + 15,060.00 + 3,000.00 = 168,660.00 (ocean freight in CFR price)
    assert settled.valuation.total_insured_value == Decimal("168660.00")
    # loss on value = 168,660.00 × 0.20 = 33,732.00
    # average (s.81) = 33,732.00 × 150,000.00 ÷ 168,660.00 = 30,000.00
    # deductible = max(150,000.00 × 0.005, 250) = 750.00; indemnity = 29,250.00
    assert Decimal(settled.components["loss_on_value"]) == Decimal("33732.00")
    assert Decimal(settled.components["covered_loss"]) == Decimal("30000.00")
    assert Decimal(settled.components["deductible_applied"]) == Decimal("750.00")
    assert settled.indemnity == Decimal("29250.00")
    steps = {step.name: step.source for step in settled.trace}
    assert set(steps) >= {"loss_fraction", "loss_on_value", "covered_loss", "indemnity"}
    assert all(source.startswith("policies/blue-harbour/1.0.0.yaml:") for source in steps.values())


def test_blue_harbour_claim_never_pays_below_zero(shipped: RuleSet) -> None:
    # 232,250.00 × 0.4% = 929.00, less than the 1,161.25 deductible: nothing is paid
    settled = claim(
        shipped, _blue(), {"kind": "partial", "damage_percent": "0.4"}, policy="blue-harbour"
    )
    assert settled.indemnity == Decimal("0.00")


def test_a_pack_without_claims_cannot_settle(shipped: RuleSet) -> None:
    with pytest.raises(SelectionError) as raised:
        claim(shipped, _blue(), {"kind": "total"}, policy="acme-marine")
    assert [p.code for p in raised.value.problems] == ["claims.none"]


# Incoterms from 2027 (issue 11): standard 1.1.0, forwarder-all-risks 2.1.0, acme-marine 1.1.0


def _cif_shipment(date: str) -> dict[str, Any]:
    facts = _forwarder_shipment(date)
    facts["incoterm"] = "CIF"
    return facts


def test_a_published_base_version_leaves_acme_1_0_0_on_standard_1_0_0(shipped: RuleSet) -> None:
    # A CIF shipment in 2026, under acme-marine 1.0.0, still on standard 1.0.0: the listed
    # ocean freight counts as before. (100,000 + 4,800) × 1.15 + 2,500 = 123,020.00
    result = value(shipped, _cif_shipment("2026-06-01"), policy="acme-marine")
    assert result.policy.version == "1.0.0"
    assert [(f.id, f.version) for f in result.policy.files] == [
        ("standard", "1.0.0"),
        ("acme-marine", "1.0.0"),
    ]
    assert result.total_insured_value == Decimal("123020.00")
    assert result.excluded_charges == []


@pytest.mark.parametrize(
    ("policy", "tiv"),
    [
        # ocean freight 4,000 excluded (in the CIF price): (100,000 + 500 + 300) × 1.10
        # + 2,500 = 110,880.00 + 2,500 = 113,380.00
        ("standard", "113380.00"),
        ("forwarder-all-risks", "113380.00"),
        # at 15%: 100,800 × 1.15 + 2,500 = 115,920.00 + 2,500 = 118,420.00
        ("acme-marine", "118420.00"),
    ],
)
def test_from_2027_a_cif_price_holds_its_freight(shipped: RuleSet, policy: str, tiv: str) -> None:
    result = value(shipped, _cif_shipment("2027-03-01"), policy=policy)
    assert result.total_insured_value == Decimal(tiv)
    assert [(c.type, c.rule) for c in result.excluded_charges] == [
        ("ocean_freight", "main-carriage-in-price")
    ]
    assert "main carriage in the invoice price" in result.excluded_charges[0].reason
    if policy == "acme-marine":
        assert [(f.id, f.version) for f in result.policy.files] == [
            ("standard", "1.1.0"),
            ("acme-marine", "1.1.0"),
        ]
