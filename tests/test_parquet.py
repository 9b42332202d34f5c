"""Parquet shipments: the schema holds money exactly, and a bordereau values the same
from Parquet as from JSON Lines (local `tiv batch`)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import FactsError
from engine.batch import BatchOptions, run_batch
from engine.batch.parquet import MONEY, SHIPMENTS, facts_of, read_shipments, write_shipments
from engine.compliance.corpus import generate

ROOT = Path(__file__).resolve().parent.parent
MINOR = {"JPY": 0, "USD": 2, "KWD": 3, "CLF": 4}


def _shipment(currency: str, amount: str, charge: str) -> dict[str, object]:
    return {
        "id": "P-1",
        "date": "2025-03-01",
        "currency": currency,
        "mode": "ocean",
        "origin": {"country": "CN"},
        "destination": {"country": "US"},
        "invoice": {"amount": amount},
        "charges": [{"type": "ocean_freight", "amount": charge}],
    }


@st.composite
def _money(draw: st.DrawFn) -> tuple[str, Decimal]:
    currency = draw(st.sampled_from(sorted(MINOR)))
    units = draw(st.integers(min_value=0, max_value=10**20))
    return currency, Decimal(units).scaleb(-MINOR[currency])


@settings(max_examples=60, deadline=None)
@given(invoice=_money(), charge=st.integers(min_value=0, max_value=10**12))
def test_money_round_trips_exactly_at_each_currency_scale(
    tmp_path_factory: pytest.TempPathFactory, invoice: tuple[str, Decimal], charge: int
) -> None:
    currency, amount = invoice
    charge_amount = Decimal(charge).scaleb(-MINOR[currency])
    path = tmp_path_factory.mktemp("pq") / "s.parquet"
    write_shipments([_shipment(currency, str(amount), str(charge_amount))], path)
    assert pq.read_schema(path).field("invoice").type.field("amount").type == MONEY
    (back,) = read_shipments(path, MINOR)
    # Same value and same written form (exponent): JPY 1200 stays 1200, not 1200.0000.
    assert str(back["invoice"]["amount"]) == str(amount)
    assert str(back["charges"][0]["amount"]) == str(charge_amount)
    assert back["date"].isoformat() == "2025-03-01"
    assert "duties" not in back and "fx" not in back  # null: an absent fact


def test_digits_beyond_minor_units_are_kept_and_trailing_zeros_dropped() -> None:
    # USD has 2 places: 12.3456 keeps all 4; 12.3000 reads 12.30 (its minor units).
    record = {"currency": "USD", "invoice": {"amount": Decimal("12.3456")}}
    assert facts_of(record, MINOR)["invoice"]["amount"] == Decimal("12.3456")
    record = {"currency": "USD", "invoice": {"amount": Decimal("12.3000")}}
    assert str(facts_of(record, MINOR)["invoice"]["amount"]) == "12.30"
    # Charges inherit the valuation currency, goods the invoice's: JPY 5.0000 -> 5.
    record = {
        "currency": "USD",
        "invoice": {"amount": Decimal("1.0000"), "currency": "JPY"},
        "goods": [{"description": "x", "value": Decimal("5.0000")}],
        "charges": [{"type": "t", "amount": Decimal("7.5000")}],
    }
    facts = facts_of(record, MINOR)
    assert str(facts["goods"][0]["value"]) == "5"
    assert str(facts["charges"][0]["amount"]) == "7.50"


def test_duties_none_and_not_given_stay_apart(tmp_path: Path) -> None:
    given_none = {**_shipment("USD", "10.00", "1.00"), "duties": []}
    not_given = _shipment("USD", "10.00", "1.00")
    path = tmp_path / "d.parquet"
    write_shipments([given_none, not_given], path)
    first, second = read_shipments(path, MINOR)
    assert first["duties"] == [] and "duties" not in second


def test_writing_refuses_what_it_would_have_to_round_or_drop(tmp_path: Path) -> None:
    with pytest.raises(FactsError) as caught:
        write_shipments([_shipment("USD", "1.123456", "1")], tmp_path / "x.parquet")
    assert caught.value.problems[0].location.path == "invoice.amount"
    assert "more than 4 decimals" in caught.value.problems[0].message
    with pytest.raises(FactsError) as caught:
        write_shipments([{**_shipment("USD", "1", "1"), "colour": "red"}], tmp_path / "y.parquet")
    assert caught.value.problems[0].location.path == "colour"
    assert not (tmp_path / "x.parquet").exists()  # nothing half-written


def test_a_corpus_values_byte_identically_from_parquet_and_jsonl(tmp_path: Path) -> None:
    shipments = list(generate(300, seed=5))
    jsonl, parquet = tmp_path / "c.jsonl", tmp_path / "c.parquet"
    jsonl.write_text("".join(json.dumps(s) + "\n" for s in shipments), encoding="utf-8")
    assert write_shipments(shipments, parquet) == 300
    assert pq.read_schema(parquet) == SHIPMENTS
    outputs = []
    for source in (jsonl, parquet):
        out = tmp_path / f"{source.suffix[1:]}.out.jsonl"
        summary = run_batch(ROOT, BatchOptions(input=source, output=out, policy="standard"))
        assert (summary.rows, summary.failed) == (300, 0)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_a_bad_parquet_row_is_an_error_row_naming_the_field(tmp_path: Path) -> None:
    good = _shipment("USD", "100.00", "10.00")
    bad = {**_shipment("USD", "100.00", "10.00"), "currency": "usd"}
    path = tmp_path / "b.parquet"
    write_shipments([good, bad], path)
    out = tmp_path / "out.jsonl"
    summary = run_batch(ROOT, BatchOptions(input=path, output=out, policy="standard"))
    assert (summary.rows, summary.failed) == (2, 1)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert "valuation" in rows[0]
    assert rows[1]["row"] == 2 and rows[1]["line"] == 2
    assert rows[1]["error"]["problems"][0]["path"] == "currency"
