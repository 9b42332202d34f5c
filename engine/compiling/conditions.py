"""Compile a rule's `when` condition into durable_rules' JSON condition format.

In: an `Expr` (from `expressions.parse`), the rule's scope ("shipment", "charge",
"goods") and the symbol table. Out: a `Condition`: the JSON for one fact (`m`) and
the `FieldSpec`s that say how to put each value the condition reads into that fact.

Conditions match facts against constants: comparisons of a name with a literal or a
parameter, `in` lists, `exists(...)`, and/or/not. Arithmetic belongs in formulas (a
boolean formula can be tested by name), which keeps conditions matchable by
durable_rules and every figure in the trace.

Exactness: durable_rules parses fact JSON with a float parser, so a number is never
handed over as a decimal. A number compared at scale S (the literal's decimal places)
is encoded as the integer 2*floor(x*10^S) + (1 if x*10^S is not whole), and the
literal c as 2*c*10^S. Both sides are then integers and every comparison (<, <=, ==,
!=, >=, >) gives the same answer as on the exact decimals: a non-whole x sits strictly
between two even numbers. Absent values are left out of the fact; every comparison
with an absent field is false (durable_rules' own rule, `$neq` included), and
presence is tested with an explicit `<field>__present` boolean, never `$ex`/`$nex`.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.compiling.expressions import (
    Bool,
    Call,
    Compare,
    Expr,
    ListOf,
    Logic,
    Name,
    Num,
    Text,
    Unary,
    text_location,
)
from engine.compiling.formulas import BOOL, DATE, LIST, MISSING, NUMBER, TEXT, Symbol
from engine.errors import Location, Problem

# durable_rules compares integers exactly up to this magnitude; past it we refuse.
MAX_EXACT = 2**53

NEVER: dict[str, Any] = {"kind": "$never"}  # no fact has this kind: `x in []`


@dataclass(frozen=True)
class FieldSpec:
    """How one value of the environment becomes one field of a match fact."""

    key: str  # field name in the fact, e.g. "shipment__destination__country"
    name: str  # dotted name in the environment
    encoding: str  # "text", "bool", "date", "number", "list", "present"
    scale: int = 0


@dataclass(frozen=True)
class Condition:
    json: dict[str, Any]
    fields: tuple[FieldSpec, ...]


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "!=": "$neq"}


def field_key(name: str) -> str:
    return name.replace(".", "__")


def encode_number(value: Decimal, scale: int) -> int:
    scaled = value.scaleb(scale)
    whole = int(scaled.to_integral_value(rounding="ROUND_FLOOR"))
    encoded = 2 * whole + (0 if scaled == whole else 1)
    if abs(encoded) >= MAX_EXACT:
        raise OverflowError(f"{value} is too large to compare exactly in a rule condition")
    return encoded


def scale_of(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def encode_fact(env: Mapping[str, Any], fields: tuple[FieldSpec, ...]) -> dict[str, Any]:
    """The JSON-safe fact a condition is matched against (without `id` and `kind`)."""
    fact: dict[str, Any] = {}
    for spec in fields:
        value = env.get(spec.name, MISSING)
        if spec.encoding == "present":
            fact[spec.key] = value is not MISSING
            continue
        if value is MISSING:
            continue
        if spec.encoding == "number":
            fact[spec.key] = encode_number(value, spec.scale)
        elif spec.encoding == "date":
            fact[spec.key] = value.isoformat()
        elif spec.encoding == "list":
            fact[spec.key] = [_encode_item(item) for item in value]
        else:
            fact[spec.key] = value
    return fact


def _encode_item(item: Any) -> Any:
    if isinstance(item, Decimal):
        # list members are matched for equality only; whole numbers stay numbers
        return int(item) if item == item.to_integral_value() else str(item)
    return item


class _Reject(Exception):
    def __init__(self, col: int, message: str) -> None:
        super().__init__(message)
        self.col, self.message = col, message


def compile_condition(
    expr: Expr, where: Location, scope: str, symbols: Mapping[str, Symbol]
) -> tuple[Condition | None, list[Problem]]:
    compiler = _ConditionCompiler(symbols)
    try:
        body = compiler.compile(expr, negate=False)
    except _Reject as exc:
        return None, [
            Problem("condition.unsupported", exc.message, text_location(where, 1, exc.col))
        ]
    json = {"$and": [{"kind": scope}, body]}
    return Condition(json, tuple(compiler.fields.values())), []


class _ConditionCompiler:
    def __init__(self, symbols: Mapping[str, Symbol]) -> None:
        self.symbols = symbols
        self.fields: dict[str, FieldSpec] = {}

    def compile(self, node: Expr, negate: bool) -> dict[str, Any]:
        if isinstance(node, Logic):
            # De Morgan: not (a and b) == (not a) or (not b)
            op = node.op if not negate else ("or" if node.op == "and" else "and")
            parts = [self.compile(value, negate) for value in node.values]
            return {f"${op}": parts}
        if isinstance(node, Unary) and node.op == "not":
            return self.compile(node.operand, not negate)
        if isinstance(node, Compare):
            return self._compare(node, negate)
        if isinstance(node, Call) and node.func == "exists":
            return self._exists(node, negate)
        if isinstance(node, Call) and node.func == "overlaps":
            return self._overlaps(node, negate)
        if isinstance(node, Name):
            symbol = self._symbol(node)
            if symbol.type != BOOL:
                raise _Reject(
                    node.col,
                    f"`{node.dotted}` is a {symbol.type}, not true/false: compare it with a value",
                )
            if symbol.constant is not MISSING:
                return {} if symbol.constant != negate else dict(NEVER)
            return {self._field(node, "bool"): not negate}
        if isinstance(node, Bool):
            return {} if node.value != negate else dict(NEVER)
        raise _Reject(
            node.col,
            "a condition compares facts or formulas with constants "
            "(==, <, in, exists, and, or, not); compute anything else in "
            "a formula and test that formula here",
        )

    def _symbol(self, node: Name) -> Symbol:
        symbol = self.symbols.get(node.dotted)
        if symbol is None:
            import difflib

            close = difflib.get_close_matches(node.dotted, list(self.symbols), n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise _Reject(node.col, f"unknown name `{node.dotted}`{hint}")
        return symbol

    def _field(self, node: Name, encoding: str, scale: int = 0) -> str:
        key = field_key(node.dotted)
        if encoding == "number":
            key = f"{key}__s{scale}"
        elif encoding == "present":
            key = f"{key}__present"
        self.fields.setdefault(key, FieldSpec(key, node.dotted, encoding, scale))
        return key

    def _exists(self, node: Call, negate: bool) -> dict[str, Any]:
        if len(node.args) != 1 or not isinstance(node.args[0], Name):
            raise _Reject(node.col, "exists() takes one name")
        self._symbol(node.args[0])
        return {self._field(node.args[0], "present"): not negate}

    def _overlaps(self, node: Call, negate: bool) -> dict[str, Any]:
        # overlaps(shipment.transit_countries, sanctioned): some element is in the list
        if len(node.args) != 2 or not isinstance(node.args[0], Name):
            raise _Reject(node.col, "overlaps() takes a list fact and a list of constants")
        symbol = self._symbol(node.args[0])
        constant = self._constant(node.args[1])
        if symbol.type != LIST or constant is None or constant[0] != LIST:
            raise _Reject(node.col, "overlaps() takes a list fact and a list of constants")
        if negate:
            raise _Reject(
                node.col,
                "`not overlaps(...)` is not supported in a condition; "
                "compute it in a formula and test that",
            )
        items = [{"$i": _encode_item(item)} for item in constant[1]]
        if not items:
            return dict(NEVER)
        key = self._field(node.args[0], "list")
        return {"$iany": {key: items[0] if len(items) == 1 else {"$or": items}}}

    def _constant(self, node: Expr) -> tuple[str, Any] | None:
        """(type, value) when the node is known at compile time."""
        if isinstance(node, Num):
            return NUMBER, node.value
        if isinstance(node, Text):
            return TEXT, node.value
        if isinstance(node, Bool):
            return BOOL, node.value
        if isinstance(node, Unary) and node.op == "-" and isinstance(node.operand, Num):
            return NUMBER, -node.operand.value
        if isinstance(node, ListOf):
            items = [self._constant(item) for item in node.items]
            if any(item is None for item in items):
                raise _Reject(node.col, "a list in a condition must hold constants only")
            return LIST, tuple(value for _, value in items)  # type: ignore[misc]
        if isinstance(node, Name):
            symbol = self._symbol(node)
            if symbol.constant is not MISSING:
                value = symbol.constant
                return (LIST if isinstance(value, tuple) else symbol.type), value
        return None

    def _compare(self, node: Compare, negate: bool) -> dict[str, Any]:
        if node.op in ("in", "not in"):
            return self._membership(node, negate != (node.op == "not in"))
        op = _NEGATE[node.op] if negate else node.op
        left, right = node.left, node.right
        left_const, right_const = self._constant(left), self._constant(right)
        if left_const is not None and right_const is None:
            left, right, op = right, left, _FLIP[op]
            left_const, right_const = right_const, left_const
        if not isinstance(left, Name) or left_const is not None:
            raise _Reject(
                node.col,
                "compare a fact or formula with a constant, e.g. "
                'shipment.mode == "air"; compute anything else in a '
                "formula and test that formula here",
            )
        symbol = self._symbol(left)
        if right_const is None:
            return self._compare_names(node, left, symbol, right, op)
        kind, value = right_const
        return self._compare_constant(node, left, symbol, op, kind, value)

    def _compare_constant(
        self, node: Compare, left: Name, symbol: Symbol, op: str, kind: str, value: Any
    ) -> dict[str, Any]:
        if symbol.type == DATE and kind == TEXT:
            try:
                value = datetime.date.fromisoformat(value).isoformat()
            except ValueError:
                raise _Reject(node.col, f"`{value}` is not an ISO date (YYYY-MM-DD)") from None
            kind = DATE
        if symbol.type != kind:
            raise _Reject(node.col, f"cannot compare `{left.dotted}` ({symbol.type}) with a {kind}")
        if kind == BOOL and op not in ("==", "!="):
            raise _Reject(node.col, f"`{op}` does not order true and false")
        if kind == NUMBER:
            scale = scale_of(value)
            key = self._field(left, "number", scale)
            try:
                literal = encode_number(value, scale)
            except OverflowError as exc:
                raise _Reject(node.col, str(exc)) from None
        else:
            key = self._field(left, "date" if kind == DATE else kind)
            literal = value
        if op == "==":
            return {key: literal}
        return {_OPS[op]: {key: literal}}

    def _compare_names(
        self, node: Compare, left: Name, symbol: Symbol, right: Expr, op: str
    ) -> dict[str, Any]:
        if not isinstance(right, Name):
            raise _Reject(
                node.col,
                "compare a fact or formula with a constant or another "
                "name; compute anything else in a formula",
            )
        other = self._symbol(right)
        if symbol.type != other.type:
            raise _Reject(node.col, f"cannot compare {symbol.type} with {other.type}")
        if symbol.type == NUMBER:
            raise _Reject(
                node.col,
                "comparing two numbers is done in a formula (e.g. "
                "`under_insured: shipment.sum_insured < tiv`), "
                "then tested by name here",
            )
        if symbol.type == BOOL and op not in ("==", "!="):
            raise _Reject(node.col, f"`{op}` does not order true and false")
        encoding = "date" if symbol.type == DATE else symbol.type
        key, other_key = self._field(left, encoding), self._field(right, encoding)
        reference = {"$m": other_key}
        if op == "==":
            return {key: reference}
        return {_OPS[op]: {key: reference}}

    def _membership(self, node: Compare, negate: bool) -> dict[str, Any]:
        left, right = node.left, node.right
        right_const = self._constant(right)
        left_const = self._constant(left)
        if isinstance(left, Name) and left_const is None and right_const is not None:
            # shipment.destination.country in ["KP", "IR"]
            if right_const[0] != LIST:
                raise _Reject(node.col, "`in` needs a list on its right")
            symbol = self._symbol(left)
            parts = [
                self._compare_constant(
                    node, left, symbol, "!=" if negate else "==", _kind_of(item), item
                )
                for item in right_const[1]
            ]
            if not parts:
                return {} if negate else dict(NEVER)
            return {"$and": parts} if negate else {"$or": parts}
        if left_const is not None and isinstance(right, Name) and right_const is None:
            # "IR" in shipment.transit_countries
            symbol = self._symbol(right)
            if symbol.type != LIST:
                raise _Reject(node.col, f"`{right.dotted}` is not a list")
            if negate:
                raise _Reject(
                    node.col,
                    "`not in` over a list of facts is not supported; "
                    "test `not (x in list)` in a formula",
                )
            key = self._field(right, "list")
            return {"$iany": {key: {"$i": _encode_item(left_const[1])}}}
        raise _Reject(
            node.col,
            "`in` tests a name against a list of constants, or a constant against a list fact",
        )


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, Decimal):
        return NUMBER
    return TEXT
