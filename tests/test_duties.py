"""Duty estimates from country rules: every figure computed by hand in the comments."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine import EvaluationError, RulesError, load_rules, value
from tests.conftest import ROOT, mini, repo, shipment

US = (ROOT / "rules/countries/US/1.0.0.yaml").read_text()

# A pack that estimates duties the way standard does, and proceeds without them (with a
# flag) where the destination has no rules.
ESTIMATING = mini(
    replace={
        "  duties: declared_duties.total if exists(declared_duties.total) else 0": (
            "  duties: >-\n"
            "    declared_duties.total if exists(declared_duties.total)\n"
            "    else (estimate_duties(invoice, charges.main_carriage)\n"
            "          if duty_rules.available else 0)"
        )
    },
    rules="""\
    - id: no-duty-rules
      when: not duty_rules.available and not exists(declared_duties.total)
      flag: duties_unknown
      reason: No duty rules for the destination; duties left out
    """,
)

HEAD = """\
kind: country
schema_version: 1
version: 1.0.0
status: draft
effective_from: 2020-01-01
title: test
description: test
"""

# A CIF country with VAT on the duty-inclusive value and a fee with limits (GBP).
GB = (
    HEAD
    + """\
id: GB
currency: GBP
valuation_basis: {basis: CIF, insurance_rate: 0.01, source: test source}
duty:
  default_rate: 0.05
  default_source: test default
  rates:
    - {hs: "61", rate: 0.12, source: chapter}
    - {hs: "6109", rate: 0.08, source: heading}
    - {hs: "610910", rate: 0.02, source: subheading}
taxes:
  - {id: vat, name: VAT, rate: 0.20, base: customs_value + duty, source: vat source}
fees:
  - {id: handling, name: Handling, rate: 0.01, minimum: 5, maximum: 20, source: fee source}
de_minimis:
  - {id: low_value, applies_to: duty, threshold: 135, currency: GBP, source: dm source}
"""
)

EU = (
    HEAD
    + """\
id: EU
currency: EUR
valuation_basis: {basis: CIF, insurance_rate: 0.005, source: union basis}
duty:
  default_rate: 0.04
  default_source: union default
"""
)

DE = (
    HEAD
    + """\
id: DE
currency: EUR
customs_union: EU
taxes:
  - {id: vat, name: Einfuhrumsatzsteuer, rate: 0.19, base: customs_value + duty, source: UStG}
"""
)


def rules_with(*countries: tuple[str, str]):
    extra = {f"rules/countries/{cid}/1.0.0.yaml": text for cid, text in countries}
    return load_rules(files=repo(ESTIMATING, extra=extra))


def val(rules, **facts):
    return value(rules, shipment(**facts), policy="mini", allow_draft=True)


def lines_of(result) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = {}
    for line in result.duty_estimate.lines:
        sums[line.id] = sums.get(line.id, Decimal(0)) + Decimal(line.amount)
    return sums


def test_cif_basis_vat_on_duty_inclusive_value_and_longest_prefix() -> None:
    rules = rules_with(("GB", GB.replace("status: draft", "status: draft")))
    # draft country rules are not used: only published ones value
    result = val(
        rules,
        currency="GBP",
        destination={"country": "GB"},
        invoice={"amount": "1000.00"},
        duties=None,
        goods=[{"description": "T-shirts", "hs_code": "61091000"}],
        charges=[{"type": "ocean_freight", "amount": "100.00"}],
    )
    assert result.duties_basis == "none"
    assert [f.name for f in result.flags] == ["duties_unknown"]

    rules = rules_with(
        (
            "GB",
            GB.replace(
                "status: draft",
                "status: published\nprovenance: "
                "{author: a, approver: b, approved_on: 2020-01-01, "
                "changelog: c}",
            ),
        )
    )
    result = val(
        rules,
        currency="GBP",
        destination={"country": "GB"},
        invoice={"amount": "1000.00"},
        duties=None,
        goods=[{"description": "T-shirts", "hs_code": "61091000"}],
        charges=[{"type": "ocean_freight", "amount": "100.00"}],
    )
    estimate = result.duty_estimate
    # insurance = (1,000 + 100) × 0.01 = 11.00; customs value (CIF) = 1,000 + 100 + 11 = 1,111.00
    assert Decimal(estimate.customs_value) == Decimal("1111.00")
    assert estimate.basis == "CIF"
    # longest prefix 610910 (2%) wins over 6109 (8%) and 61 (12%): duty = 1,111 × 0.02 = 22.22
    # handling = 1,111 × 0.01 = 11.11 (between 5 and 20)
    # VAT = (1,111 + 22.22) × 0.20 = 226.644; total = 22.22 + 11.11 + 226.644 = 259.974
    assert lines_of(result) == {
        "duty": Decimal("22.22"),
        "handling": Decimal("11.11"),
        "vat": Decimal("226.644"),
    }
    assert Decimal(estimate.total) == Decimal("259.974")
    assert result.duties_basis == "estimated"
    # TIV = (1,000 + 100) × 1.10 + 259.974 = 1,469.974 -> 1,469.97
    assert result.total_insured_value == Decimal("1469.97")
    duty_line = next(line for line in estimate.lines if line.id == "duty")
    assert duty_line.source.startswith("rules/countries/GB/1.0.0.yaml:")
    assert duty_line.citation == "subheading"


PUBLISHED = (
    "status: draft",
    "status: published\nprovenance: {author: a, approver: b, "
    "approved_on: 2020-01-01, changelog: c}",
)


def gb_rules():
    return rules_with(("GB", GB.replace(*PUBLISHED)))


def test_fee_minimum_and_maximum_and_default_rate() -> None:
    rules = gb_rules()
    small = val(
        rules,
        currency="GBP",
        destination={"country": "GB"},
        invoice={"amount": "200.00"},
        duties=None,
        goods=[{"description": "Bolts", "hs_code": "7318"}],
    )
    # customs value = 200 × 1.01 = 202.00 > 135: no relief; default rate: 202 × 0.05 = 10.10
    # handling 202 × 0.01 = 2.02 < 5 -> 5 (minimum)
    assert lines_of(small)["handling"] == Decimal("5")
    assert lines_of(small)["duty"] == Decimal("10.10")
    large = val(
        rules,
        currency="GBP",
        destination={"country": "GB"},
        invoice={"amount": "5000.00"},
        duties=None,
        goods=[{"description": "Bolts"}],
    )
    # handling = 5,050 × 0.01 = 50.50 > 20 -> 20 (maximum)
    assert lines_of(large)["handling"] == Decimal("20")
    # no hs_code: the default rate, and a flag naming the goods line
    flag = next(f for f in large.flags if f.name == "hs_code_missing")
    assert flag.subjects == ["goods[0]"]


def test_de_minimis_at_the_threshold_in_another_currency() -> None:
    rules = gb_rules()
    # valued in USD; 1 GBP = 1.25 USD, so £135 = $168.75. Invoice $167.08: customs value
    # = 167.08 × 1.01 = 168.7508 > 168.75: no relief (just misses)
    over = val(
        rules,
        currency="USD",
        destination={"country": "GB"},
        invoice={"amount": "167.08"},
        duties=None,
        fx={"GBP": "1.25"},
        goods=[{"description": "Shirt", "hs_code": "620520"}],
    )
    assert over.duty_estimate.de_minimis_applied == []
    # invoice $167.07: 168.7407 ≤ 168.75: duty relieved, VAT still due
    under = val(
        rules,
        currency="USD",
        destination={"country": "GB"},
        invoice={"amount": "167.07"},
        duties=None,
        fx={"GBP": "1.25"},
        goods=[{"description": "Shirt", "hs_code": "620520"}],
    )
    assert under.duty_estimate.de_minimis_applied == ["low_value"]
    assert lines_of(under)["duty"] == 0
    # VAT = 168.7407 × 0.20 = 33.74814
    assert lines_of(under)["vat"] == Decimal("33.74814")


def test_missing_fx_for_a_threshold_currency_is_an_error() -> None:
    with pytest.raises(EvaluationError) as info:
        val(
            gb_rules(),
            currency="USD",
            destination={"country": "GB"},
            invoice={"amount": "100.00"},
            duties=None,
        )
    problem = info.value.problems[0]
    assert problem.code == "fx.missing" and "add fx.GBP" in problem.message
    assert problem.location.file == "rules/countries/GB/1.0.0.yaml"


def test_missing_country_is_an_error_unless_the_pack_proceeds() -> None:
    standard = load_rules(ROOT)
    facts = shipment(destination={"country": "AQ"})
    del facts["duties"]
    with pytest.raises(EvaluationError) as info:
        value(standard, facts, policy="standard")
    assert info.value.problems[0].code == "duties.no_country_rules"
    assert "AQ" in info.value.problems[0].message
    result = val(gb_rules(), destination={"country": "AQ"}, duties=None)
    assert result.duties_basis == "none" and [f.name for f in result.flags] == ["duties_unknown"]


def test_customs_union_member_takes_duty_from_the_union() -> None:
    rules = rules_with(("EU", EU.replace(*PUBLISHED)), ("DE", DE.replace(*PUBLISHED)))
    result = val(
        rules,
        currency="EUR",
        destination={"country": "DE"},
        invoice={"amount": "10000.00"},
        duties=None,
        charges=[{"type": "air_freight", "amount": "400.00"}],
    )
    # insurance = (10,000 + 400) × 0.005 = 52.00; CIF = 10,452.00; duty 4% = 418.08
    # VAT 19% of (10,452 + 418.08) = 2,065.3152; total = 2,483.3952
    assert Decimal(result.duty_estimate.total) == Decimal("2483.3952")
    assert [r.id for r in result.duty_estimate.rules] == ["DE", "EU"]


def test_union_without_rules_is_a_validation_error() -> None:
    with pytest.raises(RulesError, match="customs union EU has no rules"):
        rules_with(("DE", DE.replace(*PUBLISHED)))


def us_toys(shipped, day: str, origin: str):
    """$500 of toys by courier into the US, duties undeclared: the estimate."""
    facts = shipment(
        date=day,
        mode="courier",
        origin={"country": origin},
        invoice={"amount": "500.00"},
        goods=[{"description": "Toys", "hs_code": "950300"}],
    )
    del facts["duties"]
    return value(shipped, facts, policy="standard").duty_estimate


def test_us_de_minimis_ends_on_2025_08_29(shipped) -> None:
    # 2025-08-28: 500.00 ≤ 800: relief, MPF waived; 2025-08-29: MPF minimum 32.71 (FY2025)
    before, after = us_toys(shipped, "2025-08-28", "GB"), us_toys(shipped, "2025-08-29", "GB")
    assert before.de_minimis_applied == ["section_321"]
    assert Decimal(before.total) == 0
    assert after.de_minimis_applied == []
    assert Decimal(after.total) == Decimal("32.71")


def test_us_de_minimis_ended_for_china_on_2025_05_02(shipped) -> None:
    assert us_toys(shipped, "2025-05-01", "CN").de_minimis_applied == ["section_321_cn_hk"]
    # from 2025-05-02 the CN/HK entry has ended, and the general one excludes CN and HK:
    # no relief; MPF 500 × 0.003464 = 1.732 < 32.71 -> 32.71 (FY2025)
    later = us_toys(shipped, "2025-06-01", "CN")
    assert later.de_minimis_applied == []
    assert Decimal(later.total) == Decimal("32.71")


def test_us_mpf_fiscal_years_switch_on_1_october(shipped) -> None:
    def mpf(day: str) -> Decimal:
        facts = shipment(
            date=day,
            mode="air",
            origin={"country": "DE"},
            invoice={"amount": "1000000.00"},
            goods=[{"description": "Machine", "hs_code": "847989"}],
        )
        del facts["duties"]
        result = value(shipped, facts, policy="standard")
        return lines_of(result)["mpf"]

    # 1,000,000 × 0.003464 = 3,464 > the maximum either side of 1 October 2025
    assert mpf("2025-09-30") == Decimal("634.62")  # FY2025
    assert mpf("2025-10-01") == Decimal("651.50")  # FY2026


def test_declared_duties_win_and_an_empty_list_means_none(shipped) -> None:
    facts = shipment(duties=[{"type": "import_duty", "amount": "12.00"}])
    assert value(shipped, facts, policy="standard").duties_basis == "declared"
    result = value(shipped, shipment(duties=[]), policy="standard")
    assert result.duties_basis == "declared" and result.components["duties"] == Decimal("0.00")


def test_estimate_lines_are_traced_to_rule_lines(shipped) -> None:
    facts = shipment(
        date="2025-11-01",
        origin={"country": "CN"},
        invoice={"amount": "10000"},
        goods=[{"description": "Tables", "hs_code": "940360", "value": "10000"}],
    )
    del facts["duties"]
    result = value(shipped, facts, policy="standard")
    text = US.splitlines()
    steps = [s for s in result.trace if s.kind == "duty" and s.name.startswith("section_301")]
    assert len(steps) == 1
    line = int(steps[0].source.rsplit(":", 1)[1])
    assert "section_301_list_3" in text[line - 1]
    assert Decimal(steps[0].value) == Decimal("2500.00")  # 10,000 × 0.25


# Issue 11 item 7: fees and taxes round as the country file says the authority states them.
ROUNDED = (
    HEAD.replace("status: draft", "status: published")
    + """\
provenance: {author: a, approver: b, approved_on: 2020-01-01, changelog: c}
id: GB
currency: GBP
valuation_basis: {basis: FOB, source: test source}
duty: {default_rate: 0, default_source: test default}
fees:
  - {id: handling, name: Handling, rate: 0.3464%, minimum: 5, base: customs_value,
     rounding: {places: 2}, source: fee source}
  - {id: stamp, name: Stamp, rate: 0.125%, rounding: {places: 0, mode: down}, source: stamp source}
taxes:
  - {id: vat, name: VAT, rate: 20%, base: customs_value + fees, rounding: {places: 2,
     mode: half_even}, source: vat source}
"""
)


def test_fees_and_taxes_round_as_the_country_file_states() -> None:
    rules = rules_with(("GB", ROUNDED))
    result = val(
        rules,
        currency="GBP",
        destination={"country": "GB"},
        invoice={"amount": "12345.67"},
        duties=None,
        goods=[{"description": "Bolts"}],
    )
    lines = lines_of(result)
    # handling 12,345.67 × 0.3464% = 12,345.67 × 0.003464 = 42.76540088 -> 42.77 (half up)
    assert lines["handling"] == Decimal("42.77")
    # stamp 12,345.67 × 0.00125 = 15.4320875 -> 15 (whole pounds, down)
    assert lines["stamp"] == Decimal("15")
    # vat (12,345.67 + 42.77 + 15) × 0.20 = 12,403.44 × 0.20 = 2,480.688 -> 2,480.69
    assert lines["vat"] == Decimal("2480.69")
    # total = 0 + 42.77 + 15 + 2,480.69 = 2,538.46
    assert Decimal(result.duty_estimate.total) == Decimal("2538.46")
    handling = next(line for line in result.duty_estimate.lines if line.id == "handling")
    assert str(handling.rate) == "0.003464"  # the percent literal, exactly
    assert "rounded to 0.01 GBP" in handling.note


def test_rounding_happens_in_the_country_currency() -> None:
    rules = rules_with(("GB", ROUNDED))
    result = val(
        rules,
        currency="USD",
        fx={"GBP": "1.25"},
        destination={"country": "GB"},
        invoice={"amount": "10000.00"},
        duties=None,
        goods=[{"description": "Bolts"}],
    )
    lines = lines_of(result)
    # handling 10,000.00 × 0.003464 = 34.64 USD = 27.712 GBP -> 27.71 GBP = 34.6375 USD
    assert lines["handling"] == Decimal("34.6375")
    # stamp 10,000.00 × 0.00125 = 12.50 USD = 10.00 GBP -> 10 GBP = 12.50 USD
    assert lines["stamp"] == Decimal("12.50")
    # vat (10,000 + 34.6375 + 12.50) × 0.20 = 2,009.4275 USD = 1,607.542 GBP -> 1,607.54 GBP
    #   = 2,009.425 USD
    assert lines["vat"] == Decimal("2009.425")


def test_rounding_places_are_bounded() -> None:
    bad = ROUNDED.replace("rounding: {places: 2}", "rounding: {places: 7}")
    with pytest.raises(RulesError) as caught:
        rules_with(("GB", bad))
    assert any("rounding.places" in p.location.path for p in caught.value.problems)


def test_us_fees_to_the_cent_from_us_1_1_0(shipped) -> None:
    def us(day: str) -> dict[str, Decimal]:
        facts = shipment(
            date=day,
            mode="ocean",
            origin={"country": "CN"},
            invoice={"amount": "12345.67"},
            goods=[{"description": "Laptops", "hs_code": "847130"}],
        )
        del facts["duties"]
        return lines_of(value(shipped, facts, policy="standard"))

    # the customs value (FOB basis) is the invoice, 12,345.67:
    # US 1.0.0 (to 2026-12-31): MPF 12,345.67 × 0.003464 = 42.76540088, HMF × 0.00125
    # = 15.4320875, unrounded
    assert us("2026-12-31") == {
        "duty": Decimal("0"),
        "mpf": Decimal("42.76540088"),
        "hmf": Decimal("15.4320875"),
    }
    # US 1.1.0 (from 2027-01-01): to the cent, 42.77 and 15.43
    assert us("2027-01-01") == {
        "duty": Decimal("0"),
        "mpf": Decimal("42.77"),
        "hmf": Decimal("15.43"),
    }
