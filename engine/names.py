"""The names formulas and conditions can read, and their types.

Facts appear under `shipment.*`; the current line of a `for: charge` or `for: goods`
rule under `charge.*` or `goods.*`; sums of counted charges under `charges.*`; the
declared duty lines under `declared_duties.*`. Every amount a rule file sees is
already converted to the valuation currency (the conversion is a traced step).
Parameters and formulas are added per pack by the compiler.

This module declares the names; `engine.evaluating.environment` fills them in, and
tests/test_names.py checks that the two agree.
"""

from __future__ import annotations

from engine.compiling.formulas import BOOL, DATE, LIST, NUMBER, TEXT, Symbol

SHIPMENT: dict[str, Symbol] = {
    "shipment.id": Symbol(TEXT),
    "shipment.date": Symbol(DATE),
    "shipment.currency": Symbol(TEXT),
    "shipment.incoterm": Symbol(TEXT, optional=True),
    "shipment.mode": Symbol(TEXT),
    "shipment.origin.country": Symbol(TEXT),
    "shipment.origin.port": Symbol(TEXT, optional=True),
    "shipment.destination.country": Symbol(TEXT),
    "shipment.destination.port": Symbol(TEXT, optional=True),
    "shipment.payment_method": Symbol(TEXT),
    "shipment.expected_transit_days": Symbol(NUMBER, optional=True),
    "shipment.invoice.amount": Symbol(NUMBER),
    "shipment.invoice.currency": Symbol(TEXT),
    "shipment.sum_insured": Symbol(NUMBER, optional=True),
    "shipment.transit_countries": Symbol(LIST, optional=True, element=TEXT),
    "shipment.goods.count": Symbol(NUMBER),
    # The category of the goods line with the largest value (the first, without values).
    "shipment.goods.main_category": Symbol(TEXT, optional=True),
    # What the Incoterm puts in the invoice price (rules/reference/incoterms.yaml):
    # main_carriage, insurance, destination, import_duties.
    "shipment.invoice_includes": Symbol(LIST, optional=True, element=TEXT),
    "shipment.charges.count": Symbol(NUMBER),
}

DECLARED_DUTIES: dict[str, Symbol] = {
    # Absent when the shipment has no `duties` field; 0 when it declares an empty list.
    "declared_duties.total": Symbol(NUMBER, optional=True),
    "declared_duties.import_duty": Symbol(NUMBER, optional=True),
    "declared_duties.tax": Symbol(NUMBER, optional=True),
    "declared_duties.customs_fee": Symbol(NUMBER, optional=True),
}

DUTY_RULES: dict[str, Symbol] = {
    # Whether rules/countries/ has published rules for the destination on the shipment date.
    "duty_rules.available": Symbol(BOOL),
}

CHARGE: dict[str, Symbol] = {
    "charge.type": Symbol(TEXT),
    "charge.group": Symbol(TEXT, optional=True),
    "charge.amount": Symbol(NUMBER),
    "charge.currency": Symbol(TEXT),
}

GOODS: dict[str, Symbol] = {
    "goods.description": Symbol(TEXT),
    "goods.hs_code": Symbol(TEXT, optional=True),
    "goods.category": Symbol(TEXT, optional=True),
    "goods.value": Symbol(NUMBER, optional=True),
    "goods.quantity": Symbol(NUMBER, optional=True),
    "goods.weight_kg": Symbol(NUMBER, optional=True),
}

LOSS: dict[str, Symbol] = {
    # Claims formulas only: what was lost.
    "loss.kind": Symbol(TEXT),  # "total" | "partial"
    "loss.damage_percent": Symbol(NUMBER, optional=True),
    "loss.gross_sound_value": Symbol(NUMBER, optional=True),
    "loss.gross_damaged_value": Symbol(NUMBER, optional=True),
}

# The names that hold codes, and the kind of code each holds (for lists: each item's).
# A literal compared with one of them, or listed for it, must be a value of that kind:
# engine.compiling.vocabulary checks it at load against the reference data.
CODES: dict[str, str] = {
    "shipment.currency": "currency",
    "shipment.incoterm": "incoterm",
    "shipment.mode": "mode",
    "shipment.origin.country": "country",
    "shipment.destination.country": "country",
    "shipment.payment_method": "payment_method",
    "shipment.invoice.currency": "currency",
    "shipment.transit_countries": "country",
    "shipment.goods.main_category": "goods_category",
    "shipment.invoice_includes": "cost",
    "charge.type": "charge_type",
    "charge.group": "charge_group",
    "charge.currency": "currency",
    "goods.category": "goods_category",
}

# Functions whose arguments or result are codes: name -> (each argument's kind, result's).
FUNCTION_CODES: dict[str, tuple[tuple[str | None, ...], str | None]] = {
    "region": (("country",), "region"),
    "from_currency": ((None, "currency"), None),
}

SCOPES: dict[str, dict[str, Symbol]] = {"shipment": {}, "charge": CHARGE, "goods": GOODS}

# Namespaces a pack may not reuse as a parameter or formula name.
RESERVED = frozenset(
    {
        "shipment",
        "loss",
        "lookup",
        "region",
        "overlaps",
        "from_currency",
        "charge",
        "charges",
        "goods",
        "declared_duties",
        "exists",
        "round",
        "min",
        "max",
        "sum",
        "abs",
        "true",
        "false",
    }
)


def charge_symbols(groups: list[str], types: list[str]) -> dict[str, Symbol]:
    """`charges.<group>`, `charges.<type>` and `charges.total`: sums of counted charges."""
    names = ["total", *groups, *types]
    return {f"charges.{name}": Symbol(NUMBER) for name in dict.fromkeys(names)}
