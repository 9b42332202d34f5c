"""Type-check an expression tree and compile it into a closure over exact values.

In: an `Expr` from `expressions.parse`, the symbol table of names it may use (with
their types), and the function table. Out: a `Formula` whose `run(env)` computes the
value from an environment mapping dotted names to values, or problems.

Types are checked at load so that `shipment.destination.country + 1` is a
validation error with file:line, not a crash on the first shipment that reaches it.
Values: Decimal (number), str (text), bool, datetime.date (date), tuple (list).
An optional fact that is absent is MISSING in the environment; reading it fails with
a message naming it, unless the formula guards it with `exists(...)`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from engine.compiling.expressions import (
    Binary,
    Bool,
    Call,
    Compare,
    Expr,
    IfElse,
    ListOf,
    Logic,
    Name,
    Num,
    Text,
    Unary,
    calls_in,
    names_in,
    text_location,
)
from engine.errors import Location, Problem
from engine.money import round_to

NUMBER, TEXT, BOOL, DATE, LIST = "number", "text", "bool", "date", "list"
ANY = "any"


class _Missing:
    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Gap:
    """A value a rate table could not give, with a referral already recorded for it."""

    _instance: _Gap | None = None

    def __new__(cls) -> _Gap:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "GAP"


GAP: Any = _Gap()

Env = Mapping[str, Any]
# Keys the evaluator puts in every environment for functions that need context.
CURRENCY_PLACES = "$currency_places"
DUTIES = "$duties"  # the valuation's DutyEstimator
SHIPMENT_FX = "$fx"  # the shipment's fx table and valuation currency


class MissingValue(Exception):
    """A formula read a fact the shipment does not give."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class MissingRate(Exception):
    """from_currency() needs an fx rate the shipment does not give."""

    def __init__(self, currency: str) -> None:
        super().__init__(currency)
        self.currency = currency


class GapValue(Exception):
    """A formula read a value that a rate table could not give (it becomes a gap too)."""


class TableGap(Exception):
    """No row of a table matched; the evaluator refers or fails, as the table says."""

    def __init__(self, table: str, keys: Mapping[str, Any]) -> None:
        super().__init__(table)
        self.table, self.keys = table, dict(keys)


class TableLike(Protocol):
    """What the formula compiler needs of a rate table (engine.compiling.pack.CompiledTable)."""

    @property
    def name(self) -> str: ...

    @property
    def keys(self) -> tuple[tuple[str, str], ...]: ...  # (column, name read)

    @property
    def result_type(self) -> str: ...  # NUMBER or TEXT

    def lookup(self, values: Mapping[str, Any]) -> Decimal | str | None: ...


@dataclass(frozen=True)
class Symbol:
    type: str
    optional: bool = False
    element: str = ""  # element type of a list
    where: Location = field(default_factory=Location)
    constant: Any = MISSING  # parameters are compile-time constants


@dataclass(frozen=True)
class Function:
    """A function formulas may call. `check` returns the result type or raises TypeError.

    Custom functions (registered by insurers' engineers) carry a `version`, which the
    result's provenance records.
    """

    name: str
    check: Callable[[list[str]], str]
    impl: Callable[..., Any]
    needs_env: bool = False
    signature: str = ""
    version: str = ""


@dataclass(frozen=True)
class Formula:
    text: str
    type: str
    names: tuple[str, ...]
    run: Callable[[Env], Any]
    where: Location
    calls: tuple[str, ...] = ()  # the functions it calls, for provenance
    tables: tuple[str, ...] = ()  # the tables it looks up, for the trace

    @property
    def source(self) -> str:
        """`path:line` of the formula, as traces cite it (computed once, not per step)."""
        cached: str | None = self.__dict__.get("_source")
        if cached is None:
            cached = self.where.source
            object.__setattr__(self, "_source", cached)
        return cached


def compile_formula(
    expr: Expr,
    text: str,
    where: Location,
    symbols: Mapping[str, Symbol],
    functions: Mapping[str, Function],
    rounding_mode: str,
    tables: Mapping[str, TableLike] | None = None,
) -> tuple[Formula | None, list[Problem]]:
    compiler = _Compiler(symbols, functions, where, rounding_mode, tables or {})
    try:
        kind, run = compiler.compile(expr)
    except _TypeProblem as exc:
        return None, [Problem(exc.code, exc.message, text_location(where, 1, exc.col))]
    names = tuple(dict.fromkeys([*(n.dotted for n in names_in(expr)), *compiler.extra_names]))
    calls = tuple(dict.fromkeys(calls_in(expr)))
    looked_up = tuple(dict.fromkeys(compiler.tables_used))
    return Formula(text, kind, names, run, where, calls, looked_up), []


class _TypeProblem(Exception):
    def __init__(self, col: int, message: str, code: str = "expr.type") -> None:
        super().__init__(message)
        self.col, self.message, self.code = col, message, code


def _suggest(name: str, known: Mapping[str, Symbol]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


class _Compiler:
    def __init__(
        self,
        symbols: Mapping[str, Symbol],
        functions: Mapping[str, Function],
        where: Location,
        rounding_mode: str,
        tables: Mapping[str, TableLike],
    ) -> None:
        self.symbols = symbols
        self.functions = functions
        self.where = where
        self.rounding_mode = rounding_mode
        self.tables = tables
        self.extra_names: list[str] = []  # names read implicitly, e.g. a table's keys
        self.tables_used: list[str] = []

    def compile(self, node: Expr) -> tuple[str, Callable[[Env], Any]]:
        method = getattr(self, f"_{type(node).__name__}")
        compiled: tuple[str, Callable[[Env], Any]] = method(node)
        return compiled

    def _Num(self, node: Num) -> tuple[str, Callable[[Env], Any]]:
        value = node.value
        return NUMBER, lambda env: value

    def _Text(self, node: Text) -> tuple[str, Callable[[Env], Any]]:
        value = node.value
        return TEXT, lambda env: value

    def _Bool(self, node: Bool) -> tuple[str, Callable[[Env], Any]]:
        value = node.value
        return BOOL, lambda env: value

    def _ListOf(self, node: ListOf) -> tuple[str, Callable[[Env], Any]]:
        compiled = [self.compile(item) for item in node.items]
        kinds = {kind for kind, _ in compiled}
        if len(kinds) > 1:
            raise _TypeProblem(node.col, f"a list must hold one type, not {sorted(kinds)}")
        runs = [run for _, run in compiled]
        return LIST, lambda env: tuple(run(env) for run in runs)

    def _Name(self, node: Name) -> tuple[str, Callable[[Env], Any]]:
        key = node.dotted
        symbol = self.symbols.get(key)
        if symbol is None:
            raise _TypeProblem(
                node.col, f"unknown name `{key}`{_suggest(key, self.symbols)}", "expr.unknown_name"
            )

        def read(env: Env) -> Any:
            value = env.get(key, MISSING)
            if value is MISSING:
                raise MissingValue(key)
            if value is GAP:
                raise GapValue(key)
            return value

        return symbol.type, read

    def _Unary(self, node: Unary) -> tuple[str, Callable[[Env], Any]]:
        kind, run = self.compile(node.operand)
        if node.op == "not":
            self._expect(node.operand, kind, BOOL, "`not`")
            return BOOL, lambda env: not run(env)
        self._expect(node.operand, kind, NUMBER, f"unary `{node.op}`")
        if node.op == "-":
            return NUMBER, lambda env: -run(env)
        return NUMBER, lambda env: +run(env)

    def _Binary(self, node: Binary) -> tuple[str, Callable[[Env], Any]]:
        lk, left = self.compile(node.left)
        rk, right = self.compile(node.right)
        self._expect(node.left, lk, NUMBER, f"`{node.op}`")
        self._expect(node.right, rk, NUMBER, f"`{node.op}`")
        op = node.op
        if op == "+":
            return NUMBER, lambda env: left(env) + right(env)
        if op == "-":
            return NUMBER, lambda env: left(env) - right(env)
        if op == "*":
            return NUMBER, lambda env: left(env) * right(env)
        if op == "/":
            return NUMBER, lambda env: left(env) / right(env)
        exponent = int(right({}))  # a checked literal; see expressions.MAX_POWER
        return NUMBER, lambda env: left(env) ** exponent

    def _Compare(self, node: Compare) -> tuple[str, Callable[[Env], Any]]:
        lk, left = self.compile(node.left)
        rk, right = self.compile(node.right)
        if node.op in ("in", "not in"):
            if rk != LIST:
                raise _TypeProblem(
                    node.right.col, '`in` needs a list on its right, e.g. x in ["DE", "FR"]'
                )
            negate = node.op == "not in"
            return BOOL, lambda env: (left(env) in right(env)) != negate
        left, right, lk, rk = self._coerce_dates(node, left, right, lk, rk)
        if lk != rk and ANY not in (lk, rk):
            raise _TypeProblem(node.col, f"cannot compare {lk} with {rk}")
        if node.op not in ("==", "!=") and lk == BOOL:
            raise _TypeProblem(node.col, f"`{node.op}` does not order true and false")
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        fn = ops[node.op]
        return BOOL, lambda env: fn(left(env), right(env))

    def _coerce_dates(
        self,
        node: Compare,
        left: Callable[[Env], Any],
        right: Callable[[Env], Any],
        lk: str,
        rk: str,
    ) -> tuple[Callable[[Env], Any], Callable[[Env], Any], str, str]:
        # `shipment.date >= "2025-08-29"`: a text literal next to a date is a date.
        if lk == DATE and isinstance(node.right, Text):
            return left, _date_literal(node.right), DATE, DATE
        if rk == DATE and isinstance(node.left, Text):
            return _date_literal(node.left), right, DATE, DATE
        return left, right, lk, rk

    def _Logic(self, node: Logic) -> tuple[str, Callable[[Env], Any]]:
        runs = []
        for value in node.values:
            kind, run = self.compile(value)
            self._expect(value, kind, BOOL, f"`{node.op}`")
            runs.append(run)
        if node.op == "and":
            return BOOL, lambda env: all(run(env) for run in runs)
        return BOOL, lambda env: any(run(env) for run in runs)

    def _IfElse(self, node: IfElse) -> tuple[str, Callable[[Env], Any]]:
        tk, test = self.compile(node.test)
        self._expect(node.test, tk, BOOL, "the condition of `if`")
        ak, then = self.compile(node.then)
        bk, otherwise = self.compile(node.otherwise)
        if ak != bk and ANY not in (ak, bk):
            raise _TypeProblem(node.col, f"both branches must have one type, not {ak} and {bk}")
        return ak, lambda env: then(env) if test(env) else otherwise(env)

    def _Call(self, node: Call) -> tuple[str, Callable[[Env], Any]]:
        if node.func == "exists":
            return self._exists(node)
        if node.func == "round":
            return self._round(node)
        if node.func == "lookup":
            return self._lookup(node)
        function = self.functions.get(node.func)
        if function is None:
            known = ", ".join(sorted([*self.functions, "exists", "round"]))
            raise _TypeProblem(
                node.col,
                f"unknown function `{node.func}` (known: {known})",
                "expr.unknown_function",
            )
        compiled = [self.compile(arg) for arg in node.args]
        try:
            kind = function.check([k for k, _ in compiled])
        except TypeError as exc:
            raise _TypeProblem(node.col, f"{node.func}(): {exc}") from None
        runs = [run for _, run in compiled]
        impl = function.impl
        if function.needs_env:
            return kind, lambda env: impl(env, *(run(env) for run in runs))
        return kind, lambda env: impl(*(run(env) for run in runs))

    def _exists(self, node: Call) -> tuple[str, Callable[[Env], Any]]:
        if len(node.args) != 1 or not isinstance(node.args[0], Name):
            raise _TypeProblem(
                node.col, "exists() takes one name, e.g. exists(shipment.sum_insured)"
            )
        self.compile(node.args[0])  # the name must be known
        key = node.args[0].dotted
        return BOOL, lambda env: env.get(key, MISSING) is not MISSING

    def _lookup(self, node: Call) -> tuple[str, Callable[[Env], Any]]:
        if len(node.args) != 1 or not isinstance(node.args[0], Text):
            raise _TypeProblem(
                node.col, 'lookup() takes the name of a table, e.g. lookup("base_rate")'
            )
        name = node.args[0].value
        table = self.tables.get(name)
        if table is None:
            known = ", ".join(self.tables) or "none"
            raise _TypeProblem(
                node.col, f"no table `{name}` (tables: {known})", "expr.unknown_table"
            )
        for column, key in table.keys:
            if key not in self.symbols:
                raise _TypeProblem(
                    node.col,
                    f"table `{name}` looks up column `{column}` by "
                    f"`{key}`, which is not known at this point"
                    f"{_suggest(key, self.symbols)}",
                    "expr.unknown_name",
                )
            self.extra_names.append(key)
        self.tables_used.append(name)
        keys = table.keys

        def run(env: Env) -> Any:
            values = {}
            for column, key in keys:
                value = env.get(key, MISSING)
                if value is MISSING:
                    raise MissingValue(key)
                if value is GAP:
                    raise GapValue(key)
                values[column] = value
            found = table.lookup(values)
            if found is None:
                raise TableGap(name, values)
            return found

        return table.result_type, run

    def _round(self, node: Call) -> tuple[str, Callable[[Env], Any]]:
        # round(x) rounds to the valuation currency's minor units with the pack's mode;
        # round(x, places) to a literal number of places.
        if len(node.args) not in (1, 2):
            raise _TypeProblem(node.col, "round() takes a value and optionally the places")
        kind, value = self.compile(node.args[0])
        self._expect(node.args[0], kind, NUMBER, "round()")
        mode = self.rounding_mode
        if len(node.args) == 1:
            return NUMBER, lambda env: round_to(value(env), env[CURRENCY_PLACES], mode)
        places = node.args[1]
        if not (
            isinstance(places, Num)
            and places.value == places.value.to_integral()
            and 0 <= places.value <= 12
        ):
            raise _TypeProblem(
                places.col, "the places of round() must be a whole number literal from 0 to 12"
            )
        count = int(places.value)
        return NUMBER, lambda env: round_to(value(env), count, mode)

    def _expect(self, node: Expr, kind: str, wanted: str, what: str) -> None:
        if kind != wanted and kind != ANY:
            raise _TypeProblem(node.col, f"{what} needs a {wanted}, got a {kind}")


def _date_literal(node: Text) -> Callable[[Env], Any]:
    try:
        value = datetime.date.fromisoformat(node.value)
    except ValueError:
        raise _TypeProblem(node.col, f"`{node.value}` is not an ISO date (YYYY-MM-DD)") from None
    return lambda env: value


def _numbers(name: str, minimum: int) -> Callable[[list[str]], str]:
    def check(kinds: list[str]) -> str:
        if len(kinds) < minimum:
            raise TypeError(f"needs at least {minimum} argument{'s' if minimum > 1 else ''}")
        if len(kinds) == 1 and kinds[0] == LIST:
            return NUMBER
        for kind in kinds:
            if kind not in (NUMBER, ANY):
                raise TypeError(f"takes numbers, got a {kind}")
        return NUMBER

    return check


def _flatten(args: tuple[Any, ...]) -> list[Decimal]:
    if len(args) == 1 and isinstance(args[0], tuple):
        return list(args[0])
    return list(args)


def _sum(*args: Any) -> Decimal:
    total = Decimal(0)
    for value in _flatten(args):
        total += value
    return total


def _abs(value: Decimal) -> Decimal:
    return abs(value)


def _one_number(kinds: list[str]) -> str:
    if kinds not in ([NUMBER], [ANY]):
        raise TypeError("takes exactly one number")
    return NUMBER


def _two_lists(kinds: list[str]) -> str:
    if kinds != [LIST, LIST]:
        raise TypeError("takes two lists")
    return BOOL


def _overlaps(first: tuple[Any, ...], second: tuple[Any, ...]) -> bool:
    return bool(set(first) & set(second))


def _two_numbers(kinds: list[str]) -> str:
    if len(kinds) != 2 or any(kind not in (NUMBER, ANY) for kind in kinds):
        raise TypeError("takes two numbers: the FOB value and the international freight")
    return NUMBER


def _number_and_text(kinds: list[str]) -> str:
    if len(kinds) != 2 or kinds[0] not in (NUMBER, ANY) or kinds[1] not in (TEXT, ANY):
        raise TypeError('takes an amount and its currency code, e.g. from_currency(45, "USD")')
    return NUMBER


def _from_currency(env: Env, amount: Decimal, currency: str) -> Decimal:
    rates, valuation = env[SHIPMENT_FX]
    if currency == valuation:
        return amount
    rate = rates.get(currency)
    if rate is None:
        raise MissingRate(currency)
    converted: Decimal = amount * rate
    return converted


def _estimate_duties(env: Env, fob: Decimal, freight: Decimal) -> Decimal:
    estimate: Decimal = env[DUTIES].estimate(fob, freight)
    return estimate


BUILTINS: dict[str, Function] = {
    "from_currency": Function(
        "from_currency",
        _number_and_text,
        _from_currency,
        needs_env=True,
        signature='from_currency(amount, "USD"): an amount stated in another currency, in the '
        "valuation currency, with the shipment's fx",
    ),
    "overlaps": Function(
        "overlaps",
        _two_lists,
        _overlaps,
        signature="overlaps(list, list): true when they share an item",
    ),
    "estimate_duties": Function(
        "estimate_duties",
        _two_numbers,
        _estimate_duties,
        needs_env=True,
        signature="estimate_duties(fob, international_freight): the destination's duties, "
        "taxes and fees from rules/countries/",
    ),
    "min": Function(
        "min", _numbers("min", 1), lambda *a: min(_flatten(a)), signature="min(a, b, ...)"
    ),
    "max": Function(
        "max", _numbers("max", 1), lambda *a: max(_flatten(a)), signature="max(a, b, ...)"
    ),
    "sum": Function("sum", _numbers("sum", 1), _sum, signature="sum(a, b, ...)"),
    "abs": Function("abs", _one_number, _abs, signature="abs(x)"),
}
