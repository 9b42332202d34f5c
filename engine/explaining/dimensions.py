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
# A table gives rates and classes; `exists` and `overlaps` give booleans, not figures.
_PLAIN_FUNCTIONS = frozenset({"lookup", "exists", "overlaps"})
_NOWHERE = Location()

# The power of money of a value; None for a bare literal, which fits either.
Power = int | None


def money_names(
    formulas: Iterable[tuple[str, str]], known: Mapping[str, bool] | None = None
) -> dict[str, bool]:
    """Whether each formula's value is an amount, `known` (name -> is money) included."""
    powers, _ = _run(list(formulas), {name: int(money) for name, money in (known or {}).items()})
    return {name: power == 1 for name, power in powers.items()}


# Past this many names of unknown kind, guessing tries too many combinations: they are
# taken as amounts.
MAX_GUESSED = 8


def guess_money_names(
    formulas: Iterable[tuple[str, str]], known: Mapping[str, bool], unknown: Iterable[str]
) -> dict[str, bool]:
    """Like `money_names`, for formulas that read names nothing here defines (a claim's
    formulas read the valuation's, whose trace a claim does not carry).

    Each unknown name is tried as an amount and as a plain number; the combination under
    which the formulas add and compare like with like most often wins, amounts first on a
    tie: `min(deductible, covered_loss)` makes `covered_loss` an amount, and so whatever
    unknown name it was multiplied from.
    """
    steps = list(formulas)
    names = sorted(set(unknown) - set(known))
    if len(names) > MAX_GUESSED:
        return money_names(steps, {**known, **dict.fromkeys(names, True)})
    best: tuple[int, int, int] | None = None
    chosen: dict[str, int] = {}
    for combination in range(2 ** len(names)):
        guess = {name: 1 - ((combination >> i) & 1) for i, name in enumerate(names)}
        powers, mismatches = _run(steps, {**{n: int(m) for n, m in known.items()}, **guess})
        # Fewest mismatches, then fewest names taken as plain numbers.
        score = (mismatches, combination.bit_count(), combination)
        if best is None or score < best:
            best, chosen = score, powers
    return {name: power == 1 for name, power in chosen.items()}


def _run(steps: list[tuple[str, str]], powers: dict[str, int]) -> tuple[dict[str, int], int]:
    """The power of each formula, and how many times unlike powers met in `+`, `if`, `max`."""
    mismatches = [0]
    for name, text in steps:
        tree = _parsed(text)
        powers[name] = (_power(tree, powers, mismatches) or 0) if tree is not None else 0
    return powers, mismatches[0]


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


def _power(node: Expr, powers: Mapping[str, int], seen: list[int]) -> Power:
    if isinstance(node, Num):
        return None
    if isinstance(node, Name):
        dotted = node.dotted
        if dotted in powers:
            return powers[dotted]
        return 1 if dotted in _MONEY_FACTS or dotted.startswith(_MONEY_PREFIXES) else 0
    if isinstance(node, Unary):
        return _power(node.operand, powers, seen) if node.op != "not" else 0
    if isinstance(node, Binary):
        left, right = _power(node.left, powers, seen), _power(node.right, powers, seen)
        if node.op in ("+", "-"):
            return _either(left, right, seen)
        if node.op == "*":
            return (left or 0) + (right or 0)
        if node.op == "/":
            return (left or 0) - (right or 0)
        exponent = node.right.value if isinstance(node.right, Num) else 1
        return (left or 0) * int(exponent)
    if isinstance(node, IfElse):
        return _either(_power(node.then, powers, seen), _power(node.otherwise, powers, seen), seen)
    if isinstance(node, Call):
        if node.func in _MONEY_FUNCTIONS:
            return 1
        if node.func in _PLAIN_FUNCTIONS:
            return 0
        args = node.args[:1] if node.func == "round" else node.args
        found: Power = None
        for arg in args:
            found = _either(found, _power(arg, powers, seen), seen)
        return found
    if isinstance(node, Compare | Logic):
        return 0
    return 0  # text, booleans, lists: not figures


def _either(a: Power, b: Power, seen: list[int]) -> Power:
    """The power of `a + b`, `a if ... else b`, `max(a, b)`: a literal fits the other side.

    Two different powers are a mistake in the rule file; the amount wins, so an amount is
    never shown as a bare number.
    """
    if a is None:
        return b
    if b is None or a == b:
        return a
    seen[0] += 1
    return a if a == 1 else b if b == 1 else max(a, b)
