"""Shipments in Parquet: the documented schema, and exact reading and writing (pyarrow).

In: shipment facts as plain dicts (amounts as decimal strings or Decimal, as JSON Lines
bordereaux and `engine.corpus` give them) to write; a Parquet file or folder to read.
Out: a Parquet file in `SHIPMENTS`' schema; batch `Row`s (or plain fact dicts) read back,
ready for `engine.value` and for `tiv batch`'s row encoder. Both local `tiv batch` and
the Spark jobs read through `facts_of`, so a row means the same facts everywhere.

The schema (one column per top-level fact; nested facts as structs, lists of structs):

    id string, date date32, currency string, incoterm string, mode string,
    origin struct<country string, port string>, destination (the same),
    payment_method string, expected_transit_days int64,
    invoice struct<amount decimal(38,4), currency string>,
    goods list<struct<description, hs_code, quantity string, weight_kg string,
                      dimensions_cm struct<length, width, height string>,
                      value decimal(38,4), currency, category>>,
    charges list<struct<type string, amount decimal(38,4), currency string>>,
    duties  list<struct<type string, amount decimal(38,4), currency string>>,
    fx map<string, string>, sum_insured decimal(38,4), transit_countries list<string>

Money is decimal(38, 4): 4 places hold every ISO 4217 currency's minor units (JPY 0,
USD 2, KWD 3, CLF 4), and 34 integer digits any amount. One column holds amounts in
many currencies, so it cannot carry each one's own scale; instead a money amount is read
back at its currency's minor units whenever that loses no digit (USD `12.3400` reads as
`12.34`, JPY `1200.0000` as `1200`). That matters: a figure's written precision shows in
the trace and in duty estimates, and this makes a bordereau written at minor units (as
they are) value byte-identically from Parquet and from JSON Lines. An amount with more
than 4 decimals is refused when writing, never rounded.

Rates, quantities, weights and dimensions are decimal text: they have no natural scale
(a rate quotes six significant digits whether it is 25000 or 0.00004), and text keeps
them exactly as written. Tables that hold them as decimal or integer columns read too;
a binary float column is refused row by row (the facts reader refuses floats), with the
field's JSON path, never converted.

A null field is an absent fact. `duties` null means "not given" (estimated from country
rules where the destination has them); an empty list means "given as none".
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import FactsError, Location, Problem

MONEY = pa.decimal128(38, 4)
MONEY_PLACES = 4
TEXT = pa.string()

_PLACE = pa.struct([("country", TEXT), ("port", TEXT)])
_AMOUNT = pa.struct([("amount", MONEY), ("currency", TEXT)])
_LINE = pa.struct([("type", TEXT), ("amount", MONEY), ("currency", TEXT)])
_DIMENSIONS = pa.struct([("length", TEXT), ("width", TEXT), ("height", TEXT)])
_GOODS = pa.struct(
    [
        ("description", TEXT),
        ("hs_code", TEXT),
        ("quantity", TEXT),
        ("weight_kg", TEXT),
        ("dimensions_cm", _DIMENSIONS),
        ("value", MONEY),
        ("currency", TEXT),
        ("category", TEXT),
    ]
)

SHIPMENTS = pa.schema(
    [
        ("id", TEXT),
        ("date", pa.date32()),
        ("currency", TEXT),
        ("incoterm", TEXT),
        ("mode", TEXT),
        ("origin", _PLACE),
        ("destination", _PLACE),
        ("payment_method", TEXT),
        ("expected_transit_days", pa.int64()),
        ("invoice", _AMOUNT),
        ("goods", pa.list_(_GOODS)),
        ("charges", pa.list_(_LINE)),
        ("duties", pa.list_(_LINE)),
        ("fx", pa.map_(TEXT, TEXT)),
        ("sum_insured", MONEY),
        ("transit_countries", pa.list_(TEXT)),
    ]
)

# Where the money is, by field path pattern ("*" is any list element).
_MONEY_PATHS = (
    ("invoice", "amount"),
    ("goods", "*", "value"),
    ("charges", "*", "amount"),
    ("duties", "*", "amount"),
    ("sum_insured",),
)


# --- writing ------------------------------------------------------------------------

_STRING_ID = pa.string().id
_FIELDS: dict[pa.DataType, tuple[tuple[str, pa.DataType], ...]] = {}


def _fields_of(kind: pa.DataType) -> tuple[tuple[str, pa.DataType], ...]:
    # A struct's fields, read from pyarrow once: each read makes new Python objects.
    found = _FIELDS.get(kind)
    if found is None:
        found = _FIELDS[kind] = tuple((field.name, field.type) for field in kind)
    return found


def to_record(facts: Mapping[str, Any]) -> dict[str, Any]:
    """One shipment's facts as a record of `SHIPMENTS`; FactsError naming the path if
    they do not fit it (an unknown field, money with more than 4 decimals)."""
    problems: list[Problem] = []
    record = _fit(facts, pa.struct(list(SHIPMENTS)), "", problems)
    if problems:
        raise FactsError(problems)
    return record  # type: ignore[no-any-return]


def _fit(value: Any, kind: pa.DataType, path: str, problems: list[Problem]) -> Any:
    if value is None:
        return None
    if type(value) is str and kind.id == _STRING_ID:  # most values: text into text, as is
        return value
    where = Location(path=path)
    if pa.types.is_struct(kind):
        if not isinstance(value, Mapping):
            problems.append(Problem("parquet.type", "must be an object", where))
            return None
        fields = _fields_of(kind)
        for extra in sorted(set(value) - {name for name, _ in fields}):
            problems.append(
                Problem(
                    "parquet.field",
                    "no such field in the Parquet schema of shipments",
                    Location(path=f"{path}.{extra}" if path else extra),
                )
            )
        get = value.get
        prefix = f"{path}." if path else ""
        return {name: _fit(get(name), item, prefix + name, problems) for name, item in fields}
    if pa.types.is_map(kind):
        if not isinstance(value, Mapping):
            problems.append(Problem("parquet.type", "must be an object", where))
            return None
        return [
            (str(k), _fit(v, kind.item_type, f"{path}.{k}", problems)) for k, v in value.items()
        ]
    if pa.types.is_list(kind):
        if not isinstance(value, list | tuple):
            problems.append(Problem("parquet.type", "must be a list", where))
            return None
        return [_fit(v, kind.value_type, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if pa.types.is_decimal(kind):
        return _money(value, where, problems)
    if pa.types.is_date(kind):
        if isinstance(value, datetime.date):
            return value
        try:
            return datetime.date.fromisoformat(str(value))
        except ValueError:
            problems.append(Problem("parquet.date", "must be a date written YYYY-MM-DD", where))
            return None
    if pa.types.is_integer(kind):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(Problem("parquet.type", "must be a whole number", where))
        return None
    if isinstance(value, Decimal):
        return _plain(value)
    if isinstance(value, int | str) and not isinstance(value, bool):
        return str(value)
    problems.append(Problem("parquet.type", f"must be text, got {type(value).__name__}", where))
    return None


def _money(value: Any, where: Location, problems: list[Problem]) -> Decimal | None:
    if isinstance(value, float | bool):
        problems.append(
            Problem("parquet.money", "write money as a decimal string, not a number", where)
        )
        return None
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        problems.append(Problem("parquet.money", f"{value!r} is not a decimal number", where))
        return None
    if not amount.is_finite():
        problems.append(Problem("parquet.money", f"{value!r} is not a finite number", where))
        return None
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_PLACES:
        problems.append(
            Problem(
                "parquet.money",
                f"{_plain(amount)} has more than {MONEY_PLACES} decimals, more than any "
                "currency's minor units; the Parquet schema would have to round it",
                where,
            )
        )
        return None
    if amount.adjusted() >= 38 - MONEY_PLACES:
        problems.append(Problem("parquet.money", f"{_plain(amount)} is too large", where))
        return None
    return amount


def _plain(value: Decimal) -> str:
    return format(value, "f")


def write_shipments(
    facts: Iterable[Mapping[str, Any]], path: str | Path, *, rows_per_group: int = 10_000
) -> int:
    """Write shipments to one Parquet file in `SHIPMENTS`' schema; return how many.

    Row groups of `rows_per_group` shipments: Spark splits a Parquet file by row group,
    so smaller groups spread a file over more tasks (10,000 rows is about a second of
    valuing per core).

    Raises FactsError (naming the shipment's position and field) on the first shipment
    that does not fit the schema; nothing is left behind then (written to a temporary
    name, renamed when complete).
    """
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    count = 0
    try:
        with pq.ParquetWriter(partial, SHIPMENTS) as writer:
            batch: list[dict[str, Any]] = []
            for count, item in enumerate(facts, 1):
                try:
                    batch.append(to_record(item))
                except FactsError as error:
                    raise FactsError(
                        Problem(p.code, f"shipment {count}: {p.message}", p.location)
                        for p in error.problems
                    ) from None
                if len(batch) == rows_per_group:
                    writer.write_table(pa.Table.from_pylist(batch, SHIPMENTS))
                    batch = []
            if batch or count == 0:
                writer.write_table(pa.Table.from_pylist(batch, SHIPMENTS))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return count


# --- reading ------------------------------------------------------------------------


def facts_of(record: Mapping[str, Any], minor_units: Mapping[str, int] | None) -> dict[str, Any]:
    """A Parquet record (as pyarrow's `to_pylist` gives it) as shipment facts.

    Nulls become absent fields, maps become dicts, and with `minor_units` (currency ->
    decimal places, from the rules' reference data) money reads at its currency's minor
    units when no digit is lost (see the module doc)."""
    facts = _facts(record)
    if minor_units:
        _money_at_minor_units(facts, minor_units)
    return facts  # type: ignore[no-any-return]


def _facts(value: Any) -> Any:
    # Exact type checks first: pyarrow gives plain dicts and lists, and this runs for
    # every value of every row (an isinstance against the Mapping ABC cost a third of a
    # Spark task's time); other mappings and sequences take the general road.
    kind = type(value)
    if kind is dict:
        return {
            k: dict(v) if k == "fx" and type(v) is list else _facts(v)  # map: pairs
            for k, v in value.items()
            if v is not None
        }
    if kind is list:
        return [_facts(v) for v in value]
    if kind in _LEAVES:
        return value
    if isinstance(value, Mapping):
        return _facts(dict(value))
    if isinstance(value, list):
        return _facts(list(value))
    return value


_LEAVES = frozenset({str, Decimal, int, datetime.date, bool, bytes})


def _money_at_minor_units(facts: dict[str, Any], minor_units: Mapping[str, int]) -> None:
    valuation = facts.get("currency")
    invoice = facts.get("invoice")
    invoice_currency = valuation
    if type(invoice) is dict:
        invoice_currency = invoice.get("currency", valuation)
        _rescale(invoice, "amount", invoice_currency, minor_units)
    for name, field, inherited in (
        ("goods", "value", invoice_currency),
        ("charges", "amount", valuation),
        ("duties", "amount", valuation),
    ):
        items = facts.get(name)
        if type(items) is list:
            for item in items:
                if type(item) is dict:
                    _rescale(item, field, item.get("currency", inherited), minor_units)
    _rescale(facts, "sum_insured", valuation, minor_units)


def _rescale(holder: dict[str, Any], key: str, currency: Any, minor: Mapping[str, int]) -> None:
    amount = holder.get(key)
    if type(amount) is not Decimal or type(currency) is not str:
        return
    places = minor.get(currency)
    if places is None or not amount.is_finite():
        return
    quantum = _QUANTA.get(places)
    if quantum is None:
        quantum = _QUANTA.setdefault(places, Decimal(1).scaleb(-places))
    at_places = amount.quantize(quantum)
    if at_places == amount:
        holder[key] = at_places
    else:  # more digits than the currency has: keep them all, drop only trailing zeros
        holder[key] = amount.normalize()


_QUANTA: dict[int, Decimal] = {}  # minor units -> 10 ** -units, made once


def _files(path: Path) -> list[Path]:
    if path.is_dir():  # a folder written by Spark: its part files, in name order
        return sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
    return [path]


def count_records(path: str | Path) -> int:
    """Rows in a Parquet file or folder, from the footers alone."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in _files(Path(path)))


def read_records(path: str | Path, *, batch_size: int = 2048) -> Iterator[dict[str, Any]]:
    """Every record of a Parquet file (or a folder of part files, in name order)."""
    for file in _files(Path(path)):
        handle = pq.ParquetFile(file)
        for batch in handle.iter_batches(batch_size=batch_size):
            yield from batch.to_pylist()


def read_shipments(
    path: str | Path, minor_units: Mapping[str, int] | None = None
) -> Iterator[dict[str, Any]]:
    """Every shipment's facts from a Parquet file or folder, in order."""
    for record in read_records(path):
        yield facts_of(record, minor_units)


def batch_rows(path: str | Path, minor_units: Mapping[str, int] | None = None) -> Iterator[Any]:
    """`tiv batch` rows of a Parquet input: row N is the file's Nth record (1-based), and
    its `line` is N too (a Parquet file has no lines; error rows point at the record)."""
    from engine.batch.rows import Row

    for number, record in enumerate(read_records(path), 1):
        yield Row(number, number, facts_of(record, minor_units))


__all__ = [
    "MONEY",
    "SHIPMENTS",
    "batch_rows",
    "count_records",
    "facts_of",
    "read_records",
    "read_shipments",
    "to_record",
    "write_shipments",
]
