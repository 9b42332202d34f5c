"""Which figures of a trace are money and which are plain numbers (rates, factors, days).

In: formulas as (name, expression text) in the order they run, and what is already known
about names they read. Out: for each formula name, whether its value is an amount in the
valuation currency. Text output puts the currency only on amounts: `0.0032` is a rate,
not 0.0032 USD.

Nothing in a rule file says which figure is money, so it is worked out from the
expressions, as a physicist checks units: each value has a power of money (an amount 1,
a rate 0, an amount × amount 2). Amounts come from the facts (`shipment.invoice.amount`,
`charges.*`, ...), `from_currency` and `estimate_duties`; `*` adds powers, `/` subtracts
them; `+`, `-`, `if`/`else`, `min`, `max`, `sum`, `round` and `abs` keep the power of
their operands (a bare literal takes its partner's: `max(premium, 0)` is money). Table
lookups and parameters are plain numbers. Only what is displayed depends on this.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from engine.compiling.expressions import (
    Binary,
    Call,
    Compare,
    Expr,
    IfElse,
    Logic,
    Name,
    Num,
    Unary,
    parse,
)
from engine.errors import Location

# Facts that are amounts in the valuation currency (converted before any formula runs).
_MONEY_FACTS = frozenset(
    {
        "shipment.invoice.amount",
        "shipment.sum_insured",
        "charge.amount",
        "goods.value",
        "loss.gross_sound_value",
        "loss.gross_damaged_value",
    }
)
_MONEY_PREFIXES = ("charges.", "declared_duties.")
_MONEY_FUNCTIONS = frozenset({"from_currency", "estimate_duties"})
_PLAIN_FUNCTIONS = frozenset({"lookup"})
_NOWHERE = Location()

# The power of money of a value; None for a bare literal, which fits either.
Power = int | None


def money_names(
    formulas: Iterable[tuple[str, str]], known: Mapping[str, bool] | None = None
) -> dict[str, bool]:
    """Whether each formula's value is an amount, `known` (name -> is money) included."""
    powers: dict[str, int] = {name: int(money) for name, money in (known or {}).items()}
    for name, text in formulas:
        tree = _parsed(text)
        powers[name] = (_power(tree, powers) or 0) if tree is not None else 0
    return {name: power == 1 for name, power in powers.items()}


def is_money_name(name: str, names: Mapping[str, bool]) -> bool:
    """Whether a name a formula reads is an amount: a formula's, or a fact's."""
    found = names.get(name)
    if found is not None:
        return found
    return name in _MONEY_FACTS or name.startswith(_MONEY_PREFIXES)


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> Expr | None:
    tree, _ = parse(text, _NOWHERE)
    return tree


def _power(node: Expr, powers: Mapping[str, int]) -> Power:
    if isinstance(node, Num):
        return None
    if isinstance(node, Name):
        dotted = node.dotted
        if dotted in powers:
            return powers[dotted]
        return 1 if dotted in _MONEY_FACTS or dotted.startswith(_MONEY_PREFIXES) else 0
    if isinstance(node, Unary):
        return _power(node.operand, powers) if node.op != "not" else 0
    if isinstance(node, Binary):
        left, right = _power(node.left, powers), _power(node.right, powers)
        if node.op in ("+", "-"):
            return _either(left, right)
        if node.op == "*":
            return (left or 0) + (right or 0)
        if node.op == "/":
            return (left or 0) - (right or 0)
        exponent = node.right.value if isinstance(node.right, Num) else 1
        return (left or 0) * int(exponent)
    if isinstance(node, IfElse):
        return _either(_power(node.then, powers), _power(node.otherwise, powers))
    if isinstance(node, Call):
        if node.func in _MONEY_FUNCTIONS:
            return 1
        if node.func in _PLAIN_FUNCTIONS:
            return 0
        args = node.args[:1] if node.func == "round" else node.args
        found: Power = None
        for arg in args:
            found = _either(found, _power(arg, powers))
        return found
    if isinstance(node, Compare | Logic):
        return 0
    return 0  # text, booleans, lists: not figures


def _either(a: Power, b: Power) -> Power:
    """The power of `a + b`, `a if ... else b`, `max(a, b)`: a literal fits the other side.

    Two different powers are a mistake in the rule file; the amount wins, so an amount is
    never shown as a bare number.
    """
    if a is None:
        return b
    if b is None or a == b:
        return a
    return a if a == 1 else b if b == 1 else max(a, b)
