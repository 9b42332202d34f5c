"""Money in results: `Decimal` in Python, the same decimal text in JSON as ever.

Valuations and claims hold every amount, rate and percent as a `Decimal`, so they add up;
JSON writes each as plain decimal text (never a JSON number, never an exponent) and reads
only text or a Decimal back. Text output puts the currency on amounts only.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine import claim, value
from engine.evaluating.valuation import money_text
from engine.explaining.dimensions import guess_money_names, money_names
from engine.explaining.render import render_claim_text, render_text
from engine.money import exact
from engine.result import Claim, DutyLine, ExcludedCharge, LossIn, Valuation
from engine.ruleset import RuleSet
from tests.conftest import ROOT, run_cli

SEED = ROOT / "examples/shipments/seed-electronics.yaml"


def _seed_with(tmp_path: Path, extra: str) -> Path:
    """The seed shipment with a line added after `expected_transit_days`."""
    text = SEED.read_text().replace(
        "expected_transit_days: 21\n", f"expected_transit_days: 21\n{extra}\n"
    )
    path = tmp_path / "seed.yaml"
    path.write_text(text)
    return path


# --- Decimal in Python ------------------------------------------------------------------


def test_valuations_add_up_as_decimals(shipped: RuleSet) -> None:
    standard = value(shipped, SEED, policy="standard@1.0.0")
    harbour = value(shipped, SEED, policy="blue-harbour@1.0.0")
    total = Decimal(0)
    for result in (standard, harbour):
        total += result.total_insured_value
    # both 500,000.00 + 9,070.00 + 50,907.00 + 1,732.00 (+ 0.00 insurance) = 561,709.00;
    # 561,709.00 × 2 = 1,123,418.00
    assert total == Decimal("1123418.00")
    assert isinstance(harbour.premium, Decimal) and isinstance(harbour.deductible, Decimal)
    # premium = 561,709.00 × 0.0032 = 1,797.4688 -> 1,797.47; the premium is a Decimal too
    assert harbour.premium + harbour.total_insured_value == Decimal("563506.47")
    assert sum(standard.components.values(), Decimal(0)) == standard.total_insured_value
    assert sum((c.amount for c in standard.excluded_charges), Decimal(0)) == Decimal("1800.00")
    assert harbour.figures["rate"] == Decimal("0.0032")  # a figure, not only an amount


def test_claims_add_up_as_decimals(shipped: RuleSet) -> None:
    settled = claim(shipped, SEED, {"kind": "partial", "damage_percent": "30"},
                    policy="blue-harbour@1.0.0")  # fmt: skip
    # loss_on_value = 561,709.00 × 0.30 = 168,512.70; deductible 561,709.00 × 0.005 = 2,808.55
    # indemnity = 168,512.70 − 2,808.55 = 165,704.15
    assert settled.indemnity == Decimal("165704.15")
    assert settled.indemnity + settled.components["deductible_applied"] == Decimal("168512.70")
    assert settled.loss.damage_percent == Decimal("30")


def test_money_text_keeps_the_places_and_only_adds_or_drops_zeros() -> None:
    with exact():
        nine = money_text(Decimal(9070), 2)
        assert nine == Decimal("9070.00") and nine.as_tuple().exponent == -2
        fifty = money_text(Decimal("50907.0000"), 2)
        assert fifty.as_tuple() == Decimal("50907.00").as_tuple()
        # 99 × 1.1650 = 115.335000: more places than USD has, so not cut, only the zeros go
        assert money_text(Decimal("115.335000"), 2).as_tuple() == Decimal("115.335").as_tuple()
        assert money_text(Decimal(7), 0).as_tuple() == Decimal("7").as_tuple()
        zero = money_text(Decimal("-0.0000"), 2)  # never a negative zero
        assert zero.as_tuple() == Decimal("0.00").as_tuple()


# --- the same JSON text ---------------------------------------------------------------


def test_json_writes_the_text_it_always_wrote(shipped: RuleSet) -> None:
    result = value(shipped, SEED, policy="blue-harbour@1.0.0")
    data = json.loads(result.model_dump_json())
    assert data["total_insured_value"] == "561709.00"
    assert data["components"] == {
        "invoice": "500000.00",
        "freight": "9070.00",
        "insurance_cost": "0.00",
        "margin": "50907.00",
        "duties": "1732.00",
    }
    assert (data["premium"], data["deductible"]) == ("1797.47", "2808.55")
    assert data["figures"]["rate"] == "0.0032" and data["figures"]["average_proportion"] == "1.00"
    assert data["excluded_charges"][0]["amount"] == "1500.00"
    assert result.model_dump(mode="json") == data
    # Python mode keeps Decimals: what a library caller computes with
    assert result.model_dump()["total_insured_value"] == Decimal("561709.00")


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("1E+3"), "1000"),  # str() would write 1E+3
        (Decimal("0E-8"), "0.00000000"),  # str() would write 0E-8
        (Decimal("1.5E-8"), "0.000000015"),
        (Decimal("-0.00"), "0.00"),
        (Decimal("-12.50"), "-12.50"),
    ],
)
def test_json_never_writes_an_exponent_or_a_negative_zero(
    shipped: RuleSet, amount: Decimal, text: str
) -> None:
    result = value(shipped, SEED, policy="standard@1.0.0")
    changed = result.model_copy(update={"total_insured_value": amount})
    assert f'"total_insured_value":"{text}"' in changed.model_dump_json()
    assert changed.model_dump(mode="json")["total_insured_value"] == text


def test_the_results_schema_says_money_is_text() -> None:
    schema = Valuation.model_json_schema()
    tiv = schema["properties"]["total_insured_value"]
    assert tiv["type"] == "string" and "pattern" in tiv
    assert schema["properties"]["components"]["additionalProperties"]["type"] == "string"


# --- read back: text or Decimal, never a number ----------------------------------------


def test_a_float_or_a_json_number_is_refused_where_money_is_read(shipped: RuleSet) -> None:
    data = value(shipped, SEED, policy="standard@1.0.0").model_dump(mode="json")
    assert Valuation.model_validate(data).total_insured_value == Decimal("561709.00")
    for bad in (561709.0, 561709, True, "1E+3", "NaN", "12,50", " "):
        with pytest.raises(ValidationError) as info:
            Valuation.model_validate({**data, "total_insured_value": bad})
        assert info.value.errors()[0]["loc"] == ("total_insured_value",)
    text = json.dumps({**data, "total_insured_value": 561709.00})  # a JSON number
    with pytest.raises(ValidationError):
        Valuation.model_validate_json(text)
    with pytest.raises(ValidationError):
        ExcludedCharge(index=0, type="x", amount=0.1, reason="", rule="", source="")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Valuation.model_validate({**data, "total_insured_value": Decimal("Infinity")})


# What the engine writes: any digits, 0 to 12 places (never a positive exponent).
_AMOUNT = st.builds(
    lambda digits, places: Decimal(digits).scaleb(-places),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.integers(min_value=0, max_value=12),
)


def _exact(a: Decimal | None, b: Decimal | None) -> bool:
    """Same value, same places (a zero's sign aside: JSON writes no negative zero)."""
    if a is None or b is None:
        return a is b
    return (
        a == b
        and a.as_tuple()[1:] == b.as_tuple()[1:]
        and (not a or a.is_signed() == b.is_signed())
    )


@settings(max_examples=80, deadline=None)
@given(
    tiv=_AMOUNT,
    components=st.dictionaries(st.sampled_from(["invoice", "freight", "margin"]), _AMOUNT),
    premium=st.none() | _AMOUNT,
    figure=st.none() | _AMOUNT,
    rate=_AMOUNT,
)
def test_model_json_model_round_trips_exactly(
    shipped: RuleSet,
    tiv: Decimal,
    components: dict[str, Decimal],
    premium: Decimal | None,
    figure: Decimal | None,
    rate: Decimal,
) -> None:
    base = claim(shipped, SEED, {"kind": "partial", "damage_percent": "30"},
                 policy="blue-harbour@1.0.0")  # fmt: skip
    line = DutyLine(id="mpf", kind="fee", name="MPF", subject="shipment", base=tiv, rate=rate,
                    amount=rate, source="x:1", citation="c")  # fmt: skip
    valuation = base.valuation.model_copy(
        update={
            "total_insured_value": tiv,
            "components": components,
            "premium": premium,
            "figures": {"rate": figure, "gap": None},
            "excluded_charges": [
                base.valuation.excluded_charges[0].model_copy(update={"amount": rate})
            ],
        }
    )
    settled = base.model_copy(
        update={
            "valuation": valuation,
            "indemnity": tiv,
            "loss": LossIn(kind="partial", damage_percent=rate),
        }
    )
    text = settled.model_dump_json()
    again = Claim.model_validate_json(text)
    assert again.model_dump_json() == text
    back = again.valuation
    assert _exact(back.total_insured_value, tiv) and _exact(again.indemnity, tiv)
    assert back.components.keys() == components.keys()
    assert all(_exact(back.components[k], v) for k, v in components.items())
    assert _exact(back.premium, premium) and _exact(back.figures["rate"], figure)
    assert back.figures["gap"] is None
    assert _exact(back.excluded_charges[0].amount, rate)
    assert _exact(again.loss.damage_percent, rate)
    line_back = DutyLine.model_validate_json(line.model_dump_json())
    assert _exact(line_back.base, tiv) and _exact(line_back.rate, rate)
    # Every figure is plain decimal text: no exponent, and no JSON number anywhere.
    json.loads(text, parse_float=lambda s: pytest.fail(f"a JSON number {s}"))
    dumped = again.model_dump(mode="json")
    written = [
        dumped["indemnity"],
        dumped["valuation"]["total_insured_value"],
        *dumped["valuation"]["components"].values(),
        dumped["loss"]["damage_percent"],
    ]
    assert all(re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", w) for w in written), written


# --- text output: amounts with the currency, plain numbers without -----------------------


def _line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(f"{name} "))


def test_rates_and_factors_are_shown_without_a_currency(shipped: RuleSet) -> None:
    text = render_text(value(shipped, SEED, policy="blue-harbour@1.0.0"))
    # rates, classes and proportions: plain numbers, as computed
    assert _line(text, "base_rate").split("→ ")[1].startswith("0.0032   policies/")
    assert _line(text, "rate").split("→ ")[1].startswith("0.0032   ")
    assert _line(text, "commodity_class").split("→ ")[1].startswith("2   ")
    assert _line(text, "average_proportion").split("→ ")[1].startswith("1   ")
    assert "long_transit_days = 45]" in _line(text, "long_transit")
    # amounts: the currency, at least its places
    assert _line(text, "premium").split("→ ")[1].startswith("1,797.47 USD   ")
    assert _line(text, "minimum_cover").split("→ ")[1].startswith("550,000.00 USD   ")
    assert _line(text, "conveyance_limit").split("→ ")[1].startswith("2,000,000.00 USD   ")
    assert "Total insured value: 561,709.00 USD" in text
    assert " USD" not in _line(text, "war_strikes_surcharge")


def test_a_duty_rate_and_a_de_minimis_test_carry_no_currency(
    shipped: RuleSet, tmp_path: Path
) -> None:
    # The seed without declared duties, to Germany in EUR: duties are estimated.
    facts = SEED.read_text().split("duties:")[0]
    facts = facts.replace("currency: USD", "currency: EUR").replace(
        "destination: {country: US, port: USLAX}", "destination: {country: DE}"
    )
    path = tmp_path / "de.yaml"
    path.write_text(facts)
    text = render_text(value(shipped, path, policy="standard@1.0.0"))
    vat = _line(text, "vat")
    # 19% import VAT: the rate is 0.19, not 0.19 EUR; the line's amount is in EUR
    assert "rate = 0.19]" in vat and vat.split("→ ")[1].split("   ")[0].endswith(" EUR")
    de_minimis = _line(text, "de_minimis")
    assert de_minimis.split("→ ")[1].startswith("0   ")  # not under 150 EUR: relief 0


def test_a_claim_shows_its_fraction_bare_and_its_amounts_with_the_currency(
    shipped: RuleSet, tmp_path: Path
) -> None:
    # Sum insured 500,000.00 below the TIV 561,709.00: under-insured, so `insured_amount`
    # (the sum insured) is not the TIV, and only the formulas can tell it is an amount.
    path = _seed_with(tmp_path, 'sum_insured: "500000.00"')
    settled = claim(shipped, path, {"kind": "partial", "damage_percent": "30"},
                    policy="blue-harbour@1.0.0")  # fmt: skip
    pack = next(p for p in shipped.pack_versions("blue-harbour") if p.version == "1.0.0")
    formulas = [(name, f.text) for name, f in pack.formulas]
    told = render_claim_text(settled, formulas)
    # Without the formulas the names read from the valuation are guessed: the same text.
    assert render_claim_text(settled) == told
    assert _line(told, "loss_fraction").split("→ ")[1].startswith("0.3   ")
    # covered = 168,512.70 × 500,000.00 / 561,709.00 = 150,000.00 (average, s.81)
    assert _line(told, "covered_loss").split("→ ")[1].startswith("150,000.00 USD   ")
    # deductible = 500,000.00 × 0.005 = 2,500.00; indemnity = 150,000.00 − 2,500.00
    assert "Indemnity: 147,500.00 USD" in told
    assert "Components: loss_fraction 0.30, loss_on_value 168,512.70 USD" in told
    assert "(damage_percent 30%)" in told


def test_tiv_claim_text_through_the_cli(tmp_path: Path) -> None:
    path = _seed_with(tmp_path, 'sum_insured: "500000.00"')
    ran = run_cli("claim", str(path), "--policy", "blue-harbour@1.0.0", "--damage-percent",
                  "30", "--audit", "", cwd=ROOT)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert _line(ran.stdout, "covered_loss").split("→ ")[1].startswith("150,000.00 USD   ")
    assert _line(ran.stdout, "loss_fraction").split("→ ")[1].startswith("0.3   ")


def test_dimensions_follow_the_arithmetic() -> None:
    formulas = [
        ("invoice", "shipment.invoice.amount"),
        ("margin", "(invoice + charges.total) * margin_rate"),  # amount × rate: amount
        ("share", "shipment.sum_insured / invoice"),  # amount ÷ amount: a proportion
        ("limit", 'from_currency(limit_usd, "USD")'),  # converted: an amount
        ("rate", 'lookup("base_rate") + 0.001'),  # a table gives rates
        ("premium", "round(max(invoice * rate, limit))"),
        ("nothing", "0 if exists(shipment.incoterm) else invoice"),  # a bare 0 fits either
        ("square", "invoice * invoice"),  # an amount squared is not an amount
        ("days", "shipment.expected_transit_days * 2"),
    ]
    money = money_names(formulas)
    assert {name for name, is_money in money.items() if is_money} == {
        "invoice", "margin", "limit", "premium", "nothing",
    }  # fmt: skip
    # Unknown names: the guess that keeps like with like: `x` must be an amount to be
    # taken from one; `k` multiplies an amount into an amount, so it is a number.
    guessed = guess_money_names(
        [("left", "premium - x"), ("scaled", "premium * k"), ("net", "min(scaled, premium)")],
        {"premium": True},
        ["x", "k"],
    )
    assert guessed["x"] and not guessed["k"] and guessed["scaled"] and guessed["left"]


def test_a_masked_audit_record_is_still_explained(shipped: RuleSet, tmp_path: Path) -> None:
    from engine.compliance.audit import AuditLog
    from engine.compliance.audit.masking import MASK_MARKER
    from engine.compliance.audit.record import _MASKED
    from engine.result import MASKED

    assert _MASKED[MASKED] == MASK_MARKER  # the copy record.py keeps (an import cycle)
    log = AuditLog(tmp_path / "audit.db", mask=["invoice.amount", "charges[*].amount"])
    result = value(shipped, SEED, policy="standard@1.0.0", audit=log)
    record = log.get(result.audit_id or "")
    # The invoice component and the excluded demurrage repeat masked facts: stored masked.
    assert record.result["components"]["invoice"] == MASK_MARKER
    text = record.explained()
    assert f"invoice {MASK_MARKER}" in text and "Total insured value: 561,709.00 USD" in text
    # The workbench shows the record's figures, and draws no waterfall it cannot add up.
    from engine.service.ui.pages import _money, _result_view

    assert _result_view(record.valuation())["chart"] == ""
    assert _money(record.valuation().components["invoice"]) == MASK_MARKER
    assert _result_view(result)["chart"].startswith("<svg")
    # Anything but the marker is still refused.
    data = {**record.result, "total_insured_value": "<hidden>"}
    with pytest.raises(ValidationError):
        Valuation.model_validate(data, context=_MASKED)
