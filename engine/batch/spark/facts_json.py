"""Parquet shipments as facts JSON text, made by Spark on the JVM rather than in Python.

In: a DataFrame in the Parquet schema of shipments (`engine.batch.parquet.SHIPMENTS`,
every column of it or some) and the currencies' minor units. Out: the same DataFrame
with the shipment columns replaced by one `facts` column of JSON text, the very facts
`engine.batch.parquet.facts_of` makes from a record: nulls left out, the `fx` map an
object, dates as YYYY-MM-DD, and money as decimal text at its currency's minor units
when that loses no digit (else with its trailing zeros dropped), inheriting currencies
as `facts_of` does. So a task's rows take the road JSON Lines rows take, and no Python
object is made per value (reading nested Arrow into Python objects cost a fifth of a
task's time, more than Spark's own JSON writer).

Any other schema (another column, another type) gives None: the caller reads Arrow in
Python then, as `facts_of` does, whatever the table holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.batch.parquet import MONEY, SHIPMENTS
from engine.batch.spark.columns import FACTS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_KEPT = ("row", "line")  # batch's numbering columns, when the input has them
_MONEY = f"decimal({MONEY.precision},{MONEY.scale})"  # decimal(38,4)


def facts_as_json(
    df: DataFrame, minor_units: Mapping[str, int], keys: tuple[str, ...] = ()
) -> DataFrame | None:
    """`df` with its shipment columns as one `facts` column of JSON text, or None when
    they are not exactly (a subset of) the Parquet schema of shipments."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_type

    others = {*_KEPT, *(k for k in keys if k not in SHIPMENTS.names)}  # not facts
    shipment = [name for name in df.columns if name not in others]
    if not shipment:
        return None
    for name in shipment:
        if name not in SHIPMENTS.names:
            return None
        wanted = from_arrow_type(SHIPMENTS.field(name).type).simpleString()
        if df.schema[name].dataType.simpleString() != wanted:
            return None

    def money(amount: Column, currency: Column) -> Column:
        return _money_text(amount, currency, minor_units)

    present = set(shipment)
    currency = F.col("currency") if "currency" in present else F.lit(None).cast("string")
    invoice_currency = (
        F.coalesce(F.col("invoice.currency"), currency) if "invoice" in present else currency
    )
    columns: dict[str, Column] = {name: F.col(name) for name in shipment}
    if "invoice" in present:
        columns["invoice"] = F.col("invoice").withField(
            "amount", money(F.col("invoice.amount"), invoice_currency)
        )
    if "goods" in present:
        columns["goods"] = F.transform(
            "goods",
            lambda g: g.withField(
                "value", money(g["value"], F.coalesce(g["currency"], invoice_currency))
            ),
        )
    for name in ("charges", "duties"):
        if name in present:
            columns[name] = F.transform(
                name,
                lambda c: c.withField(
                    "amount", money(c["amount"], F.coalesce(c["currency"], currency))
                ),
            )
    if "sum_insured" in present:
        columns["sum_insured"] = money(F.col("sum_insured"), currency)
    facts = F.to_json(F.struct(*(columns[name].alias(name) for name in shipment)))
    kept = [F.col(name) for name in (*_KEPT, *keys) if name in df.columns]
    return df.select(*kept, facts.alias(FACTS))


def _money_text(amount: Column, currency: Column, minor_units: Mapping[str, int]) -> Column:
    """decimal(38,4) as `facts_of` reads it: at the currency's minor units when no digit
    is lost (USD 12.3400 -> "12.34"), else without trailing zeros (12.3450 -> "12.345");
    as written when the currency is unknown (the facts reader names it then)."""
    from pyspark.sql import functions as F

    # The currency's minor units: one set per number of places, tested as hash sets
    # (a map literal is searched key by key, for every amount of every row).
    by_places: dict[int, list[str]] = {}
    for code, units in sorted(minor_units.items()):
        by_places.setdefault(units, []).append(code)
    places: Column = F.lit(None).cast("int")
    for units, codes in sorted(by_places.items(), key=lambda item: len(item[1])):
        places = F.when(currency.isin(codes), units).otherwise(places)
    written = amount.cast("string")
    trimmed = F.regexp_replace(F.regexp_replace(written, "0+$", ""), r"\.$", "")
    text = F.when(places.isNull(), written)
    for scale in sorted(set(minor_units.values())):
        at_scale = amount.cast(f"decimal(38,{scale})")
        # Compared at the schema's own scale: Spark would compare the two at its choice.
        exact = at_scale.cast(_MONEY) == amount
        text = text.when((places == scale) & exact, at_scale.cast("string"))
    return F.when(amount.isNull(), None).otherwise(text.otherwise(trimmed))
