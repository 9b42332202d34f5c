"""engine.facts: the shipment facts contract, read exactly, every problem with its place."""

from __future__ import annotations

import copy
import datetime
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaValidator, core_schema

from engine import facts
from engine.errors import FactsError, Problem
from engine.facts import Charge, FactsReference, Shipment, load_facts_document, read_facts
from engine.money import AMOUNT, FX_RATE, Bound, plain

# A small hand-made reference: the real lists live in rules/reference/, these are fixtures.
REFERENCE = FactsReference(
    currencies={"USD": 2, "EUR": 2, "CHF": 2, "JPY": 0, "BHD": 3},
    countries=frozenset({"CN", "US", "NO", "DE", "SG"}),
    charge_types=frozenset({"freight", "handling", "insurance"}),
)

# The numbers on the right are the line numbers the assertions below rely on.
SHIPMENT = """\
id: SHP-1                                              # 1
date: 2025-03-01                                       # 2
currency: USD                                          # 3
incoterm: CIF                                          # 4
mode: ocean                                            # 5
origin: {country: CN, port: Shanghai}                  # 6
destination: {country: "NO"}                           # 7
invoice: {amount: "10000.00", currency: EUR}           # 8
goods:                                                 # 9
  - description: Laptops                               # 10
    hs_code: "847130"                                  # 11
    quantity: 10                                       # 12
    weight_kg: 25.5                                    # 13
    value: "10000.00"                                  # 14
    category: electronics                              # 15
charges:                                               # 16
  - {type: freight, amount: "1200.00"}                 # 17
  - {type: handling, amount: 80}                       # 18
  - {type: freight, amount: "95.50", currency: USD}    # 19
fx:                                                    # 20
  EUR: "1.0825"                                        # 21
"""


def variant(old: str, new: str) -> str:
    assert SHIPMENT.count(old) == 1, old
    return SHIPMENT.replace(old, new)


def problems_of(source: Any, **options: Any) -> list[Problem]:
    with pytest.raises(FactsError) as caught:
        read_facts(source, REFERENCE, **options)
    return list(caught.value.problems)


def only_problem(source: Any, **options: Any) -> Problem:
    [found] = problems_of(source, **options)
    return found


def as_data() -> dict[str, Any]:
    """The example as plain data, the way a library caller would pass it."""
    return read_facts(SHIPMENT, REFERENCE).canonical()


def as_json(data: dict[str, Any], **replace: str) -> str:
    """JSON text; each `__name__` string placeholder is replaced by raw JSON text."""
    text = json.dumps(data)
    for name, raw in replace.items():
        text = text.replace(f'"__{name}__"', raw)
    return text


# --- the valid example --------------------------------------------------------------


def test_the_example_reads_exactly() -> None:
    shipment = read_facts(SHIPMENT, REFERENCE, name="ship.yaml")
    assert shipment.invoice.amount == Decimal("10000.00")
    assert str(shipment.goods[0].weight_kg) == "25.5"
    assert shipment.fx == {"EUR": Decimal("1.0825")}
    assert shipment.destination.country == "NO"
    assert shipment.goods[0].hs_code == "847130"
    assert shipment.payment_method == "prepaid"
    # Currencies are inherited: invoice given (EUR), goods from the invoice (EUR),
    # charges without one from the valuation currency (USD).
    assert shipment.invoice.currency == "EUR"
    assert shipment.goods[0].currency == "EUR"
    assert [c.currency for c in shipment.charges] == ["USD", "USD", "USD"]


def test_the_model_is_frozen() -> None:
    shipment = read_facts(SHIPMENT, REFERENCE)
    with pytest.raises(ValueError):
        shipment.id = "other"
    assert isinstance(shipment.charges, tuple)


def test_a_file_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ship.yaml"
    path.write_text(SHIPMENT, encoding="utf-8")
    assert read_facts(path, REFERENCE) == read_facts(SHIPMENT, REFERENCE)
    data, marks = load_facts_document(path)
    assert marks is not None and marks.locate("charges[2].amount").line == 19
    assert data["charges"][2]["amount"] == "95.50"


def test_json_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ship.json"
    path.write_text(json.dumps(as_data()), encoding="utf-8")
    assert read_facts(path, REFERENCE) == read_facts(SHIPMENT, REFERENCE)


def test_unreadable_file(tmp_path: Path) -> None:
    found = only_problem(tmp_path / "missing.yaml")
    assert found.code == "facts.unreadable"
    assert found.location.file.endswith("missing.yaml")


# --- one test per bad-input class ---------------------------------------------------


def test_negative_amount() -> None:
    found = only_problem(variant('amount: "95.50"', 'amount: "-95.50"'), name="ship.yaml")
    assert found.code == "facts.negative"
    assert (found.location.file, found.location.line) == ("ship.yaml", 19)
    assert found.location.path == "charges[2].amount"
    assert str(found).startswith("ship.yaml:19:")
    assert "charges[2].amount: must not be negative" in str(found)


def test_nan_string() -> None:
    found = only_problem(variant('amount: "1200.00"', 'amount: "NaN"'))
    assert (found.location.path, found.location.line) == ("charges[0].amount", 17)
    assert "'NaN' is not a decimal number" in found.message


def test_nan_and_infinity_in_json() -> None:
    data = as_data()
    data["charges"][2]["amount"] = "__inf__"
    data["invoice"]["amount"] = "__nan__"
    found = problems_of(as_json(data, inf="Infinity", nan="NaN"), name="ship.json")
    assert [(p.code, p.location.path) for p in found] == [
        ("facts.not_finite", "charges[2].amount"),
        ("facts.not_finite", "invoice.amount"),
    ]
    assert "Infinity is not a finite number" in found[0].message
    assert found[0].location.file == "ship.json"


@pytest.mark.parametrize("written", ['"12,50"', '"1e400x"', '"1 000"', '"$12"', '"0x10"'])
def test_malformed_number(written: str) -> None:
    found = only_problem(variant('amount: "1200.00"', f"amount: {written}"))
    assert (found.code, found.location.path, found.location.line) == (
        "facts.number",
        "charges[0].amount",
        17,
    )
    assert "is not a decimal number" in found.message


def test_boolean_amount() -> None:
    found = only_problem(variant("amount: 80", "amount: true"))
    assert (found.location.path, found.message) == (
        "charges[1].amount",
        "expected a number, got true",
    )


def test_binary_float_from_a_python_caller() -> None:
    data = as_data()
    data["charges"][2]["amount"] = 95.5
    found = only_problem(data)
    assert (found.code, found.location.path) == ("facts.number", "charges[2].amount")
    assert "binary float" in found.message
    assert found.location.file == "" and found.location.line == 0  # a mapping has no file


def test_unknown_currency() -> None:
    found = only_problem(variant("currency: USD}", "currency: EUX}"))
    assert (found.code, found.location.path, found.location.line) == (
        "facts.unknown_currency",
        "charges[2].currency",
        19,
    )
    assert "'EUX'" in found.message


def test_lower_case_currency_gets_a_hint() -> None:
    found = only_problem(variant("currency: USD}", "currency: usd}"))
    assert found.location.path == "charges[2].currency"
    assert "'USD'" in found.message


def test_unknown_country() -> None:
    found = only_problem(variant('destination: {country: "NO"}', "destination: {country: XX}"))
    assert (found.code, found.location.path, found.location.line) == (
        "facts.unknown_country",
        "destination.country",
        7,
    )


def test_unknown_transit_country() -> None:
    text = SHIPMENT + "transit_countries: [SG, QQ]\n"  # line 22
    found = only_problem(text)
    assert (found.location.path, found.location.line) == ("transit_countries[1]", 22)


def test_unknown_charge_type_lists_the_known_ones() -> None:
    found = only_problem(variant("type: handling", "type: handlng"))
    assert (found.code, found.location.path, found.location.line) == (
        "facts.unknown_charge_type",
        "charges[1].type",
        18,
    )
    assert "freight, handling, insurance" in found.message


def test_charge_types_are_not_checked_without_a_list() -> None:
    reference = FactsReference(REFERENCE.currencies, REFERENCE.countries)
    shipment = read_facts(variant("type: handling", "type: anything"), reference)
    assert shipment.charges[1].type == "anything"


def test_foreign_amount_without_fx_rate() -> None:
    found = only_problem(variant("currency: USD}", "currency: CHF}"))
    assert found.code == "facts.no_fx_rate"
    assert (found.location.path, found.location.line) == ("charges[2].currency", 19)
    assert found.message == "no fx rate for CHF; add fx.CHF, the value of one CHF in USD"


def test_missing_fx_rate_of_the_invoice_currency_is_reported_once() -> None:
    # The goods line inherits EUR from the invoice: the one fix is fx.EUR.
    found = only_problem(variant('  EUR: "1.0825"', "  CHF: 1"))
    assert (found.location.path, found.location.line) == ("invoice.currency", 8)


def test_valuation_currency_rate_must_be_one() -> None:
    found = only_problem(variant('  EUR: "1.0825"', '  EUR: "1.0825"\n  USD: 2'))
    assert (found.code, found.location.path, found.location.line) == (
        "facts.fx_valuation",
        "fx.USD",
        22,
    )


def test_fx_rate_must_be_positive() -> None:
    found = only_problem(variant('EUR: "1.0825"', "EUR: 0"))
    assert (found.code, found.location.path) == ("facts.not_positive", "fx.EUR")


def test_unknown_field() -> None:
    found = only_problem(variant("charges:", "chargess:"))
    assert found.code == "facts.unknown_field"
    assert found.location.path == "chargess"
    assert (found.location.line, found.location.col) == (16, 1)  # the key itself
    assert found.message == "unknown field 'chargess'; did you mean 'charges'?"


def test_unknown_nested_field() -> None:
    found = only_problem(variant("    category:", "    categroy:"))
    assert (found.location.path, found.location.line) == ("goods[0].categroy", 15)
    assert "did you mean 'category'?" in found.message


def test_missing_required_field() -> None:
    found = only_problem(variant("mode: ocean", "# no mode"))
    assert (found.code, found.location.path, found.message) == (
        "facts.required",
        "mode",
        "is required",
    )
    assert found.location.line == 1  # absent: placed at its parent, the document


def test_missing_nested_field_is_placed_at_its_parent() -> None:
    found = only_problem(variant("{type: handling, amount: 80}", "{type: handling}"))
    assert (found.location.path, found.location.line) == ("charges[1].amount", 18)


def test_hs_code_given_as_a_yaml_int() -> None:
    found = only_problem(variant('hs_code: "847130"', "hs_code: 847130"))
    assert (found.code, found.location.path, found.location.line) == (
        "facts.hs_code",
        "goods[0].hs_code",
        11,
    )
    assert 'quotes ("847130")' in found.message


def test_hs_code_with_a_leading_zero_is_caught_by_the_loader() -> None:
    found = only_problem(variant('hs_code: "847130"', "hs_code: 0101"))
    assert (found.code, found.location.line) == ("yaml.number", 11)


def test_every_problem_is_reported_at_once() -> None:
    text = (
        SHIPMENT.replace("mode: ocean", "mode: sea")
        .replace('amount: "95.50"', 'amount: "-1"')
        .replace("type: handling", "type: handlng")
        .replace("quantity: 10", "quantity: ten")
    )
    found = problems_of(text)
    assert [(p.location.line, p.location.path) for p in found] == [
        (5, "mode"),
        (12, "goods[0].quantity"),
        (18, "charges[1].type"),
        (19, "charges[2].amount"),
    ]


def test_goods_may_be_empty_or_absent() -> None:
    text = SHIPMENT.split("goods:")[0] + "goods: []\nfx: {EUR: 1}\n"
    assert read_facts(text, REFERENCE, name="s.yaml").goods == ()


def test_yaml_problems_are_facts_errors() -> None:
    found = only_problem(SHIPMENT + "id: again\n")
    assert (found.code, found.location.line) == ("yaml.duplicate_key", 22)


def test_json_duplicate_keys_are_rejected() -> None:
    found = only_problem('{"id": "a", "id": "b"}')
    assert (found.code, found.location.path) == ("facts.duplicate_key", "id")


def test_json_syntax_error_has_line_and_column() -> None:
    found = only_problem('{\n  "id": "a",\n  "date": ,\n}', name="s.json")
    # Line 3 is '  "date": ,' and the value is missing at column 11.
    assert (found.code, found.location.line, found.location.col) == ("facts.syntax", 3, 11)


@pytest.mark.parametrize("source", ["", "# nothing\n", b""])
def test_empty_facts(source: str | bytes) -> None:
    assert only_problem(source).code == "facts.empty_document"


def test_not_a_mapping() -> None:
    found = only_problem("- a\n- b\n")
    assert found.code == "facts.type" and found.location.path == ""


def test_a_str_is_text_not_a_file_name() -> None:
    assert "pathlib.Path" in only_problem("examples/shipments/x.yaml").message


def test_bytes_must_be_utf8() -> None:
    found = only_problem(SHIPMENT.replace("Laptops", "Lapt\xf6ps").encode("latin-1"))
    assert (found.code, found.location.line) == ("facts.encoding", 10)


# --- exactness ----------------------------------------------------------------------


def test_json_number_is_read_as_its_decimal_text() -> None:
    data = as_data()
    data["invoice"]["amount"] = "__x__"
    data["fx"]["EUR"] = "__y__"
    shipment = read_facts(as_json(data, x="0.1", y="1.10"), REFERENCE)
    # float("0.1") is 0.1000000000000000055511151231257827...; the text is exactly 0.1.
    assert shipment.invoice.amount == Decimal("0.1") and str(shipment.invoice.amount) == "0.1"
    assert str(shipment.fx["EUR"]) == "1.10"


def test_finer_than_minor_units_is_kept_unrounded() -> None:
    shipment = read_facts(variant('amount: "1200.00"', 'amount: "1200.0049"'), REFERENCE)
    assert shipment.charges[0].amount == Decimal("1200.0049")  # USD has 2 places; no rounding


def test_duties_absent_is_not_duties_empty() -> None:
    assert read_facts(SHIPMENT, REFERENCE).duties is None
    assert read_facts(SHIPMENT + "duties: []\n", REFERENCE).duties == ()
    declared = read_facts(SHIPMENT + "duties: [{type: tax, amount: 12}]\n", REFERENCE).duties
    assert declared is not None and declared[0].amount == Decimal(12)
    assert declared[0].currency == "USD"


def test_canonical_round_trips() -> None:
    shipment = read_facts(SHIPMENT + "duties: []\nsum_insured: 12000.10\n", REFERENCE)
    canonical = shipment.canonical()
    assert canonical["invoice"] == {"amount": "10000.00", "currency": "EUR"}
    assert canonical["sum_insured"] == "12000.10"
    assert canonical["date"] == "2025-03-01"
    assert list(canonical) == list(Shipment.model_fields)
    again = read_facts(json.dumps(canonical), REFERENCE)
    assert again == shipment
    assert again.canonical() == canonical
    assert read_facts(canonical, REFERENCE) == shipment


def test_canonical_is_independent_of_fx_order() -> None:
    first = read_facts(variant('  EUR: "1.0825"', '  EUR: "1.0825"\n  CHF: "1.1"'), REFERENCE)
    second = read_facts(variant('  EUR: "1.0825"', '  CHF: "1.1"\n  EUR: "1.0825"'), REFERENCE)
    assert json.dumps(first.canonical()) == json.dumps(second.canonical())


def test_json_schema() -> None:
    schema = Shipment.model_json_schema()
    assert schema == Shipment.json_schema()
    amount = schema["$defs"]["Charge"]["properties"]["amount"]
    assert {branch["type"] for branch in amount["anyOf"]} == {"string", "number"}
    assert schema["additionalProperties"] is False
    assert "invoice" in schema["required"]
    assert "goods" not in schema["required"] and "duties" not in schema["required"]


# Any decimal a person could write: up to 30 digits, up to 14 of them after the point.
WRITTEN = st.builds(
    lambda digits, places: Decimal(digits).scaleb(-places),
    st.integers(min_value=0, max_value=10**30 - 1),
    st.integers(min_value=0, max_value=14),
)


def _within(number: Decimal, bound: Bound) -> bool:
    # As the bound says: digits before the point (0.5 has none), places as written.
    exponent = int(number.as_tuple().exponent)
    whole = len(number.as_tuple().digits) + exponent if number else 0
    return whole <= bound.digits and max(-exponent, 0) <= bound.places


@given(WRITTEN.filter(lambda number: _within(number, AMOUNT)))
def test_any_decimal_amount_written_as_a_json_string_comes_back_exactly(number: Decimal) -> None:
    data = as_data()
    data["charges"][2]["amount"] = plain(number)
    amount = read_facts(json.dumps(data), REFERENCE).charges[2].amount
    assert amount == number
    assert plain(amount) == plain(number)  # the same digits, not just the same value


@given(WRITTEN, st.sampled_from(["text", "json number", "mapping"]))
def test_an_amount_or_rate_beyond_its_bound_is_refused_at_its_path(
    number: Decimal, form: str
) -> None:
    """Amounts: below 10^20, at most 10 places; fx rates: below 10^12, at most 20 places
    (README, Bounds of the facts). Within: read exactly; beyond: facts.number_bounds at
    the number's own JSON path, whether text, a JSON number or a Decimal in a mapping."""
    for where, bound in ((("charges", 2, "amount"), AMOUNT), (("fx", "EUR"), FX_RATE)):
        if bound is FX_RATE and number == 0:
            continue  # a rate of zero is refused for being zero
        data = as_data()
        data["fx"] = {"EUR": "1.08"}
        node: Any = data
        for part in where[:-1]:
            node = node[part]
        node[where[-1]] = plain(number) if form != "mapping" else number
        source: Any = data
        if form == "text":
            source = json.dumps(data)
        elif form == "json number":
            source = json.dumps(data).replace(f'"{plain(number)}"', plain(number))
        path = f"{where[0]}[{where[1]}].{where[2]}" if len(where) == 3 else "fx.EUR"
        if _within(number, bound):
            shipment = read_facts(source, REFERENCE)
            read = shipment.charges[2].amount if bound is AMOUNT else shipment.fx["EUR"]
            assert read == number
        else:
            with pytest.raises(FactsError) as caught:
                read_facts(source, REFERENCE)
            codes = {(p.code, p.location.path) for p in caught.value.problems}
            assert ("facts.number_bounds", path) in codes, codes


def test_the_bounds_are_in_the_schema() -> None:
    whole = Shipment.model_json_schema()
    schema = whole["$defs"]
    amount = schema["Charge"]["properties"]["amount"]
    assert amount["anyOf"][0]["pattern"] == r"^[0-9]{1,20}(\.[0-9]{1,10})?$"
    assert amount["anyOf"][1]["exclusiveMaximum"] == 10**20
    assert "at most 20 digits before the decimal point and 10 after" in amount["description"]
    rate = whole["properties"]["fx"]["patternProperties"]["^[A-Z]{3}$"]
    assert rate["anyOf"][0]["pattern"] == r"^[0-9]{1,12}(\.[0-9]{1,20})?$"


def test_a_facts_file_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(as_data()) + " " * 2000)
    monkeypatch.setenv("TIV_MAX_INPUT_BYTES", "1000")
    with pytest.raises(FactsError) as caught:
        load_facts_document(path)
    (problem,) = caught.value.problems
    assert problem.code == "input.too_large" and problem.location.file == str(path)
    assert "over the limit of 1,000 bytes" in problem.message
    monkeypatch.setenv("TIV_MAX_INPUT_BYTES", str(path.stat().st_size))
    assert load_facts_document(path)[0]["id"] == as_data()["id"]  # at the limit: read


def test_facts_text_over_the_size_limit_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = json.dumps(as_data(), ensure_ascii=False)
    monkeypatch.setenv("TIV_MAX_INPUT_BYTES", str(len(text) - 1))
    for source in (text, text.encode()):
        with pytest.raises(FactsError) as caught:
            read_facts(source, REFERENCE, name="body.json")
        (problem,) = caught.value.problems
        assert problem.code == "input.too_large" and problem.location.file == "body.json"
    # The limit counts bytes: "é" is one character and two bytes in UTF-8.
    accented = text.replace('"SHP-1"', '"SHP-\u00e9"')
    assert len(accented.encode()) == len(accented) + 1
    monkeypatch.setenv("TIV_MAX_INPUT_BYTES", str(len(accented)))
    with pytest.raises(FactsError, match="over the limit"):
        read_facts(accented, REFERENCE)
    monkeypatch.setenv("TIV_MAX_INPUT_BYTES", str(len(accented) + 1))
    assert read_facts(accented, REFERENCE).id == "SHP-\u00e9"


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.decimals(allow_nan=True)
    | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200)
@given(
    st.sampled_from(
        [
            "id",
            "date",
            "currency",
            "invoice",
            "goods",
            "charges",
            "duties",
            "fx",
            "origin",
            "transit_countries",
            "expected_transit_days",
        ]
    ),
    JSONISH,
)
def test_any_value_in_any_field_gives_a_result_or_a_facts_error(field: str, junk: Any) -> None:
    # Some junk is a valid value (an id "a", duties []); the property here is only that
    # nothing else escapes and every message is one line. The next test requires refusal.
    data = copy.deepcopy(as_data())
    data[field] = junk
    try:
        read_facts(data, REFERENCE)
    except FactsError as error:
        assert all(problem.message and "\n" not in problem.message for problem in error.problems)


# Values no field of the contract accepts: a boolean anywhere, and for each field a
# container of the wrong kind (a list where a mapping or text is due, a mapping where a
# list or text is due), never empty, so that an empty list or mapping cannot pass.
NEVER_VALID = {
    "id": st.booleans() | st.lists(st.integers(), min_size=1),
    "date": st.booleans() | st.dictionaries(st.text(min_size=1), st.integers(), min_size=1),
    "currency": st.booleans() | st.lists(st.text(), min_size=1),
    "invoice": st.booleans() | st.lists(st.integers(), min_size=1) | st.text(),
    "goods": st.booleans() | st.text() | st.dictionaries(st.text(), st.integers(), min_size=1),
    "charges": st.booleans() | st.text() | st.dictionaries(st.text(), st.integers(), min_size=1),
    "duties": st.booleans() | st.text() | st.dictionaries(st.text(), st.integers(), min_size=1),
    "fx": st.booleans() | st.lists(st.integers(), min_size=1) | st.text(),
    "origin": st.booleans() | st.lists(st.integers(), min_size=1) | st.text(),
    "transit_countries": st.booleans() | st.dictionaries(st.text(), st.integers(), min_size=1),
    "expected_transit_days": st.booleans() | st.text() | st.lists(st.integers(), min_size=1),
}


@settings(max_examples=200)
@given(
    st.sampled_from(sorted(NEVER_VALID)).flatmap(lambda f: st.tuples(st.just(f), NEVER_VALID[f]))
)
def test_a_value_of_the_wrong_kind_is_refused_at_its_field(case: tuple[str, Any]) -> None:
    field, junk = case
    data = copy.deepcopy(as_data())
    data[field] = junk
    with pytest.raises(FactsError) as raised:
        read_facts(data, REFERENCE)
    paths = [problem.location.path or "" for problem in raised.value.problems]
    assert any(path == field or path.startswith((f"{field}[", f"{field}.")) for path in paths), (
        field,
        junk,
        paths,
    )


# --- the compiled validator: same Shipment, or the models decide --------------------
# read_facts first tries a pydantic-core validator compiled from the models; anything it
# refuses goes through the models, which word every message. So it must never accept
# what the models refuse, and must build the very same Shipment when it accepts.

SEED = Path(__file__).resolve().parent.parent / "examples/shipments/seed-electronics.yaml"


def by_models(data: Any) -> Shipment | None:
    """The models' road alone, or None where they refuse."""
    return by_models_with(data, REFERENCE)


def by_models_with(data: Any, reference: FactsReference) -> Shipment | None:
    try:
        return facts._validate_by_models(copy.deepcopy(data), reference, None, "")
    except FactsError:
        return None


def json_by_models(text: str) -> Shipment | None:
    try:
        return facts._validate_by_models(facts._parse_json(text, ""), REFERENCE, None, "")
    except FactsError:
        return None


def fields_sets(value: Any, path: str = "") -> dict[str, frozenset[str]]:
    """Which fields each model holds as given (pydantic's fields set), by path."""
    found: dict[str, frozenset[str]] = {}
    if isinstance(value, BaseModel):
        found[path] = frozenset(value.model_fields_set)
        for name in type(value).model_fields:
            found.update(fields_sets(getattr(value, name), f"{path}.{name}"))
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            found.update(fields_sets(item, f"{path}[{index}]"))
    return found


def assert_same(fast: Shipment, slow: Shipment | None) -> None:
    assert slow is not None, "the compiled validator accepted facts the models refuse"
    assert fast == slow
    assert fast.canonical() == slow.canonical()
    assert fields_sets(fast) == fields_sets(slow)


def seed_data() -> dict[str, Any]:
    from engine.loading.yamlfile import parse_yaml_data

    return parse_yaml_data(SEED.read_text(encoding="utf-8"), SEED.name).data  # type: ignore[no-any-return]


SEED_REFERENCE = FactsReference(
    currencies={"USD": 2, "EUR": 2},
    countries=frozenset({"CN", "US"}),
    charge_types=frozenset(
        {"ocean_freight", "origin_charges", "destination_charges", "demurrage", "detention"}
    ),
)


def test_the_seed_and_the_example_take_the_compiled_road() -> None:
    # Otherwise bench/facts_throughput.py would time the models, not the compiled validator.
    seed = seed_data()
    assert facts._fast_from_mapping(copy.deepcopy(seed), SEED_REFERENCE) is not None
    assert facts._fast_from_json(json.dumps(seed).encode(), SEED_REFERENCE) is not None
    data = as_data()
    assert_same(facts._fast_from_mapping(copy.deepcopy(data), REFERENCE), by_models(data))  # type: ignore[arg-type]
    text = json.dumps(data)
    assert_same(facts._fast_from_json(text, REFERENCE), json_by_models(text))  # type: ignore[arg-type]


def test_inherited_currencies_on_the_compiled_road() -> None:
    data = seed_data()
    data["invoice"]["currency"] = "EUR"
    data["fx"] = {"EUR": "1.08"}
    shipment = facts._fast_from_mapping(data, SEED_REFERENCE)
    assert shipment is not None
    # goods inherit the invoice's EUR; charges and duties the valuation's USD.
    assert shipment.goods[0].currency == "EUR"
    assert {c.currency for c in shipment.charges} == {"USD"}
    assert shipment.duties is not None and shipment.duties[0].currency == "USD"
    # Inherited, not given: the field is not marked as set, on either road.
    assert "currency" not in shipment.charges[0].model_fields_set
    assert_same(shipment, by_models_with(data, SEED_REFERENCE))


def test_a_model_passed_in_is_not_given_a_currency() -> None:
    # The models leave a Charge instance as it is; so must the compiled road.
    data = as_data()
    given = Charge(type="freight", amount=Decimal(5))
    data["charges"][0] = given
    shipment = read_facts(data, REFERENCE)
    assert shipment.charges[0] is given and given.currency is None
    assert_same(shipment, by_models(data))


@pytest.mark.parametrize(
    "number", ["0.1", "1e-7", "12345678901234567890.123456789", "1.10", "2.50E+3", "0"]
)
def test_json_numbers_never_pass_through_a_float(number: str) -> None:
    # pydantic-core reads a JSON number with a fraction or exponent as a binary float
    # (12345678901234567890.123456789 would become 12345678901234567000); the compiled
    # road refuses such numbers, and the slow road reads them as Decimal(text).
    data = as_data()
    data["charges"][1]["amount"] = "__x__"
    text = as_json(data, x=number)
    for source in (text, text.encode()):
        amount = read_facts(source, REFERENCE).charges[1].amount
        assert str(amount) == str(Decimal(number))  # the very digits written


def test_big_json_integers_are_exact() -> None:
    data = as_data()
    data["charges"][1]["amount"] = "__x__"
    # The largest an amount may be (money.AMOUNT: 20 digits before the point).
    text = as_json(data, x="99999999999999999999")
    assert facts._fast_from_json(text, REFERENCE) is not None  # an int is exact in JSON too
    amount = read_facts(text.encode(), REFERENCE).charges[1].amount
    assert amount == Decimal("99999999999999999999")


@pytest.mark.parametrize(
    "text",
    [
        '{"id": "a", "id": "b"}',
        # A repeated key hidden by a ':' inside a text value must still be found.
        '{"id": "SHP:1", "id": "SHP:1", "date": "2025-03-01"}',
        '{"id" : "a" , "id":"b"}',
    ],
)
def test_json_duplicate_keys_never_pass(text: str) -> None:
    assert facts._fast_from_json(text, REFERENCE) is None
    assert "facts.duplicate_key" in [p.code for p in problems_of(text)]


def test_json_duplicate_key_inside_valid_facts() -> None:
    data = as_data()
    text = json.dumps(data).replace('"mode": "ocean"', '"mode": "air", "mode": "ocean"')
    text = text.replace('"id": "SHP-1"', '"id": "SHP:1"')  # a ':' in a value: counted
    assert facts._fast_from_json(text, REFERENCE) is None
    found = only_problem(text)
    assert (found.code, found.location.path) == ("facts.duplicate_key", "mode")


def test_blank_text_agrees_with_str_strip_for_every_character() -> None:
    # The compiled road's "not blank" pattern against the models' value.strip().
    blank = SchemaValidator(core_schema.str_schema(strict=True, pattern=facts._SOMETHING))
    for point in range(0x3100):  # every whitespace character Python knows lies below
        char = chr(point)
        try:
            blank.validate_python(char)
            accepted = True
        except ValidationError:
            accepted = False
        if accepted:
            assert char.strip(), f"U+{point:04X} is blank to str.strip()"


MUTATIONS = st.sampled_from(
    [
        "12.50",
        " 12",
        "-0",
        "0",
        "0.00",
        "1e5",
        "NaN",
        "",
        " ",
        "\x1c",
        "a:b",
        "USD",
        "usd",
        "EUR",
        "CHF",
        "EUX",
        "XX",
        "NO",
        "CN",
        "2025-02-30",
        "2025-03-01",
        "0000-01-01",
        "847130",
        "0101",
        "electronics",
        "Bad",
        "freight",
        "handling",
        "tax",
        "ocean",
        "sea",
        "CIF",
    ]
) | st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        5,
        10**30,
        1.5,
        Decimal("1.10"),
        Decimal("-1"),
        Decimal("NaN"),
        Decimal("-0"),
        datetime.date(2025, 1, 1),
        datetime.datetime(2025, 1, 1),
        [],
        {},
        ["CN"],
        {"EUR": "1.1"},
        {"USD": 1},
        {"amount": "5"},
        [{"type": "freight", "amount": "1"}],
        ("x",),
    ]
)


def leaf_paths(value: Any, parts: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [parts] if parts else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += leaf_paths(item, (*parts, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaf_paths(item, (*parts, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(draw(st.sampled_from([as_data(), seed_data()])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(leaf_paths(data)))
        *parents, last = path
        holder: Any = data
        for part in parents:
            holder = holder[part]
        action = draw(st.sampled_from(["set", "set", "set", "delete", "extra"]))
        if action == "delete" and isinstance(holder, dict):
            del holder[last]
        elif action == "extra" and isinstance(holder, dict):
            holder[draw(st.sampled_from(["currency", "port", "notes", "value"]))] = copy.deepcopy(
                draw(MUTATIONS)
            )
        else:
            holder[last] = copy.deepcopy(draw(MUTATIONS))
    return data


def fresh(reference: FactsReference) -> FactsReference:
    """An equal reference read for the first time: it takes the shared validators and
    the Python pass (`_finish`), as a reference made for one read does."""
    return FactsReference(reference.currencies, reference.countries, reference.charge_types)


def warmed(reference: FactsReference) -> FactsReference:
    """An equal reference with its own validators made for every currency."""
    made = fresh(reference)
    for code in made.currencies:
        for python in (True, False):
            for _ in range(facts._COMPILE_AFTER):
                facts._compiled_for(made, code, python=python)
    return made


WARM = {id(reference): warmed(reference) for reference in (REFERENCE, SEED_REFERENCE)}


def both_roads(reference: FactsReference) -> tuple[FactsReference, FactsReference]:
    return fresh(reference), WARM[id(reference)]


def one_currency() -> dict[str, Any]:
    """The test shipment with every amount in USD, none of them written."""
    data = as_data() | {"fx": {}, "invoice": {"amount": "10000.00"}}
    for name in ("goods", "charges"):
        data[name] = [{k: v for k, v in item.items() if k != "currency"} for item in data[name]]
    return data


def test_a_reference_read_often_gets_validators_of_its_own() -> None:
    reference = fresh(REFERENCE)
    data = one_currency()
    for _ in range(facts._COMPILE_AFTER):
        read_facts(copy.deepcopy(data), reference)
    own = reference.compiled.python["USD"]
    assert own is not None
    shipment = own.validate_python(copy.deepcopy(data))
    assert_same(shipment, by_models(data))
    # Absent currencies come from the field's default: USD, and not marked as set.
    assert {c.currency for c in shipment.charges} == {shipment.goods[0].currency} == {"USD"}
    assert "currency" not in shipment.charges[0].model_fields_set
    # A code not in the reference, and a currency other than the valuation's, are refused
    # by its own validator, so the road below (then the models) decides.
    for key, wrong in (
        ("origin", {"country": "FR"}),
        ("invoice", {"amount": "1", "currency": "EUR"}),
    ):
        with pytest.raises(ValidationError):
            own.validate_python(copy.deepcopy(data) | {key: wrong})
    # The valuation currency's own rate must be 1: checked after, the models word it.
    assert facts._fast_from_mapping(copy.deepcopy(data) | {"fx": {"USD": "2"}}, reference) is None
    one = data | {"fx": {"USD": "1.000"}}
    assert_same(facts._fast_from_mapping(copy.deepcopy(one), reference), by_models(one))  # type: ignore[arg-type]
    # Made once per valuation currency; a currency not in the reference gets none.
    assert read_facts(copy.deepcopy(data), reference) == shipment
    assert reference.compiled.python["USD"] is own
    assert facts._compiled_for(reference, "XYZ", python=True) is None
    assert "XYZ" not in reference.compiled.python


def test_codes_of_another_form_are_never_accepted_by_a_compiled_validator() -> None:
    # The models refuse "us" (lowercase) even when the reference holds it; so must the
    # literal compiled from the reference.
    odd = FactsReference(
        currencies={"USD": 2, "usd": 2},
        countries=frozenset({"CN", "NO", "us"}),
        charge_types=frozenset({"freight", " ", "handling"}),
    )
    made = warmed(odd)
    data = one_currency()
    data["charges"] = [{"type": "freight", "amount": "1"}]
    assert_same(facts._fast_from_mapping(copy.deepcopy(data), made), by_models_with(data, odd))  # type: ignore[arg-type]
    for key, value in (
        ("destination", {"country": "us"}),
        ("charges", [{"type": " ", "amount": "1"}]),
    ):
        assert facts._fast_from_mapping(copy.deepcopy(data) | {key: value}, made) is None


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_the_compiled_road_accepts_only_what_the_models_accept(data: dict[str, Any]) -> None:
    for reference in (REFERENCE, SEED_REFERENCE):
        slow = by_models_with(data, reference)
        for road in both_roads(reference):
            fast = facts._fast_from_mapping(copy.deepcopy(data), road)
            if fast is not None:
                assert_same(fast, slow)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"__raw__{value}__"
    raise TypeError(value)


# Between JSON tokens: what JSON allows, and characters only Python calls whitespace.
SPACES = st.sampled_from([" ", "", "\n", "\t", "\r\n", " \x0c", "\xa0", "\u2028", "\x1c"])


@settings(max_examples=400, deadline=None)
@given(mutated(), st.booleans(), st.booleans(), SPACES, SPACES)
def test_json_text_gives_what_the_slow_road_gives(
    data: dict[str, Any], as_bytes: bool, repeat_a_key: bool, after_comma: str, after_colon: str
) -> None:
    try:
        text = json.dumps(data, default=_json_default, separators=(f",{after_comma}", ":"))
    except ValueError:
        return  # NaN has no JSON form without the slow road's own NaN handling
    text = text.replace('":', f'"{after_colon}:')
    # Decimals become raw JSON numbers: "1.10" stays the text 1.10.
    text = re.sub(r'"__raw__(.*?)__"', r"\1", text)
    if repeat_a_key:
        text = re.sub(r'"currency"(\s*):', r'"currency"\1: "EUR", "currency":', text, count=1)
    source: str | bytes = text.encode() if as_bytes else text
    slow = json_by_models(text)
    cold, warm = both_roads(REFERENCE)
    # JSON text is first tried with the validator of the last valuation currency read.
    warm.compiled.hint = data.get("currency") if isinstance(data.get("currency"), str) else "USD"
    for road in (cold, warm):
        fast = facts._fast_from_json(source, road)
        if fast is not None:
            assert_same(fast, slow)


@settings(max_examples=200, deadline=None)
@given(mutated())
def test_a_mapping_and_its_json_agree(data: dict[str, Any]) -> None:
    try:
        from_mapping: Shipment | FactsError = read_facts(copy.deepcopy(data), REFERENCE)
    except FactsError as error:
        from_mapping = error
    if isinstance(from_mapping, Shipment):
        text = re.sub(r'"__raw__(.*?)__"', r"\1", json.dumps(data, default=_json_default))
        assert read_facts(text.encode(), REFERENCE) == from_mapping


# --- valid facts of every shape: every road builds the models' Shipment ---------------

AMOUNTS = st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False).map(plain) | (
    st.integers(0, 10**15)
)


@st.composite
def valid_facts(draw: st.DrawFn) -> dict[str, Any]:
    """Facts the models accept against REFERENCE: the anchor harness's shape (ids,
    codes, one goods line, charges with text amounts, no currency written) and its
    variations (written and foreign currencies with their rates, optional fields)."""
    valuation = draw(st.sampled_from(["USD", "EUR", "JPY"]))
    others = draw(st.lists(st.sampled_from(["USD", "EUR", "CHF", "BHD"]), max_size=2))
    foreign = [code for code in others if code != valuation]
    currencies = st.sampled_from([valuation, *foreign])

    def currency_of(item: dict[str, Any]) -> dict[str, Any]:
        if draw(st.booleans()):
            item["currency"] = draw(currencies)
        return item

    goods = [
        currency_of(
            {
                "description": draw(st.sampled_from(["goods", "Laptops: 2 pallets"])),
                **draw(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "hs_code": st.sampled_from(["847130", "0101"]),
                            "category": st.sampled_from(["art", "electronics"]),
                            "quantity": AMOUNTS,
                            "value": AMOUNTS,
                        },
                    )
                ),
            }
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    charges = [
        currency_of(
            {
                "type": draw(st.sampled_from(sorted(REFERENCE.charge_types or ()))),
                "amount": draw(AMOUNTS),
            }
        )
        for _ in range(draw(st.integers(0, 6)))
    ]
    data: dict[str, Any] = {
        "id": draw(st.sampled_from(["A-000001", "SHP:7"])),
        "date": "2025-06-01",
        "currency": valuation,
        "mode": draw(st.sampled_from(["ocean", "air"])),
        "origin": {"country": draw(st.sampled_from(["CN", "US"]))},
        "destination": {"country": draw(st.sampled_from(["NO", "DE", "SG"]))},
        "invoice": currency_of({"amount": draw(AMOUNTS)}),
        "goods": goods,
        "charges": charges,
    }
    if draw(st.booleans()):
        data["duties"] = []
    rates = {code: draw(st.sampled_from(["1.0825", "0.0067", "3"])) for code in foreign}
    if draw(st.booleans()):
        rates[valuation] = "1"
    if rates or draw(st.booleans()):
        data["fx"] = rates
    if draw(st.booleans()):
        data["origin"]["port"] = "Shanghai"
    return data


@settings(max_examples=300, deadline=None)
@given(valid_facts())
def test_every_road_builds_the_models_shipment_from_valid_facts(data: dict[str, Any]) -> None:
    slow = by_models(data)
    assert slow is not None, "the generator made facts the models refuse"
    text = json.dumps(data)
    cold, warm = both_roads(REFERENCE)
    warm.compiled.hint = data["currency"]
    for road in (cold, warm):
        from_mapping = facts._fast_from_mapping(copy.deepcopy(data), road)
        from_json = facts._fast_from_json(text.encode(), road)
        # Every valid mapping and every JSON text without escapes takes a fast road.
        assert from_mapping is not None and from_json is not None
        assert_same(from_mapping, slow)
        assert_same(from_json, slow)
    written = [item.get("currency") for item in (data["invoice"], *data["goods"], *data["charges"])]
    if set(written) <= {None, data["currency"]}:
        # One currency: the reference's own validator alone builds it, no Python pass.
        own = facts._compiled_for(warm, data["currency"], python=True)
        assert own is not None
        assert_same(own.validate_python(copy.deepcopy(data)), slow)


def test_a_reference_copied_or_pickled_makes_its_own_validators_afresh() -> None:
    import pickle

    made = warmed(REFERENCE)
    for copied in (pickle.loads(pickle.dumps(made)), copy.deepcopy(made)):
        assert copied == made and copied.compiled.python == {}
        data = one_currency()
        for _ in range(facts._COMPILE_AFTER + 1):
            assert_same(read_facts(copy.deepcopy(data), copied), by_models(data))  # type: ignore[arg-type]
        assert copied.compiled.python["USD"] is not None


def test_a_reference_keeps_validators_for_a_few_currencies_only() -> None:
    codes = [f"X{a}{b}" for a in "ABCD" for b in "ABC"]  # more than _OWN_MAX
    many = FactsReference({code: 2 for code in codes}, REFERENCE.countries, None)
    for code in codes:
        data = one_currency() | {"currency": code}
        for _ in range(facts._COMPILE_AFTER):
            shipment = read_facts(copy.deepcopy(data), many)
            assert {c.currency for c in shipment.charges} == {code}
            assert_same(shipment, by_models_with(data, many))
    assert len(many.compiled.python) == facts._OWN_MAX < len(codes)


@settings(max_examples=300, deadline=None)
@given(
    whole=st.text("0123456789", min_size=1, max_size=AMOUNT.digits),
    fraction=st.text("0123456789", max_size=AMOUNT.places),
    number=st.integers(min_value=0, max_value=10**FX_RATE.digits * 10**8),
)
def test_the_fast_roads_read_numbers_exactly_as_decimal_does(
    whole: str, fraction: str, number: int
) -> None:
    # The compiled validators turn text and ints into numbers with a context's
    # create_decimal (faster than the Decimal type): the same digits and exponent, never
    # rounded, for anything within the widest bound (12 + 20 digits of an fx rate).
    text = whole + ("." + fraction if fraction else "")
    for given_ in (text, number):
        read, expected = facts._READING.create_decimal(given_), Decimal(given_)
        assert read.as_tuple() == expected.as_tuple(), given_
    assert facts._READING.prec > max(AMOUNT.digits + AMOUNT.places, FX_RATE.digits + FX_RATE.places)
