"""Valuations: figures computed by hand, rules firing, errors naming the formula."""

from __future__ import annotations

import datetime
import json
import pickle
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import EvaluationError, FactsError, SelectionError, value
from engine.result import Valuation
from tests.conftest import ROOT, line_of, load_mini, mini, shipment

SEED = ROOT / "examples/shipments/seed-electronics.yaml"


def test_seed_example_by_hand(shipped) -> None:
    result = value(shipped, SEED, policy="standard")
    # freight = 8,000 + 650 + 420 = 9,070.00; margin = (500,000 + 9,070) × 0.10 = 50,907.00
    # TIV = 500,000.00 + 9,070.00 + 50,907.00 + 1,732.00 = 561,709.00
    assert result.total_insured_value == Decimal("561709.00")
    assert result.components == {
        "invoice": Decimal("500000.00"),
        "freight": Decimal("9070.00"),
        "margin": Decimal("50907.00"),
        "duties": Decimal("1732.00"),
    }
    assert [(c.type, c.amount) for c in result.excluded_charges] == [
        ("demurrage", Decimal("1500.00")),
        ("detention", Decimal("300.00")),
    ]
    assert result.excluded_charges[0].rule == "charge_types.demurrage"
    assert result.decision == "accept" and result.reasons == [] and result.flags == []
    assert result.policy.id == "standard" and result.policy.version == "1.0.0"
    assert result.policy.source == "policies/standard/1.0.0.yaml"
    assert len(result.policy.sha256) == 64
    assert result.as_of == datetime.date(2025, 3, 14)


def test_trace_cites_the_rule_lines(shipped) -> None:
    result = value(shipped, SEED, policy="standard")
    text = (ROOT / "policies/standard/1.0.0.yaml").read_text().splitlines()
    steps = {s.name: s for s in result.trace if s.kind == "formula"}
    assert list(steps) == ["invoice", "freight", "margin", "fob", "duties", "tiv"]
    margin = steps["margin"]
    assert margin.expression == "(invoice + freight) * margin_rate"
    assert margin.inputs == {"invoice": "500000.00", "freight": "9070.00", "margin_rate": "0.10"}
    assert margin.value == "50907.0000"
    path, line = margin.source.rsplit(":", 1)
    assert path == "policies/standard/1.0.0.yaml"
    assert text[int(line) - 1].strip() == "margin: (invoice + freight) * margin_rate"
    excluded = [s for s in result.trace if s.kind == "charge" and s.value == "0"]
    assert [s.name for s in excluded] == ["charges[3]", "charges[4]"]
    for step in excluded:
        assert (
            "demurrage:" in text[int(step.source.rsplit(":", 1)[1]) - 1]
            or "detention:" in text[int(step.source.rsplit(":", 1)[1]) - 1]
        )


def test_multi_currency_by_hand() -> None:
    rules = load_mini()
    facts = shipment(
        currency="EUR",
        invoice={"amount": "100000.00", "currency": "USD"},
        charges=[
            {"type": "ocean_freight", "amount": "2500.00", "currency": "USD"},
            {"type": "origin_charges", "amount": "300.00"},
            {"type": "detention", "amount": "99.00", "currency": "GBP"},
        ],
        duties=[{"type": "import_duty", "amount": "1000.00", "currency": "GBP"}],
        fx={"USD": "0.9215", "GBP": "1.1650"},
    )
    result = value(rules, facts, policy="mini")
    # invoice = 100,000 × 0.9215 = 92,150; freight = 2,500 × 0.9215 + 300 = 2,603.75
    # duties = 1,000 GBP × 1.1650 = 1,165.00; margin = (92,150 + 2,603.75) × 0.10 = 9,475.375
    # TIV = 92,150 + 2,603.75 + 9,475.375 + 1,165 = 105,394.125 -> half-up 105,394.13
    assert result.components["freight"] == Decimal("2603.75")
    assert result.components["duties"] == Decimal("1165.00")
    assert result.total_insured_value == Decimal("105394.13")
    # the detention was converted (99 × 1.1650 = 115.335) and then excluded
    assert result.excluded_charges[0].amount == Decimal("115.335")
    converted = [s for s in result.trace if s.kind == "convert"]
    assert {s.name for s in converted} == {
        "invoice.amount",
        "charges[0].amount",
        "charges[2].amount",
        "duties[0].amount",
    }


def test_jpy_rounds_to_whole_yen() -> None:
    rules = load_mini()
    facts = shipment(
        currency="JPY",
        invoice={"amount": "1000001"},
        charges=[{"type": "air_freight", "amount": "3"}],
    )
    # margin = (1,000,001 + 3) × 0.10 = 100,000.4; TIV = 1,100,004.4 -> 1,100,004 (half-up)
    tiv = value(rules, facts, policy="mini").total_insured_value
    assert tiv == Decimal("1100004") and tiv.as_tuple().exponent == 0  # no places in yen
    facts["invoice"] = {"amount": "1000002"}
    # margin = 100,000.5; TIV = 1,100,005.5 -> 1,100,006 (half-up: the half goes up)
    assert value(rules, facts, policy="mini").total_insured_value == Decimal("1100006")


def test_kwd_has_three_places() -> None:
    rules = load_mini()
    facts = shipment(currency="KWD", invoice={"amount": "100.0005"})
    # margin = 10.00005; TIV = 110.00055 -> 110.001 at 3 places, half-up
    tiv = value(rules, facts, policy="mini").total_insured_value
    assert tiv == Decimal("110.001") and tiv.as_tuple().exponent == -3


def test_half_even_pack_differs_at_exact_half() -> None:
    rules = load_mini(replace={"mode: half_up": "mode: half_even"})
    facts = shipment(invoice={"amount": "1000.15"})
    # TIV = 1,000.15 × 1.10 = 1,100.165 -> half-even 1,100.16 (6 is even)
    assert value(rules, facts, policy="mini").total_insured_value == Decimal("1100.16")


@settings(max_examples=60, deadline=None)
@given(cents=st.integers(min_value=0, max_value=10**13))
def test_tiv_is_exactly_eleven_tenths_rounded_half_up(cents: int) -> None:
    rules = _RULES
    amount = Decimal(cents).scaleb(-2)
    result = value(rules, shipment(invoice={"amount": str(amount)}), policy="mini", trace=False)
    expected = (amount * Decimal("1.10")).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    assert Decimal(result.total_insured_value) == expected


_RULES = load_mini()


def test_rules_refer_decline_flag_and_strongest_wins() -> None:
    rules = load_mini("""\
        - id: big
          when: tiv > 1000000
          decide: refer
          reason: Above the per-conveyance limit
        - id: sanctioned
          when: shipment.destination.country in ["KP", "IR"]
          decide: decline
          reason: Sanctioned destination
        - id: art
          for: goods
          when: goods.category == "fine_art"
          decide: refer
          reason: Needs a professional valuation
        - id: no-hs
          for: goods
          when: not exists(goods.hs_code)
          flag: missing_hs_code
          reason: Goods line without HS code
        """)
    facts = shipment(
        destination={"country": "IR"},
        invoice={"amount": "2000000.00"},
        goods=[
            {"description": "Painting", "category": "fine_art"},
            {"description": "Frames", "hs_code": "4414", "category": "wood"},
        ],
    )
    result = value(rules, facts, policy="mini")
    assert result.decision == "decline"
    assert [(r.rule, r.decision, r.subjects) for r in result.reasons] == [
        ("big", "refer", ["shipment"]),
        ("sanctioned", "decline", ["shipment"]),
        ("art", "refer", ["goods[0]"]),
    ]
    assert [(f.name, f.subjects) for f in result.flags] == [("missing_hs_code", ["goods[0]"])]


def test_exclude_charge_rule_on_freight_collect() -> None:
    rules = load_mini("""\
        - id: freight-collect
          for: charge
          when: shipment.payment_method == "collect" and charge.group == "main_carriage"
          exclude_charge: true
          reason: Freight collect is at the carrier's risk
        """)
    charges = [
        {"type": "ocean_freight", "amount": "500.00"},
        {"type": "origin_charges", "amount": "100.00"},
    ]
    collect = value(rules, shipment(payment_method="collect", charges=charges), policy="mini")
    # freight = 100.00 (ocean freight excluded); TIV = (1,000 + 100) × 1.1 = 1,210.00
    assert collect.total_insured_value == Decimal("1210.00")
    assert [(c.type, c.rule) for c in collect.excluded_charges] == [
        ("ocean_freight", "freight-collect")
    ]
    prepaid = value(rules, shipment(charges=charges), policy="mini")
    assert prepaid.total_insured_value == Decimal("1760.00")  # (1,000 + 600) × 1.1


RATIO = {"  tiv: round(": "  ratio: freight / freight\n  tiv: round("}


def test_division_by_zero_names_the_formula_and_line() -> None:
    rules = load_mini(replace=RATIO)
    with pytest.raises(EvaluationError) as info:
        value(rules, shipment(), policy="mini")
    problem = info.value.problems[0]
    assert problem.code == "formula.division_by_zero"
    assert "`ratio`" in problem.message
    assert problem.location.file == "policies/mini/1.0.0.yaml"
    assert problem.location.line == line_of(mini(replace=RATIO), "ratio:")


def test_missing_fact_without_guard_is_an_evaluation_error() -> None:
    rules = load_mini(replace={"  tiv: round(": "  cover: shipment.sum_insured * 1\n  tiv: round("})
    with pytest.raises(
        EvaluationError,
        match=r"guard the formula with "
        r"exists\(shipment.sum_insured\)",
    ):
        value(rules, shipment(), policy="mini")


def test_unknown_charge_type_names_the_path() -> None:
    with pytest.raises(FactsError) as info:
        value(
            _RULES,
            shipment(
                charges=[
                    {"type": "ocean_freight", "amount": "1"},
                    {"type": "storage", "amount": "1"},
                ]
            ),
            policy="mini",
        )
    assert str(info.value.problems[0].location) == "charges[1].type"


def test_no_version_in_effect_names_date_and_versions() -> None:
    with pytest.raises(SelectionError) as info:
        value(_RULES, shipment(date="2019-06-30"), policy="mini")
    message = info.value.problems[0].message
    assert "2019-06-30" in message and "1.0.0 (published, 2020-01-01 onward)" in message


def test_unknown_pack() -> None:
    with pytest.raises(SelectionError, match="no policy pack `nope`"):
        value(_RULES, shipment(), policy="nope")


def test_value_many_streams_results_and_errors_in_order(shipped) -> None:
    import json

    from engine import TivError, Valuation, read_facts, value_many
    from engine.facts import FactsReference

    seed = read_facts(SEED, FactsReference(shipped.currencies, shipped.countries)).canonical()
    bad = {**seed, "currency": "XXX"}
    items = iter(
        [
            seed,  # a mapping
            json.dumps(seed).encode(),  # JSON bytes
            bad,  # refused: its error takes its place in the stream
            read_facts(SEED, FactsReference(shipped.currencies, shipped.countries)),  # Shipment
        ]
    )
    results = list(value_many(shipped, items, policy="standard"))
    assert [type(r).__name__ for r in results] == [
        "Valuation",
        "Valuation",
        "FactsError",
        "Valuation",
    ]
    assert isinstance(results[2], TivError)
    assert any(p.location.path == "currency" for p in results[2].problems)
    # The seed by hand (test_seed_example_by_hand): 561,709.00 for every valid form.
    assert all(
        r.total_insured_value == Decimal("561709.00") for r in results if isinstance(r, Valuation)
    )
    one = value(shipped, seed, policy="standard")
    assert results[0] == one and results[0].model_dump_json() == one.model_dump_json()


def test_results_are_the_models_validation_would_build(shipped) -> None:
    # Results are built without re-validation (result.built): validating their JSON again
    # must give an equal model and the same JSON, trace included.
    from engine import Valuation

    result = value(shipped, SEED, policy="standard")
    again = Valuation.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.model_dump_json() == result.model_dump_json()
    assert len(result.trace) > 10


def _read_in(order: str, result: Valuation) -> str:
    """The result's JSON after reading it in one of the ways a caller may come first."""
    if order == "trace":
        assert result.trace  # a deferred field read by attribute
    elif order == "components":
        assert result.components["invoice"] == Decimal("500000.00")
    elif order == "dump":
        result.model_dump(mode="json")
    elif order == "copy":
        result = result.model_copy(update={"audit_id": None})
    elif order == "pickle":
        result = pickle.loads(pickle.dumps(result))
    elif order == "repr":
        assert "trace=" in repr(result)
    return result.model_dump_json()


@pytest.mark.parametrize("order", ["json", "trace", "components", "dump", "copy", "pickle", "repr"])
def test_deferred_fields_read_the_same_whatever_comes_first(shipped, order: str) -> None:
    # The engine writes the trace and the figures' texts only when first read: the
    # result must be the same model, field for field and byte for byte, as one validated
    # from its own JSON, whichever way it is read first.
    result = value(shipped, SEED, policy="standard")
    assert result.decision == "accept" and result.total_insured_value == Decimal("561709.00")
    text = _read_in(order, result)
    validated = Valuation.model_validate_json(text)
    assert validated.model_dump_json() == text
    assert validated == result and result == validated
    assert list(json.loads(text)) == list(Valuation.model_fields)
    assert json.loads(text)["components"]["margin"] == "50907.00"  # (500,000 + 9,070) × 0.10
    assert len(json.loads(text)["trace"]) == len(validated.trace) > 6


def test_unknown_attribute_of_a_deferred_valuation_is_an_attribute_error(shipped) -> None:
    result = value(shipped, SEED, policy="standard")
    with pytest.raises(AttributeError):
        _ = result.no_such_field  # type: ignore[attr-defined]
    assert getattr(result, "no_such_field", None) is None
