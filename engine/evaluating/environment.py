"""Turn validated shipment facts into the environment rule files read.

In: a `Shipment`, the valuation currency's minor units, a tracer. Out: a dict from
dotted names (`engine.names`) to exact values, every foreign amount converted to the
valuation currency with the shipment's own `fx` (and each conversion traced), plus
the per-line environments of charges and goods for `for:` rules.

Conversions are exact products and are not rounded: rounding happens only where a
pack's formula says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from engine.compiling.formulas import CURRENCY_PLACES, MISSING
from engine.errors import EvaluationError, Problem
from engine.errors import Location as Loc
from engine.explaining.trace import Tracer
from engine.facts import Shipment


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
        tracer.step(
            "convert",
            path,
            f"{path} × fx.{currency}",
            {path: amount, f"fx.{currency}": rate},
            value,
            "facts",
        )
    return value


def build_environment(
    shipment: Shipment,
    places: int,
    charge_groups: dict[str, str | None],
    tracer: Tracer,
    incoterms: Mapping[str, tuple[str, ...]] | None = None,
) -> Environment:
    env: dict[str, Any] = {
        CURRENCY_PLACES: places,
        "shipment.id": shipment.id,
        "shipment.date": shipment.date,
        "shipment.currency": shipment.currency,
        "shipment.incoterm": shipment.incoterm if shipment.incoterm else MISSING,
        "shipment.mode": shipment.mode,
        "shipment.origin.country": shipment.origin.country,
        "shipment.origin.port": shipment.origin.port or MISSING,
        "shipment.destination.country": shipment.destination.country,
        "shipment.destination.port": shipment.destination.port or MISSING,
        "shipment.payment_method": shipment.payment_method,
        "shipment.expected_transit_days": (
            Decimal(shipment.expected_transit_days)
            if shipment.expected_transit_days is not None
            else MISSING
        ),
        "shipment.invoice.amount": convert(
            shipment, shipment.invoice.amount, shipment.invoice.currency, "invoice.amount", tracer
        ),
        "shipment.invoice.currency": shipment.invoice.currency or shipment.currency,
        "shipment.sum_insured": (
            shipment.sum_insured if shipment.sum_insured is not None else MISSING
        ),
        "shipment.transit_countries": (
            tuple(shipment.transit_countries) if shipment.transit_countries is not None else MISSING
        ),
        "shipment.goods.count": Decimal(len(shipment.goods)),
        "shipment.invoice_includes": (
            tuple((incoterms or {}).get(shipment.incoterm, ())) if shipment.incoterm else MISSING
        ),
        "shipment.charges.count": Decimal(len(shipment.charges)),
    }

    if shipment.duties is None:
        for key in ("total", "import_duty", "tax", "customs_fee"):
            env[f"declared_duties.{key}"] = MISSING
    else:
        totals = {"import_duty": Decimal(0), "tax": Decimal(0), "customs_fee": Decimal(0)}
        for index, duty in enumerate(shipment.duties):
            path = f"duties[{index}].amount"
            totals[duty.type] += convert(shipment, duty.amount, duty.currency, path, tracer)
        for key, value in totals.items():
            env[f"declared_duties.{key}"] = value
        env["declared_duties.total"] = sum(totals.values(), Decimal(0))

    env["shipment.goods.main_category"] = _main_category(shipment)

    charges = []
    valuation_currency = shipment.currency
    for index, charge in enumerate(shipment.charges):
        path = _CHARGE_PATHS[index] if index < len(_CHARGE_PATHS) else f"charges[{index}]"
        currency = charge.currency
        amount = (
            charge.amount
            if currency is None or currency == valuation_currency
            else convert(shipment, charge.amount, currency, f"{path}.amount", tracer)
        )
        group = charge_groups.get(charge.type)
        charges.append(
            Line(
                _CHARGE_IDS[index] if index < len(_CHARGE_IDS) else f"charge:{index}",
                path,
                {
                    "charge.type": charge.type,
                    "charge.group": group if group else MISSING,
                    "charge.amount": amount,
                    "charge.currency": currency or valuation_currency,
                },
            )
        )

    goods = []
    for index, item in enumerate(shipment.goods):
        path = f"goods[{index}]"
        value = (
            convert(shipment, item.value, item.currency, f"{path}.value", tracer)
            if item.value is not None
            else MISSING
        )
        goods.append(
            Line(
                f"goods:{index}",
                path,
                {
                    "goods.description": item.description,
                    "goods.hs_code": item.hs_code or MISSING,
                    "goods.category": item.category or MISSING,
                    "goods.value": value,
                    "goods.quantity": item.quantity if item.quantity is not None else MISSING,
                    "goods.weight_kg": item.weight_kg if item.weight_kg is not None else MISSING,
                },
            )
        )
    return Environment(env, tuple(charges), tuple(goods))


# The usual line ids and paths, made once rather than per valuation.
_CHARGE_PATHS = tuple(f"charges[{index}]" for index in range(64))
_CHARGE_IDS = tuple(f"charge:{index}" for index in range(64))


def _main_category(shipment: Shipment) -> Any:
    """The category of the most valuable goods line; the first categorised line without values.

    Values are compared in their own currencies only when they share one; otherwise the
    first categorised line is taken, since converting here would trace a step that no
    figure uses.
    """
    lines = [item for item in shipment.goods if item.category]
    if not lines:
        return MISSING
    currencies = {item.currency for item in lines}
    if len(currencies) == 1 and all(item.value is not None for item in lines):
        return max(lines, key=lambda item: item.value or Decimal(0)).category
    return lines[0].category
