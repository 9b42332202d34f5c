"""Compile a rule's `when` into a closure over the typed environment, and into JSON.

In: an `Expr` (from `expressions.parse`, the tree formulas compile from too), the rule's
scope ("shipment", "charge", "goods"), the symbol table and, for arithmetic and function
calls, the formula compiler's functions and tables. Out: a `Condition` holding
- `test(shipment_env, line_env) -> bool`: the condition on typed values (Decimal, dates,
  text, lists), run by the compiled matcher with no encoding at all;
- `json` and `fields`: the same condition in durable_rules' JSON format and how each value
  it reads becomes a field of a match fact, run by the durable_rules and production
  matchers.
Both come from one walk of the tree, so they cannot drift apart; the differential tests
check that they agree.

Semantics (both forms): a comparison involving an absent value (or a table gap) is
false, `!=` included; `not` is pushed down to the comparisons (De Morgan), so `not (x ==
1)` is `x != 1`, false when x is absent too. `exists(x)` tests presence. Arithmetic and
function calls may appear on either side of a comparison: such an operand is compiled as
a formula and, for the JSON backends, becomes a computed field of the match fact; two
numbers are compared as their difference against zero. A computed operand that reads an
absent value is itself absent.
"""

from __future__ import annotations

import datetime
import hashlib
import operator
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.compiling.expressions import (
    Binary,
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
    names_in,
    text_location,
)
from engine.compiling.formulas import (
    BOOL,
    DATE,
    GAP,
    LIST,
    MISSING,
    NUMBER,
    TEXT,
    Function,
    GapValue,
    MissingValue,
    Symbol,
    TableGap,
    TableLike,
    compile_formula,
)
from engine.errors import EvaluationError, Location, Problem
from engine.matching.plan import (
    MAX_EXACT,
    Env,
    FieldSpec,
    Test,
    encode_fact,
    encode_item,
    encode_number,
    scale_of,
)

__all__ = [
    "MAX_EXACT",
    "Condition",
    "FieldSpec",
    "compile_condition",
    "encode_fact",
    "encode_number",
    "field_key",
    "scale_of",
]

LINE_PREFIXES = ("charge.", "goods.")  # names a line's own environment holds

NEVER: dict[str, Any] = {"kind": "$never"}  # no fact has this kind: `x in []`
ALWAYS: dict[str, Any] = {}  # folded away by `_all`/`_any`; never reaches the grammar


def _always(s: Env, line: Env) -> bool:
    return True


def _never(s: Env, line: Env) -> bool:
    return False


@dataclass(frozen=True)
class Condition:
    json: dict[str, Any]
    fields: tuple[FieldSpec, ...]
    test: Test = _always


@dataclass(frozen=True)
class _Part:
    """A compiled piece of a condition: its JSON and its closure."""

    json: dict[str, Any]
    test: Test


_TRUE = _Part(ALWAYS, _always)
_FALSE = _Part(NEVER, _never)

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "!=": "$neq"}
_PY: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def field_key(name: str) -> str:
    return name.replace(".", "__")


class _Reject(Exception):
    def __init__(self, col: int, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.col, self.message, self.problems = col, message, problems


def compile_condition(
    expr: Expr,
    where: Location,
    scope: str,
    symbols: Mapping[str, Symbol],
    functions: Mapping[str, Function] | None = None,
    tables: Mapping[str, TableLike] | None = None,
    rounding_mode: str = "half_up",
    text: str = "",
) -> tuple[Condition | None, list[Problem]]:
    compiler = _ConditionCompiler(symbols, where, functions or {}, tables or {}, rounding_mode)
    try:
        body = compiler.compile(expr, negate=False)
    except _Reject as exc:
        if exc.problems:
            return None, exc.problems
        return None, [
            Problem("condition.unsupported", exc.message, text_location(where, 1, exc.col))
        ]
    if body.json is ALWAYS:
        json: dict[str, Any] = {"kind": scope}
    elif body.json is NEVER:
        json = {"$and": [{"kind": scope}, dict(NEVER)]}
    else:
        json = {"$and": [{"kind": scope}, body.json]}
    return Condition(json, tuple(compiler.fields.values()), body.test), []


@dataclass(frozen=True)
class _Operand:
    """One side of a comparison: a constant, a name, or a computed expression."""

    kind: str
    element: str = ""
    constant: Any = MISSING  # the value, when known at load
    name: Name | None = None  # a name of the environment
    computed: Expr | None = None  # arithmetic or a call, compiled as a formula


class _ConditionCompiler:
    def __init__(
        self,
        symbols: Mapping[str, Symbol],
        where: Location,
        functions: Mapping[str, Function],
        tables: Mapping[str, TableLike],
        rounding_mode: str,
    ) -> None:
        self.symbols = symbols
        self.where = where
        self.functions = functions
        self.tables = tables
        self.rounding_mode = rounding_mode
        self.fields: dict[str, FieldSpec] = {}

    # --- logic ---

    def compile(self, node: Expr, negate: bool) -> _Part:
        if isinstance(node, Logic):
            # De Morgan: not (a and b) == (not a) or (not b)
            conjunction = (node.op == "and") != negate
            parts = [self.compile(value, negate) for value in node.values]
            return _all(parts) if conjunction else _any(parts)
        if isinstance(node, Unary) and node.op == "not":
            return self.compile(node.operand, not negate)
        if isinstance(node, Compare):
            return self._compare(node, negate)
        if isinstance(node, Call) and node.func == "exists":
            return self._exists(node, negate)
        if isinstance(node, Call) and node.func == "overlaps":
            return self._overlaps(node, negate)
        if isinstance(node, Bool):
            return _TRUE if node.value != negate else _FALSE
        operand = self._operand(node)
        if operand.kind != BOOL:
            what = f"`{node.dotted}`" if isinstance(node, Name) else "this expression"
            raise _Reject(
                node.col,
                f"{what} is a {operand.kind}, not true/false: compare it with a value",
            )
        if operand.constant is not MISSING:
            return _TRUE if operand.constant != negate else _FALSE
        want = not negate
        key = self._field(operand, "bool")
        read = self._reader(operand)

        def truth(s: Env, line: Env) -> bool:
            value = read(s, line)
            return value is not MISSING and value is not GAP and value == want

        return _Part({key: want}, truth)

    # --- operands ---

    def _symbol(self, node: Name) -> Symbol:
        symbol = self.symbols.get(node.dotted)
        if symbol is None:
            import difflib

            close = difflib.get_close_matches(node.dotted, list(self.symbols), n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise _Reject(node.col, f"unknown name `{node.dotted}`{hint}")
        return symbol

    def _operand(self, node: Expr) -> _Operand:
        if isinstance(node, Num):
            return _Operand(NUMBER, constant=node.value)
        if isinstance(node, Text):
            return _Operand(TEXT, constant=node.value)
        if isinstance(node, Bool):
            return _Operand(BOOL, constant=node.value)
        if isinstance(node, Unary) and node.op == "-" and isinstance(node.operand, Num):
            return _Operand(NUMBER, constant=-node.operand.value)
        if isinstance(node, ListOf):
            items = [self._operand(item) for item in node.items]
            if any(item.constant is MISSING for item in items):
                raise _Reject(node.col, "a list in a condition must hold constants only")
            kinds = {item.kind for item in items}
            if len(kinds) > 1:
                raise _Reject(node.col, f"a list must hold one type, not {sorted(kinds)}")
            element = items[0].kind if items else ""
            return _Operand(LIST, element, constant=tuple(item.constant for item in items))
        if isinstance(node, Name):
            symbol = self._symbol(node)
            if symbol.constant is not MISSING:
                value = symbol.constant
                kind = LIST if isinstance(value, tuple) else symbol.type
                return _Operand(kind, symbol.element, constant=value)
            return _Operand(symbol.type, symbol.element, name=node)
        # Arithmetic, a function call, `x if c else y`: compiled as a formula is.
        formula, problems = compile_formula(
            node, "", self.where, self.symbols, self.functions, self.rounding_mode, self.tables
        )
        if formula is None:
            raise _Reject(node.col, problems[0].message if problems else "", problems)
        return _Operand(formula.type, computed=node)

    def _field(self, operand: _Operand, encoding: str, scale: int = 0) -> str:
        """The match-fact field carrying `operand` in `encoding`; recorded once."""
        if operand.name is not None:
            dotted = operand.name.dotted
            key = field_key(dotted)
            compute = None
        else:
            assert operand.computed is not None
            digest = hashlib.sha256(
                f"{self.where.file}:{self.where.line}:{self.where.col}:{operand.computed!r}".encode()
            ).hexdigest()[:12]
            key = dotted = f"calc_{digest}"
            compute = self._compute(operand.computed)
        if encoding == "number":
            key = f"{key}__s{scale}"
        elif encoding == "present":
            key = f"{key}__present"
        self.fields.setdefault(key, FieldSpec(key, dotted, encoding, scale, compute))
        return key

    def _compute(self, node: Expr) -> Callable[[Env], Any]:
        """The value of a computed operand in one (merged) environment; MISSING if absent."""
        formula, _ = compile_formula(
            node, "", self.where, self.symbols, self.functions, self.rounding_mode, self.tables
        )
        assert formula is not None  # `_operand` compiled it already
        run = formula.run
        where = self.where

        def compute(env: Env) -> Any:
            try:
                return run(env)
            except (MissingValue, GapValue, TableGap):
                return MISSING
            except ArithmeticError as exc:
                raise EvaluationError(
                    Problem(
                        "condition.invalid",
                        f"a rule condition could not be computed ({type(exc).__name__})",
                        where,
                    )
                ) from None

        return compute

    def _reader(self, operand: _Operand) -> Callable[[Env, Env], Any]:
        """(shipment env, line env) -> the operand's value, MISSING (or GAP) when absent."""
        if operand.name is not None:
            key = operand.name.dotted
            if key.startswith(LINE_PREFIXES):
                return lambda s, line: line.get(key, MISSING)
            return lambda s, line: s.get(key, MISSING)
        assert operand.computed is not None
        compute = self._compute(operand.computed)
        if any(n.dotted.startswith(LINE_PREFIXES) for n in names_in(operand.computed)):
            return lambda s, line: compute(ChainMap(line, s))  # type: ignore[arg-type]
        return lambda s, line: compute(s)

    # --- comparisons ---

    def _exists(self, node: Call, negate: bool) -> _Part:
        if len(node.args) != 1 or not isinstance(node.args[0], Name):
            raise _Reject(node.col, "exists() takes one name")
        operand = self._operand(node.args[0])
        if operand.constant is not MISSING:
            return _FALSE if negate else _TRUE
        want = not negate
        key = self._field(operand, "present")
        read = self._reader(operand)
        return _Part({key: want}, lambda s, line: (read(s, line) is not MISSING) == want)

    def _overlaps(self, node: Call, negate: bool) -> _Part:
        # overlaps(shipment.transit_countries, sanctioned): some element is in the list
        usage = "overlaps() takes a list fact and a list of constants"
        if len(node.args) != 2:
            raise _Reject(node.col, usage)
        listed, constant = self._operand(node.args[0]), self._operand(node.args[1])
        if listed.kind != LIST or listed.constant is not MISSING or constant.kind != LIST:
            raise _Reject(node.col, usage)
        if constant.constant is MISSING:
            raise _Reject(node.col, usage)
        if negate:
            raise _Reject(
                node.col,
                "`not overlaps(...)` is not supported in a condition; "
                "compute it in a formula and test that",
            )
        values = tuple(constant.constant)
        if not values:
            return _FALSE
        items = [{"$i": encode_item(item)} for item in values]
        key = self._field(listed, "list")
        read = self._reader(listed)

        def overlaps(s: Env, line: Env) -> bool:
            found = read(s, line)
            if found is MISSING or found is GAP:
                return False
            return any(value in found for value in values)

        return _Part({"$iany": {key: items[0] if len(items) == 1 else {"$or": items}}}, overlaps)

    def _compare(self, node: Compare, negate: bool) -> _Part:
        if node.op in ("in", "not in"):
            return self._membership(node, negate != (node.op == "not in"))
        op = _NEGATE[node.op] if negate else node.op
        left, right = self._operand(node.left), self._operand(node.right)
        if left.constant is not MISSING and right.constant is MISSING:
            left, right, op = right, left, _FLIP[op]
        if left.constant is not MISSING:
            # both known at load: fold (a parameter compared with a literal, say)
            if left.kind != right.kind or left.kind == LIST:
                raise _Reject(node.col, f"cannot compare {left.kind} with {right.kind}")
            return _TRUE if _PY[op](left.constant, right.constant) else _FALSE
        if right.constant is MISSING:
            return self._compare_values(node, left, right, op)
        _, value = self._literal(node, left.kind, right.kind, right.constant, left)
        return self._leaf(node, left, op, value)

    def _literal(
        self, node: Compare, kind: str, literal_kind: str, value: Any, left: _Operand | None = None
    ) -> tuple[str, Any]:
        """The literal as a value of the compared name's `kind` (dates from ISO text)."""
        shown = (
            f"`{left.name.dotted}` ({kind})" if left is not None and left.name is not None else kind
        )
        if kind == DATE and literal_kind == TEXT:
            try:
                return DATE, datetime.date.fromisoformat(value)
            except ValueError:
                raise _Reject(node.col, f"`{value}` is not an ISO date (YYYY-MM-DD)") from None
        if kind != literal_kind:
            raise _Reject(node.col, f"cannot compare {shown} with a {literal_kind}")
        if kind == LIST:
            raise _Reject(node.col, "lists are compared with `in` or overlaps()")
        return kind, value

    def _leaf(self, node: Expr, left: _Operand, op: str, value: Any) -> _Part:
        """`left op value` where value is a typed constant."""
        kind = left.kind
        if kind == BOOL and op not in ("==", "!="):
            raise _Reject(node.col, f"`{op}` does not order true and false")
        literal: Any
        if kind == NUMBER:
            scale = scale_of(value)
            key = self._field(left, "number", scale)
            try:
                literal = encode_number(value, scale)
            except OverflowError as exc:
                raise _Reject(node.col, str(exc)) from None
        elif kind == DATE:
            key = self._field(left, "date")
            literal = value.isoformat()
        else:
            key = self._field(left, kind)
            literal = value
        json = {key: literal} if op == "==" else {_OPS[op]: {key: literal}}
        return _Part(json, self._leaf_test(left, op, value))

    def _leaf_test(self, left: _Operand, op: str, value: Any) -> Test:
        """The closure for `left op value`; for a name, reading it inline (no reader call)."""
        compare = _PY[op]
        if left.name is None:
            read = self._reader(left)

            def leaf(s: Env, line: Env) -> bool:
                found = read(s, line)
                return found is not MISSING and found is not GAP and compare(found, value)

            return leaf
        name = left.name.dotted
        on_line = name.startswith(LINE_PREFIXES)
        if op == "==":
            # `value` is a typed constant, so it equals neither MISSING nor GAP: both
            # compare by identity only, and equality with them is false, as it must be.
            if on_line:
                return lambda s, line: line.get(name, MISSING) == value
            return lambda s, line: s.get(name, MISSING) == value
        if on_line:

            def line_leaf(s: Env, line: Env) -> bool:
                found = line.get(name, MISSING)
                return found is not MISSING and found is not GAP and compare(found, value)

            return line_leaf

        def shipment_leaf(s: Env, line: Env) -> bool:
            found = s.get(name, MISSING)
            return found is not MISSING and found is not GAP and compare(found, value)

        return shipment_leaf

    def _compare_values(self, node: Compare, left: _Operand, right: _Operand, op: str) -> _Part:
        """Two values known only per shipment."""
        if left.kind != right.kind:
            raise _Reject(node.col, f"cannot compare {left.kind} with {right.kind}")
        if left.kind == LIST:
            raise _Reject(node.col, "lists are compared with `in` or overlaps()")
        if left.kind == BOOL and op not in ("==", "!="):
            raise _Reject(node.col, f"`{op}` does not order true and false")
        read_left, read_right = self._reader(left), self._reader(right)
        compare = _PY[op]

        def both(s: Env, line: Env) -> bool:
            a = read_left(s, line)
            if a is MISSING or a is GAP:
                return False
            b = read_right(s, line)
            return b is not MISSING and b is not GAP and compare(a, b)

        if left.kind == NUMBER:
            # Two numbers: their exact difference against zero, a computed field.
            operand = _Operand(NUMBER, computed=Binary(node.col, "-", node.left, node.right))
            key = self._field(operand, "number", 0)
            json: dict[str, Any] = {key: 0} if op == "==" else {_OPS[op]: {key: 0}}
            return _Part(json, both)
        encoding = left.kind
        key, other = self._field(left, encoding), self._field(right, encoding)
        reference = {"$m": other}
        json = {key: reference} if op == "==" else {_OPS[op]: {key: reference}}
        return _Part(json, both)

    def _membership(self, node: Compare, negate: bool) -> _Part:
        left, right = self._operand(node.left), self._operand(node.right)
        if left.constant is MISSING and right.constant is not MISSING:
            # shipment.destination.country in ["KP", "IR"]
            if right.kind != LIST:
                raise _Reject(node.col, "`in` needs a list on its right")
            values = [
                self._literal(node, left.kind, _kind_of(item), item, left)[1]
                for item in right.constant
            ]
            if not values:
                return _TRUE if negate else _FALSE
            parts = [self._leaf(node, left, "!=" if negate else "==", value) for value in values]
            json = {"$and": [p.json for p in parts]} if negate else {"$or": [p.json for p in parts]}
            read = self._reader(left)
            options = tuple(values)

            def member(s: Env, line: Env) -> bool:
                found = read(s, line)
                if found is MISSING or found is GAP:
                    return False
                return (found in options) != negate

            return _Part(json, member)
        if left.constant is not MISSING and right.constant is MISSING:
            # "IR" in shipment.transit_countries
            if right.kind != LIST:
                shown = f"`{right.name.dotted}`" if right.name is not None else "the right side"
                raise _Reject(node.col, f"{shown} is not a list")
            if negate:
                raise _Reject(
                    node.col,
                    "`not in` over a list of facts is not supported; "
                    "test `not (x in list)` in a formula",
                )
            key = self._field(right, "list")
            read = self._reader(right)
            value = left.constant

            def contains(s: Env, line: Env) -> bool:
                found = read(s, line)
                return found is not MISSING and found is not GAP and value in found

            return _Part({"$iany": {key: {"$i": encode_item(value)}}}, contains)
        if left.constant is not MISSING and right.constant is not MISSING:
            if right.kind != LIST:
                raise _Reject(node.col, "`in` needs a list on its right")
            return _TRUE if (left.constant in right.constant) != negate else _FALSE
        raise _Reject(
            node.col,
            "`in` tests a value against a list of constants, or a constant against a list fact",
        )


def _all(parts: list[_Part]) -> _Part:
    if any(part is _FALSE for part in parts):
        return _FALSE
    kept = [part for part in parts if part is not _TRUE]
    if not kept:
        return _TRUE
    if len(kept) == 1:
        return kept[0]
    tests = tuple(part.test for part in kept)
    return _Part({"$and": [p.json for p in kept]}, lambda s, line: all(t(s, line) for t in tests))


def _any(parts: list[_Part]) -> _Part:
    if any(part is _TRUE for part in parts):
        return _TRUE
    kept = [part for part in parts if part is not _FALSE]
    if not kept:
        return _FALSE
    if len(kept) == 1:
        return kept[0]
    tests = tuple(part.test for part in kept)
    return _Part({"$or": [p.json for p in kept]}, lambda s, line: any(t(s, line) for t in tests))


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, Decimal):
        return NUMBER
    return TEXT
