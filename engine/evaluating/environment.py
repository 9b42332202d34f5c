"""Turn validated shipment facts into the environment rule files read.

In: a `Shipment`, the valuation currency's minor units, a tracer. Out: a dict from
dotted names (`engine.names`) to exact values, every foreign amount converted to the
valuation currency with the shipment's own `fx` (and each conversion traced), plus
the per-line environments of charges and goods for `for:` rules.

Conversions are exact products and are not rounded: rounding happens only where a
pack's formula says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from engine.compiling.formulas import CURRENCY_PLACES, MISSING
from engine.errors import EvaluationError, Problem
from engine.errors import Location as Loc
from engine.explaining.trace import Tracer
from engine.facts import GoodsItem, Shipment


class Line(NamedTuple):
    """One charge or goods line: its own names (`charge.*`) and where it came from."""

    id: str
    path: str  # JSON path in the facts, e.g. charges[2]
    env: dict[str, Any]


class Environment(NamedTuple):
    shipment: dict[str, Any]
    charges: tuple[Line, ...]
    goods: tuple[Line, ...]


def convert(
    shipment: Shipment, amount: Decimal, currency: str | None, path: str, tracer: Tracer
) -> Decimal:
    if currency is None or currency == shipment.currency:
        return amount
    rate = shipment.fx.get(currency)
    if rate is None:  # facts validation catches this; keep evaluation honest anyway
        raise EvaluationError(
            Problem("fx.missing", f"no fx rate for {currency}; add fx.{currency}", Loc(path=path))
        )
    value = amount * rate
    if tracer.enabled:
        tracer.step(*convert_step(path, amount, currency, rate, value))
    return value


def convert_step(
    path: str, amount: Decimal, currency: str, rate: Decimal, value: Decimal
) -> tuple[str, str, str, dict[str, Any], Decimal, str]:
    """The trace step of a conversion (kind, name, expression, inputs, value, source), as
    `convert` records it and the straight line's renderer writes it afterwards."""
    return (
        "convert",
        path,
        f"{path} × fx.{currency}",
        {path: amount, f"fx.{currency}": rate},
        value,
        "facts",
    )


def build_environment(
    shipment: Shipment,
    places: int,
    charge_groups: Mapping[str, str | None],
    tracer: Tracer,
    incoterms: Mapping[str, tuple[str, ...]] | None = None,
) -> Environment:
    valuation_currency = shipment.currency
    invoice = shipment.invoice
    invoice_currency = invoice.currency
    invoice_amount = invoice.amount
    if invoice_currency is not None and invoice_currency != valuation_currency:
        invoice_amount = convert(
            shipment, invoice_amount, invoice_currency, "invoice.amount", tracer
        )
    incoterm = shipment.incoterm
    days = shipment.expected_transit_days
    insured = shipment.sum_insured
    transit = shipment.transit_countries
    charges_in = shipment.charges
    goods_in = shipment.goods
    origin = shipment.origin
    destination = shipment.destination
    env: dict[str, Any] = {
        CURRENCY_PLACES: places,
        "shipment.id": shipment.id,
        "shipment.date": shipment.date,
        "shipment.currency": valuation_currency,
        "shipment.incoterm": incoterm if incoterm else MISSING,
        "shipment.mode": shipment.mode,
        "shipment.origin.country": origin.country,
        "shipment.origin.port": origin.port or MISSING,
        "shipment.destination.country": destination.country,
        "shipment.destination.port": destination.port or MISSING,
        "shipment.payment_method": shipment.payment_method,
        "shipment.expected_transit_days": _count(days) if days is not None else MISSING,
        "shipment.invoice.amount": invoice_amount,
        "shipment.invoice.currency": invoice_currency or valuation_currency,
        "shipment.sum_insured": insured if insured is not None else MISSING,
        "shipment.transit_countries": tuple(transit) if transit is not None else MISSING,
        "shipment.goods.count": _count(len(goods_in)),
        "shipment.invoice_includes": (
            tuple((incoterms or {}).get(incoterm, ())) if incoterm else MISSING
        ),
        "shipment.charges.count": _count(len(charges_in)),
    }

    if shipment.duties is None:
        env.update(_NO_DUTIES)
    elif not shipment.duties:
        env.update(_NONE_DECLARED)
    else:
        totals = {"import_duty": Decimal(0), "tax": Decimal(0), "customs_fee": Decimal(0)}
        for index, duty in enumerate(shipment.duties):
            path = f"duties[{index}].amount"
            totals[duty.type] += convert(shipment, duty.amount, duty.currency, path, tracer)
        for key, total in totals.items():
            env[f"declared_duties.{key}"] = total
        env["declared_duties.total"] = sum(totals.values(), Decimal(0))

    env["shipment.goods.main_category"] = _main_category(goods_in) if goods_in else MISSING

    charges: list[Line] = []
    append = charges.append
    groups_get = charge_groups.get
    for index, charge in enumerate(charges_in):
        path = _CHARGE_PATHS[index] if index < len(_CHARGE_PATHS) else f"charges[{index}]"
        currency = charge.currency
        amount = charge.amount
        if currency is None or currency == valuation_currency:
            currency = valuation_currency
        else:
            amount = convert(shipment, amount, currency, f"{path}.amount", tracer)
        kind = charge.type
        group = groups_get(kind)
        append(
            _line(
                _CHARGE_IDS[index] if index < len(_CHARGE_IDS) else f"charge:{index}",
                path,
                {
                    "charge.type": kind,
                    "charge.group": group if group else MISSING,
                    "charge.amount": amount,
                    "charge.currency": currency,
                },
            )
        )

    goods: list[Line] = []
    for index, item in enumerate(goods_in):
        path = _GOODS_PATHS[index] if index < len(_GOODS_PATHS) else f"goods[{index}]"
        value: Any = item.value
        if value is None:
            value = MISSING
        elif item.currency is not None and item.currency != valuation_currency:
            value = convert(shipment, value, item.currency, f"{path}.value", tracer)
        quantity, weight = item.quantity, item.weight_kg
        goods.append(
            _line(
                _GOODS_IDS[index] if index < len(_GOODS_IDS) else f"goods:{index}",
                path,
                {
                    "goods.description": item.description,
                    "goods.hs_code": item.hs_code or MISSING,
                    "goods.category": item.category or MISSING,
                    "goods.value": value,
                    "goods.quantity": quantity if quantity is not None else MISSING,
                    "goods.weight_kg": weight if weight is not None else MISSING,
                },
            )
        )
    return Environment(env, tuple(charges), tuple(goods))


def _line(id: str, path: str, env: dict[str, Any]) -> Line:
    # NamedTuple's own __new__ is a Python function; the tuple is made directly.
    return _new_tuple(Line, (id, path, env))  # type: ignore[no-any-return]


_new_tuple: Any = tuple.__new__
_NO_DUTIES = {
    f"declared_duties.{key}": MISSING for key in ("total", "import_duty", "tax", "customs_fee")
}
# Duties declared as an empty list: every total is zero (`sum` of nothing is Decimal(0)).
_NONE_DECLARED = {
    f"declared_duties.{key}": Decimal(0) for key in ("import_duty", "tax", "customs_fee", "total")
}
# Counts are numbers (Decimal) to formulas; the usual ones are made once.
_COUNTS = tuple(Decimal(n) for n in range(256))


def _count(n: int) -> Decimal:
    return _COUNTS[n] if 0 <= n < len(_COUNTS) else Decimal(n)


# The usual line ids and paths, made once rather than per valuation.
_CHARGE_PATHS = tuple(f"charges[{index}]" for index in range(64))
_CHARGE_IDS = tuple(f"charge:{index}" for index in range(64))
_GOODS_PATHS = tuple(f"goods[{index}]" for index in range(64))
_GOODS_IDS = tuple(f"goods:{index}" for index in range(64))


def _main_category(goods: Sequence[GoodsItem]) -> Any:
    """The category of the most valuable goods line; the first categorised line without values.

    Values are compared in their own currencies only when they share one; otherwise the
    first categorised line is taken, since converting here would trace a step that no
    figure uses.
    """
    lines = [item for item in goods if item.category]
    if not lines:
        return MISSING
    if len(lines) == 1:
        return lines[0].category
    currencies = {item.currency for item in lines}
    if len(currencies) == 1 and all(item.value is not None for item in lines):
        return max(lines, key=lambda item: item.value or Decimal(0)).category
    return lines[0].category
