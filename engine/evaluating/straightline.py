"""Generate one straight-line Python function per compiled pack: the fast valuation path.

In: a `CompiledPack` (its formulas' and rules' expression trees, re-parsed from the texts
the pack compiled, into our own checked nodes). Out: a `StraightLine` whose `run` values
a shipment with the compiled matcher's semantics, or None when the pack uses something
the generator does not handle (then every valuation takes the interpreted path).

The function reads the `Shipment` directly (no environment dicts), keeps every name in a
local, sums charges into a list specialised to the pack's charge types and groups, runs
the formulas in their (checked) dependency order and the rule conditions inline. A
second function, `plain_line`, is generated from the same nodes to read the plain dicts
`facts.read_plain` gives (`PLAIN`: how each name is read from them), for `value()`'s
plain road; its values come in the same slots. Each function's source is made from our
own nodes only: every name becomes an identifier minted here (`n0`, `n1`, ...) and every
literal a constant bound into the function's globals (`k0`, `k1`, ...), so no text of a
rule file ever reaches `compile()` as code.

It decides no error and no unusual case. Whatever is not the common case (an amount in
another currency, an absent fact a formula reads, a table with no row, a rejected
charge) raises `Bail`, and any exception at all sends the valuation to the interpreted
path (`valuation._evaluate`), which gives the exact result, error, location and message.
The trace is not recorded while valuing: every value a step shows is a local assigned
once, so the steps are rendered on demand from the plan's static strings and the
values the function returns.
"""

from __future__ import annotations

import datetime
import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine import firstuse
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
    parse,
)
from engine.compiling.formulas import (
    BOOL,
    BUILTINS,
    DATE,
    DUTIES,
    LIST,
    MISSING,
    NUMBER,
    SHIPMENT_FX,
    TEXT,
    Function,
    Symbol,
    compile_formula,
)
from engine.compiling.pack import (
    CHARGE_PHASE,
    DECISION_PHASE,
    CompiledPack,
    CompiledRule,
    CompiledTable,
    _parameter_symbol,
)
from engine.evaluating.environment import _CHARGE_PATHS, _GOODS_PATHS, _count, _main_category
from engine.facts import Shipment
from engine.money import ROUNDING_MODES, exact
from engine.names import CHARGE, DECLARED_DUTIES, DUTY_RULES, GOODS, SHIPMENT, charge_symbols

__all__ = ["Bail", "StraightLine", "plain_line", "straight_line"]


class Bail(Exception):
    """Not the common case: the interpreted path values this shipment."""


class _Unsupported(Exception):
    """The pack uses something the generator does not handle: no straight line for it."""


def _bail() -> Any:
    raise Bail


_QUANTA = tuple(Decimal(1).scaleb(-places) for places in range(13))


def _quantum(places: int) -> Decimal:
    return _QUANTA[places] if 0 <= places < len(_QUANTA) else Decimal(1).scaleb(-places)


# Shipment-level names: how each is read from the `Shipment` `s` (valuation currency
# `cur`, invoice `inv`), as `environment.build_environment` fills it when nothing is
# converted; and whether it may be MISSING.
_SHIPMENT_READS: dict[str, tuple[str, bool]] = {
    "shipment.id": ("s.id", False),
    "shipment.date": ("s.date", False),
    "shipment.currency": ("cur", False),
    "shipment.incoterm": ("s.incoterm or MISSING", True),
    "shipment.mode": ("s.mode", False),
    "shipment.origin.country": ("s.origin.country", False),
    "shipment.origin.port": ("s.origin.port or MISSING", True),
    "shipment.destination.country": ("s.destination.country", False),
    "shipment.destination.port": ("s.destination.port or MISSING", True),
    "shipment.payment_method": ("s.payment_method", False),
    "shipment.expected_transit_days": ("_opt_count(s.expected_transit_days)", True),
    "shipment.invoice.amount": ("inva", False),
    "shipment.invoice.currency": ("inv.currency or cur", False),
    "shipment.sum_insured": ("_opt(s.sum_insured)", True),
    "shipment.transit_countries": ("_opt_tuple(s.transit_countries)", True),
    "shipment.goods.count": ("_count(len(s.goods))", False),
    "shipment.invoice_includes": ("_includes(s.incoterm, incoterms)", True),
    "shipment.charges.count": ("_count(len(s.charges))", False),
    "shipment.goods.main_category": ("_main_category(s.goods) if s.goods else MISSING", True),
    "duty_rules.available": ("available", False),
    "declared_duties.total": ("dd[0]", True),
    "declared_duties.import_duty": ("dd[1]", True),
    "declared_duties.tax": ("dd[2]", True),
    "declared_duties.customs_fee": ("dd[3]", True),
}
# Line names, read from the charge `c` or goods line `g` (no conversion).
_CHARGE_READS: dict[str, tuple[str, bool]] = {
    "charge.type": ("c.type", False),
    "charge.group": ("_groups_get(c.type) or MISSING", True),
    "charge.amount": (
        "c.amount if c.currency is None or c.currency == cur else c.amount * s.fx[c.currency]",
        False,
    ),
    "charge.currency": ("cur", False),
}
_GOODS_READS: dict[str, tuple[str, bool]] = {
    "goods.description": ("g.description", False),
    "goods.hs_code": ("g.hs_code or MISSING", True),
    "goods.category": ("g.category or MISSING", True),
    "goods.value": ("_goods_value(g, cur, s.fx)", True),
    "goods.quantity": ("_opt(g.quantity)", True),
    "goods.weight_kg": ("_opt(g.weight_kg)", True),
}


@dataclass(frozen=True)
class _Access:
    """How the generated function reads the facts: from a `Shipment`'s attributes, or
    from the plain dicts `facts.read_plain` validates (`PLAIN`), where an optional field
    may be absent and every amount is in the valuation currency."""

    shipment: Mapping[str, tuple[str, bool]]
    charge: Mapping[str, tuple[str, bool]]
    goods: Mapping[str, tuple[str, bool]]
    head: tuple[str, ...]  # `cur` and `inva`, the invoice amount in the valuation currency
    charges: str
    goods_lines: str
    charge_type: str
    charge_amount: tuple[str, ...]  # lines setting `ca`, the charge's amount in `cur`
    declared: str


MODELS = _Access(
    _SHIPMENT_READS,
    _CHARGE_READS,
    _GOODS_READS,
    (
        "cur = s.currency",
        "inv = s.invoice",
        # An invoice or goods lines in another currency are converted as the
        # environment converts them (amount × fx, unrounded); the trace's convert
        # steps are made from the facts when it is rendered.
        "ic = inv.currency",
        "inva = inv.amount if ic is None or ic == cur else inv.amount * s.fx[ic]",
    ),
    "s.charges",
    "s.goods",
    "c.type",
    ("cc = c.currency", "ca = c.amount if cc is None or cc == cur else c.amount * s.fx[cc]"),
    "dd = _declared(s, cur)",
)
# Plain facts hold no other currency (see `facts.read_plain`): nothing is converted. An
# optional field may be absent: its default is the model's.
PLAIN = _Access(
    {
        "shipment.id": ('s["id"]', False),
        "shipment.date": ('s["date"]', False),
        "shipment.currency": ("cur", False),
        "shipment.incoterm": ('s.get("incoterm") or MISSING', True),
        "shipment.mode": ('s["mode"]', False),
        "shipment.origin.country": ('s["origin"]["country"]', False),
        "shipment.origin.port": ('s["origin"].get("port") or MISSING', True),
        "shipment.destination.country": ('s["destination"]["country"]', False),
        "shipment.destination.port": ('s["destination"].get("port") or MISSING', True),
        "shipment.payment_method": ('s.get("payment_method", _default_payment)', False),
        "shipment.expected_transit_days": ('_opt_count(s.get("expected_transit_days"))', True),
        "shipment.invoice.amount": ("inva", False),
        "shipment.invoice.currency": ("cur", False),
        "shipment.sum_insured": ('_opt(s.get("sum_insured"))', True),
        "shipment.transit_countries": ('_opt_tuple(s.get("transit_countries"))', True),
        "shipment.goods.count": ('_count(len(s.get("goods", ())))', False),
        "shipment.invoice_includes": ('_includes(s.get("incoterm"), incoterms)', True),
        "shipment.charges.count": ('_count(len(s.get("charges", ())))', False),
        "shipment.goods.main_category": ('_plain_main_category(s.get("goods", ()))', True),
        "duty_rules.available": ("available", False),
        "declared_duties.total": ("dd[0]", True),
        "declared_duties.import_duty": ("dd[1]", True),
        "declared_duties.tax": ("dd[2]", True),
        "declared_duties.customs_fee": ("dd[3]", True),
    },
    {
        "charge.type": ('c["type"]', False),
        "charge.group": ('_groups_get(c["type"]) or MISSING', True),
        "charge.amount": ('c["amount"]', False),
        "charge.currency": ("cur", False),
    },
    {
        "goods.description": ('g["description"]', False),
        "goods.hs_code": ('g.get("hs_code") or MISSING', True),
        "goods.category": ('g.get("category") or MISSING', True),
        "goods.value": ('_opt(g.get("value"))', True),
        "goods.quantity": ('_opt(g.get("quantity"))', True),
        "goods.weight_kg": ('_opt(g.get("weight_kg"))', True),
    },
    ('cur = s["currency"]', 'inva = s["invoice"]["amount"]'),
    's.get("charges", ())',
    's.get("goods", ())',
    'c["type"]',
    ('ca = c["amount"]',),
    'dd = _declared_plain(s.get("duties"))',
)


def _opt(value: Any) -> Any:
    return MISSING if value is None else value


def _goods_value(line: Any, currency: str, fx: Mapping[str, Decimal]) -> Any:
    """A goods line's value in the valuation currency, as the environment converts it."""
    value = line.value
    if value is None:
        return MISSING
    written = line.currency
    return value if written is None or written == currency else value * fx[written]


def _opt_count(days: int | None) -> Any:
    return MISSING if days is None else _count(days)


def _opt_tuple(items: Any) -> Any:
    return MISSING if items is None else tuple(items)


def _includes(incoterm: str | None, incoterms: Mapping[str, tuple[str, ...]] | None) -> Any:
    return tuple((incoterms or {}).get(incoterm, ())) if incoterm else MISSING


_NO_DUTIES = (MISSING, MISSING, MISSING, MISSING)
_ZEROS = (Decimal(0), Decimal(0), Decimal(0), Decimal(0))


def _declared(shipment: Shipment, currency: str) -> tuple[Any, Any, Any, Any]:
    """declared_duties (total, import_duty, tax, customs_fee), as the environment has them."""
    duties = shipment.duties
    if duties is None:
        return _NO_DUTIES
    if not duties:
        return _ZEROS
    totals = {"import_duty": Decimal(0), "tax": Decimal(0), "customs_fee": Decimal(0)}
    fx = shipment.fx
    for duty in duties:
        written = duty.currency
        amount = duty.amount
        totals[duty.type] += (
            amount if written is None or written == currency else amount * fx[written]
        )
    return (
        sum(totals.values(), Decimal(0)),
        totals["import_duty"],
        totals["tax"],
        totals["customs_fee"],
    )


def _declared_plain(duties: Any) -> tuple[Any, Any, Any, Any]:
    """`_declared` of plain facts' duties (all in the valuation currency)."""
    if duties is None:
        return _NO_DUTIES
    if not duties:
        return _ZEROS
    totals = {"import_duty": Decimal(0), "tax": Decimal(0), "customs_fee": Decimal(0)}
    for duty in duties:
        totals[duty["type"]] += duty["amount"]
    return (
        sum(totals.values(), Decimal(0)),
        totals["import_duty"],
        totals["tax"],
        totals["customs_fee"],
    )


def _plain_main_category(goods: Any) -> Any:
    """`environment._main_category` of plain facts' goods lines, whose values (when
    given) are all in the valuation currency: the most valuable categorised line's."""
    lines = [line for line in goods if line.get("category")]
    if not lines:
        return MISSING
    if len(lines) == 1 or not all(line.get("value") is not None for line in lines):
        return lines[0]["category"]
    return max(lines, key=lambda line: line["value"])["category"]


def _overlaps(found: Any, values: tuple[Any, ...]) -> bool:
    if found is MISSING:
        return False
    return any(value in found for value in values)


@dataclass(frozen=True)
class Fired:
    """A decision rule as the results show it, with what the generated code returns."""

    index: int  # in the decision phase plan
    rule: CompiledRule


@dataclass(frozen=True)
class Output:
    """What one run of the generated function returns."""

    excluded: dict[int, CompiledRule] | None
    values: tuple[Any, ...]  # every traced name, in `StraightLine.slots` order
    matched: tuple[list[str] | None, ...]  # per decision rule, the paths it matched
    duty_mark: int  # index of the formula during which duties were estimated, or -1


class StraightLine:
    """The generated function of one pack and the static plan its results are made from."""

    def __init__(
        self,
        function: Callable[..., tuple[Any, ...]],
        source: str,
        slots: Mapping[str, int],
        decision_rules: tuple[CompiledRule, ...],
        total: str,
        premium: str | None,
        uses_duties: bool,
        needs_ctx: bool,
    ) -> None:
        self.function = function
        self.source = source  # kept for reading and for tests
        self.slots = slots
        self.decision_rules = decision_rules
        self.total = slots[total]  # the slot of the total insured value
        self.premium = None if premium is None else slots[premium]  # and of the premium
        self.uses_duties = uses_duties  # a formula estimates duties: make an estimator
        self.needs_ctx = needs_ctx  # a function reads the valuation's context


class _Holder:
    """Where a pack keeps its straight lines. Not pickled: a copy rebuilds them on first use."""

    __slots__ = ("line", "plain")

    def __init__(self) -> None:
        self.line: StraightLine | None = None
        self.plain: StraightLine | bool | None = False  # False: not generated yet

    def __reduce__(self) -> tuple[type[_Holder], tuple[()]]:
        return (_Holder, ())


_KEY = "_straight_line"


def _holder(pack: CompiledPack) -> _Holder:
    holder: _Holder | None = pack.__dict__.get(_KEY)
    if holder is None:
        holder = _Holder()
        try:
            started = time.monotonic_ns()
            holder.line = _Generator(pack).build()
            firstuse.made(started)
        except _Unsupported:
            holder.line = None
        object.__setattr__(pack, _KEY, holder)
    return holder


def straight_line(pack: CompiledPack) -> StraightLine | None:
    """The pack's straight line, generated on first use and kept on the pack."""
    return _holder(pack).line


def plain_line(pack: CompiledPack) -> StraightLine | None:
    """The pack's straight line reading plain facts (`facts.read_plain`), or None when
    the pack has no straight line. Its values come in the same slots as
    `straight_line`'s, so one renderer serves both."""
    holder: _Holder | None = pack.__dict__.get(_KEY)
    if holder is not None and holder.plain is not False:
        return holder.plain  # type: ignore[return-value]
    holder = _holder(pack)
    if holder.plain is False:
        line = None
        if holder.line is not None:
            try:
                started = time.monotonic_ns()
                line = _Generator(pack, PLAIN).build()
                firstuse.made(started)
            except _Unsupported:
                line = None
            if line is not None and line.slots != holder.line.slots:
                line = None
        holder.plain = line
    return holder.plain  # type: ignore[return-value]


class _Generator:
    def __init__(self, pack: CompiledPack, access: _Access = MODELS) -> None:
        self.pack = pack
        self.access = access
        self.functions: Mapping[str, Function] = pack.functions
        if not self.functions:
            raise _Unsupported("the pack does not carry its function table")
        if pack.rounding_mode not in ROUNDING_MODES:
            raise _Unsupported(pack.rounding_mode)
        self.rounding = ROUNDING_MODES[pack.rounding_mode]
        self.globals: dict[str, Any] = {
            "MISSING": MISSING,
            "Bail": Bail,
            "_bail": _bail,
            "_opt": _opt,
            "_goods_value": _goods_value,
            "_opt_count": _opt_count,
            "_opt_tuple": _opt_tuple,
            "_includes": _includes,
            "_count": _count,
            "_main_category": _main_category,
            "_declared": _declared,
            "_declared_plain": _declared_plain,
            "_plain_main_category": _plain_main_category,
            "_default_payment": Shipment.model_fields["payment_method"].default,
            "_overlaps": _overlaps,
            "_quantum": _quantum,
            "_groups_get": dict(pack.charge_types).get,
        }
        self.constants: dict[tuple[type, Any], str] = {}
        self.counter = 0
        groups = list(dict.fromkeys(g for g in pack.charge_types.values() if g))
        self.sum_names = ["total", *groups, *pack.charge_types]
        base: dict[str, Symbol] = {**SHIPMENT, **DECLARED_DUTIES, **DUTY_RULES}
        base.update(charge_symbols(sorted(groups), list(pack.charge_types)))
        for name, value in pack.parameters.items():
            base[name] = _parameter_symbol(value, pack.where)
        self.symbols = base
        # Locals of shipment-level names: name -> (identifier, may be MISSING)
        self.locals: dict[str, tuple[str, bool]] = {}
        self.line_locals: dict[str, tuple[str, bool]] = {}
        self.prologue: list[str] = []
        self.line_reads: Mapping[str, tuple[str, bool]] = {}
        self.line_prologue: list[str] = []
        self.needs_ctx = False
        self.sums_read: set[str] = set()  # the charges.* sums something reads
        self.computed = False  # whether the condition being generated computes a value
        self.values: dict[str, Any] = {}  # constant identifier -> its value
        self.needs_dd = False
        # The charge types' own exclusions (see `build`) and how they are looked up.
        self.static: dict[str, CompiledRule] = {}
        self.static_get = ""
        self.static_only = False

    # --- identifiers and constants ---

    def mint(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any) -> str:
        if value is True or value is False or value is None:
            return repr(value)
        # By representation: Decimal("1.0") == Decimal("1.00"), yet they are not the same
        # constant (their exponents carry into every figure made from them).
        key = (type(value), repr(value))
        found = self.constants.get(key)
        if found is None:
            found = self.constants[key] = self.mint("k")
            self.globals[found] = value
            self.values[found] = value
        return found

    def folded(self, op: str, *operands: str) -> str | None:
        """A constant for `op` over constant operands, computed as the function would
        compute it (under the engine's context); None when not all are constants or the
        operation fails (the function then fails at run time, as the formula does)."""
        if not all(operand in self.values for operand in operands):
            return None
        values = [self.values[operand] for operand in operands]
        if not all(type(value) is Decimal for value in values):
            return None
        try:
            with exact():
                if len(values) == 1:
                    result = -values[0] if op == "-" else +values[0]
                else:
                    result = _ARITHMETIC[op](values[0], values[1])
        except ArithmeticError:
            return None
        return self.const(result)

    def bind(self, value: Any, prefix: str = "h") -> str:
        name = self.mint(prefix)
        self.globals[name] = value
        return name

    # --- names ---

    def read(self, dotted: str) -> tuple[str, bool]:
        """(identifier, may be MISSING) of a name; a parameter is a constant."""
        if dotted in self.line_locals:
            return self.line_locals[dotted]
        if dotted in self.line_reads:
            code, missing = self.line_reads[dotted]
            ident = self.mint("l")
            self.line_prologue.append(f"{ident} = {code}")
            self.line_locals[dotted] = (ident, missing)
            return ident, missing
        if dotted in self.locals:
            if dotted.startswith("charges."):
                self.sums_read.add(dotted)
            return self.locals[dotted]
        if dotted in self.pack.parameters:
            return self.const(self.pack.parameters[dotted]), False
        if dotted in self.access.shipment:
            code, missing = self.access.shipment[dotted]
            if code.startswith("dd["):
                self.needs_dd = True
            ident = self.mint("n")
            self.prologue.append(f"{ident} = {code}")
            self.locals[dotted] = (ident, missing)
            return ident, missing
        raise _Unsupported(f"name {dotted}")

    def kind(self, node: Expr, scope_symbols: Mapping[str, Symbol]) -> str:
        """The type the formula compiler gives `node` (to place dates as it does)."""
        pack = self.pack
        formula, _ = compile_formula(
            node,
            "",
            pack.where,
            {**self.symbols, **scope_symbols},
            self.functions,
            pack.rounding_mode,
            pack.tables,
        )
        if formula is None:
            raise _Unsupported("a sub-expression does not compile")
        return formula.type

    # --- formulas: the formula compiler's semantics, for the common case ---

    def expr(self, node: Expr, scope: Mapping[str, Symbol]) -> str:
        if isinstance(node, Num | Text):
            return self.const(node.value)
        if isinstance(node, Bool):
            return repr(node.value)
        if isinstance(node, ListOf):
            items = [self.expr(item, scope) for item in node.items]
            return "(" + "".join(f"{item}, " for item in items) + ")"
        if isinstance(node, Name):
            ident, missing = self.read(node.dotted)
            return f"({ident} if {ident} is not MISSING else _bail())" if missing else ident
        if isinstance(node, Unary):
            operand = self.expr(node.operand, scope)
            if node.op == "not":
                return f"(not {operand})"
            return self.folded(node.op, operand) or f"({node.op}{operand})"
        if isinstance(node, Binary):
            left = self.expr(node.left, scope)
            if node.op == "**":
                right = node.right
                if isinstance(right, Num):
                    exponent = int(right.value)
                elif (
                    isinstance(right, Unary) and right.op == "-" and isinstance(right.operand, Num)
                ):
                    exponent = -int(right.operand.value)
                else:
                    raise _Unsupported("exponent")
                return f"({left} ** {exponent!r})"
            if node.op not in ("+", "-", "*", "/"):
                raise _Unsupported(node.op)
            right_code = self.expr(node.right, scope)
            return self.folded(node.op, left, right_code) or f"({left} {node.op} {right_code})"
        if isinstance(node, Compare):
            return self.compare(node, scope)
        if isinstance(node, Logic):
            if node.op not in ("and", "or"):
                raise _Unsupported(node.op)
            joined = f" {node.op} ".join(self.expr(value, scope) for value in node.values)
            return f"(True if {joined} else False)"
        if isinstance(node, IfElse):
            test = self.expr(node.test, scope)
            then = self.expr(node.then, scope)
            otherwise = self.expr(node.otherwise, scope)
            return f"({then} if {test} else {otherwise})"
        if isinstance(node, Call):
            return self.call(node, scope)
        raise _Unsupported(type(node).__name__)

    def compare(self, node: Compare, scope: Mapping[str, Symbol]) -> str:
        if node.op in ("in", "not in"):
            left = self.expr(node.left, scope)
            return f"({left} {node.op} {self.expr(node.right, scope)})"
        if node.op not in ("==", "!=", "<", "<=", ">", ">="):
            raise _Unsupported(node.op)
        # `shipment.date >= "2025-08-29"`: a text literal next to a date is a date.
        if isinstance(node.right, Text) and self.kind(node.left, scope) == DATE:
            left = self.expr(node.left, scope)
            right = self.const(datetime.date.fromisoformat(node.right.value))
        elif isinstance(node.left, Text) and self.kind(node.right, scope) == DATE:
            left = self.const(datetime.date.fromisoformat(node.left.value))
            right = self.expr(node.right, scope)
        else:
            left, right = self.expr(node.left, scope), self.expr(node.right, scope)
        return f"({left} {node.op} {right})"

    def call(self, node: Call, scope: Mapping[str, Symbol]) -> str:
        if node.func == "exists":
            arg = node.args[0]
            if len(node.args) != 1 or not isinstance(arg, Name):
                raise _Unsupported("exists")
            ident, missing = self.read(arg.dotted)
            return f"({ident} is not MISSING)" if missing else "True"
        if node.func == "round":
            value = self.expr(node.args[0], scope)
            rounding = self.const(self.rounding)
            if len(node.args) == 1:
                return f"{value}.quantize(_quantum(places), rounding={rounding})"
            places = node.args[1]
            if not isinstance(places, Num):
                raise _Unsupported("round places")
            quantum = self.const(_quantum(int(places.value)))
            return f"{value}.quantize({quantum}, rounding={rounding})"
        if node.func == "lookup":
            arg = node.args[0]
            if len(node.args) != 1 or not isinstance(arg, Text):
                raise _Unsupported("lookup")
            table = self.pack.tables[arg.value]
            keys = [
                self.expr(Name(node.col, tuple(key.split("."))), scope) for _, key in table.keys
            ]
            symbols = {**self.symbols, **scope}
            key_types = [symbols[key].type if key in symbols else "" for _, key in table.keys]
            if table.index is not None and key_types == [TEXT]:
                # One text key: the row index's dict get, inline; no row bails.
                get, found = self.bind(table.index.get, "t"), self.mint("w")
                return (
                    f"({found}.value if ({found} := {get}(({keys[0]},))) is not None else _bail())"
                )
            return f"{self.bind(_table_lookup(table), 't')}({', '.join(keys)})"
        function = self.functions.get(node.func)
        if function is None:
            raise _Unsupported(f"function {node.func}")
        args = [self.expr(arg, scope) for arg in node.args]
        impl = self.bind(function.impl, "f")
        if function.needs_env:
            if BUILTINS.get(node.func) is not function:
                raise _Unsupported("a custom function reading the environment")
            self.needs_ctx = True
            args.insert(0, "ctx")
        return f"{impl}({', '.join(args)})"

    # --- conditions: engine.compiling.conditions' semantics ---

    def operand(self, node: Expr, scope: Mapping[str, Symbol]) -> _Operand:
        if isinstance(node, Num | Text | Bool):
            kind = NUMBER if isinstance(node, Num) else TEXT if isinstance(node, Text) else BOOL
            return _Operand(kind, constant=node.value)
        if isinstance(node, Unary) and node.op == "-" and isinstance(node.operand, Num):
            return _Operand(NUMBER, constant=-node.operand.value)
        if isinstance(node, ListOf):
            items = [self.operand(item, scope) for item in node.items]
            if any(item.constant is MISSING for item in items):
                raise _Unsupported("list of non-constants")
            return _Operand(LIST, constant=tuple(item.constant for item in items))
        if isinstance(node, Name):
            symbol = {**self.symbols, **scope}.get(node.dotted)
            if symbol is None:
                raise _Unsupported(node.dotted)
            if symbol.constant is not MISSING:
                value = symbol.constant
                return _Operand(LIST if isinstance(value, tuple) else symbol.type, constant=value)
            ident, missing = self.read(node.dotted)
            return _Operand(symbol.type, code=ident, missing=missing)
        # Computed: the formula's value; an absent value it reads bails (the interpreted
        # path makes the comparison false). It may raise (a division by zero, say).
        self.computed = True
        return _Operand(self.kind(node, scope), code=self.expr(node, scope), missing=False)

    def condition(self, node: Expr, negate: bool, scope: Mapping[str, Symbol]) -> str:
        if isinstance(node, Logic):
            conjunction = (node.op == "and") != negate
            parts = [self.condition(value, negate, scope) for value in node.values]
            if any(part == ("False" if conjunction else "True") for part in parts):
                return "False" if conjunction else "True"
            kept = [part for part in parts if part != ("True" if conjunction else "False")]
            if not kept:
                return "True" if conjunction else "False"
            return "(" + (" and " if conjunction else " or ").join(kept) + ")"
        if isinstance(node, Unary) and node.op == "not":
            return self.condition(node.operand, not negate, scope)
        if isinstance(node, Compare):
            return self.condition_compare(node, negate, scope)
        if isinstance(node, Call) and node.func == "exists":
            operand = self.operand(node.args[0], scope)
            if operand.constant is not MISSING:
                return "False" if negate else "True"
            if not operand.missing:
                return "False" if negate else "True"
            return f"({operand.code} {'is' if negate else 'is not'} MISSING)"
        if isinstance(node, Call) and node.func == "overlaps":
            listed, constant = self.operand(node.args[0], scope), self.operand(node.args[1], scope)
            if negate or constant.constant is MISSING or listed.code is None:
                raise _Unsupported("overlaps")
            values = tuple(constant.constant)
            if not values:
                return "False"
            return f"_overlaps({listed.code}, {self.const(values)})"
        if isinstance(node, Bool):
            return "True" if node.value != negate else "False"
        operand = self.operand(node, scope)
        if operand.constant is not MISSING:
            return "True" if operand.constant != negate else "False"
        return self.guarded(operand, f"{operand.code} == {not negate!r}")

    def guarded(self, operand: _Operand, test: str) -> str:
        if operand.missing:
            return f"({operand.code} is not MISSING and {test})"
        return f"({test})"

    def condition_compare(self, node: Compare, negate: bool, scope: Mapping[str, Symbol]) -> str:
        if node.op in ("in", "not in"):
            return self.membership(node, negate != (node.op == "not in"), scope)
        op = _NEGATE[node.op] if negate else node.op
        left, right = self.operand(node.left, scope), self.operand(node.right, scope)
        if left.constant is not MISSING and right.constant is MISSING:
            left, right, op = right, left, _FLIP[op]
        if left.constant is not MISSING:
            return "True" if _fold(op, left.constant, right.constant) else "False"
        if right.constant is MISSING:
            # Two values known per shipment: left first, right only when left is present.
            a, b = self.mint("a"), self.mint("b")
            return (
                f"((({a} := {left.code}) is not MISSING) and "
                f"(({b} := {right.code}) is not MISSING) and {a} {op} {b})"
            )
        value = right.constant
        if left.kind == DATE and isinstance(value, str):
            value = datetime.date.fromisoformat(value)
        if op == "==":
            return f"({left.code} == {self.const(value)})"
        return self.guarded(left, f"{left.code} {op} {self.const(value)}")

    def membership(self, node: Compare, negate: bool, scope: Mapping[str, Symbol]) -> str:
        left, right = self.operand(node.left, scope), self.operand(node.right, scope)
        if left.constant is MISSING and right.constant is not MISSING:
            values = []
            for item in right.constant:
                if left.kind == DATE and isinstance(item, str):
                    item = datetime.date.fromisoformat(item)
                values.append(item)
            if not values:
                return "True" if negate else "False"
            test = f"{left.code} {'not in' if negate else 'in'} {self.const(tuple(values))}"
            return self.guarded(left, test)
        if left.constant is not MISSING and right.constant is MISSING:
            if negate:
                raise _Unsupported("not in a list fact")
            return self.guarded(right, f"{self.const(left.constant)} in {right.code}")
        if left.constant is not MISSING and right.constant is not MISSING:
            return "True" if (left.constant in right.constant) != negate else "False"
        raise _Unsupported("in between two facts")

    # --- the function ---

    def sums(self, body: list[str]) -> list[str]:
        """`body` with the charge sums in place: only those something reads are summed.

        Sums of exact decimals: which are made does not change any of them.
        """
        kept = [name for name in self.sum_names if f"charges.{name}" in self.sums_read]
        slot = {name: index for index, name in enumerate(kept)}
        adds: dict[str, tuple[int, ...]] = {}
        for kind, group in self.pack.charge_types.items():
            adds[kind] = tuple(
                slot[name] for name in ("total", group, kind) if name is not None and name in slot
            )
        single = all(len(add) <= 1 for add in adds.values())
        typed = self.access.charge_type
        # An unknown charge type fails the lookup, as counting it fails on the other path.
        kinds = f"ex = {self.static_get}({typed})" if self.static_get else "ex = None"
        if single and self.static_only:
            # Excluded by its type or counted in one sum: both from one lookup of the type.
            self.globals["_kinds"] = {
                kind: (self.static.get(kind), add[0] if add else None) for kind, add in adds.items()
            }
            kinds = f"ex, j = _kinds[{typed}]"
            counting = ["if j is not None: sums[j] += ca"]
        elif single:
            self.globals["_slots"] = {kind: add[0] if add else None for kind, add in adds.items()}
            counting = [f"j = _slots[{typed}]", "if j is not None: sums[j] += ca"]
        else:
            self.globals["_slots"] = adds
            counting = [f"for j in _slots[{typed}]: sums[j] += ca"]
        self.globals["_sums0"] = [Decimal(0)] * len(kept)
        idents = [self.locals[f"charges.{name}"][0] for name in kept]
        out: list[str] = []
        for line in body:
            stripped = line.strip()
            indent = line[: len(line) - len(line.lstrip())]
            if stripped == _START:
                out.append(indent + "sums = _sums0.copy()")
            elif stripped == _SUMS:
                out.extend(indent + counted for counted in counting)
            elif stripped == _KINDS:
                out.append(indent + kinds)
            elif stripped == _UNPACK:
                if idents:
                    out.append(indent + "".join(f"{ident}, " for ident in idents) + "= sums")
            else:
                out.append(line)
        return out

    def build(self) -> StraightLine:
        pack = self.pack
        formulas = []
        for name, formula in pack.formulas:
            expr, _ = parse(formula.text, formula.where)
            if expr is None:
                raise _Unsupported("a formula does not parse")
            formulas.append((name, formula, expr))
        rules = {rule.id: rule for rule in pack.rules}
        charge_plan = pack.plans.get(CHARGE_PHASE)
        decision_plan = pack.plans.get(DECISION_PHASE)
        charge_rules = [rules[i] for i in (charge_plan.rule_ids if charge_plan else ())]
        decision_rules = tuple(rules[i] for i in (decision_plan.rule_ids if decision_plan else ()))
        # Duties estimated in a rule condition would be traced among the rules: not here.
        rule_exprs = {}
        for rule in [*charge_rules, *decision_rules]:
            expr, _ = parse(rule.when, rule.where)
            if expr is None:
                raise _Unsupported("a condition does not parse")
            if "estimate_duties" in calls_in(expr):
                raise _Unsupported("estimate_duties in a condition")
            rule_exprs[rule.id] = expr

        body: list[str] = []
        emit = body.append
        no_scope: dict[str, Symbol] = {}

        # Charges: the charge rules on each line, then the sums of the counted ones.
        emit(_START)
        emit("excluded = None")
        access = self.access
        emit(f"for i, c in enumerate({access.charges}):")
        self.line_reads, self.line_locals, self.line_prologue = access.charge, {}, []
        # A charge in another currency counts converted, as the environment has it.
        loop: list[str] = list(access.charge_amount)
        # The leading `charge.type == "..."` exclusions (charge_types' own) are one dict get.
        static: dict[str, CompiledRule] = {}
        rest = list(charge_rules)
        while rest and rest[0].effect == "exclude_charge":
            tested = _type_test(rule_exprs[rest[0].id])
            if tested is None:
                break
            static.setdefault(tested, rest.pop(0))
        tests: list[str] = []
        for rule in rest:
            self.computed = False
            test = self.condition(rule_exprs[rule.id], False, CHARGE)
            if rule.effect == "reject_charge":
                tests.append(f"if {test}: raise Bail")
            elif self.computed:  # it may raise: tested even when a rule before explains it
                hit = self.mint("x")
                tests.append(f"{hit} = {test}")
                tests.append(f"if {hit} and ex is None: ex = {self.bind(rule, 'r')}")
            else:
                tests.append(f"if ex is None and {test}: ex = {self.bind(rule, 'r')}")
        loop.extend(self.line_prologue)
        self.static = static
        self.static_get = self.bind(static.get, "r") if static else ""
        self.static_only = not tests  # no rule but the type's own excludes a charge
        loop.append(_KINDS)  # the type's exclusion, made with the sums (see `sums`)
        loop.extend(tests)
        loop.append("if ex is not None:")
        loop.append("    if excluded is None: excluded = {}")
        loop.append("    excluded[i] = ex")
        loop.append("    continue")
        loop.append(_SUMS)  # made at the end, for the sums something reads
        body.extend("    " + line for line in loop)
        for name in self.sum_names:
            self.locals[f"charges.{name}"] = (self.mint("n"), False)
        emit(_UNPACK)

        # Formulas, in the order they were checked to depend on each other.
        self.line_reads, self.line_locals = {}, {}
        duty_formulas = []
        emit("mark = -1")
        for index, (name, formula, expr) in enumerate(formulas):
            code = self.expr(expr, no_scope)
            ident = self.mint("v")
            emit(f"{ident} = {code}")
            self.locals[name] = (ident, False)
            self.symbols[name] = Symbol(formula.type)
            if "estimate_duties" in calls_in(expr):
                duty_formulas.append(index)
                emit(f"if mark < 0 and duties.result is not None: mark = {index}")

        # Decision rules: the shipment, then each charge and goods line they are for.
        matched = []
        for index in range(len(decision_rules)):
            ident = f"m{index}"
            matched.append(ident)
            emit(f"{ident} = None")
        for index, rule in enumerate(decision_rules):
            if rule.scope == "shipment":
                test = self.condition(rule_exprs[rule.id], False, no_scope)
                emit(f"if {test}: m{index} = ['shipment']")
        for scope, reads, symbols, variable, paths in (
            ("charge", access.charge, CHARGE, "c", "_charge_paths"),
            ("goods", access.goods, GOODS, "g", "_goods_paths"),
        ):
            scoped = [(i, r) for i, r in enumerate(decision_rules) if r.scope == scope]
            if not scoped:
                continue
            self.globals[paths] = _CHARGE_PATHS if scope == "charge" else _GOODS_PATHS
            prefix = "charges" if scope == "charge" else "goods"
            self.line_reads, self.line_locals, self.line_prologue = reads, {}, []
            tests = []
            for index, rule in scoped:
                test = self.condition(rule_exprs[rule.id], False, symbols)
                tests.append(f"if {test}:")
                tests.append(f"    if m{index} is None: m{index} = []")
                tests.append(
                    f"    m{index}.append({paths}[i] if i < {len(_CHARGE_PATHS)} "
                    f"else {self.const(prefix + '[')} + str(i) + ']')"
                )
            collection = access.charges if scope == "charge" else access.goods_lines
            emit(f"for i, {variable} in enumerate({collection}):")
            body.extend("    " + line for line in [*self.line_prologue, *tests])
        self.line_reads, self.line_locals = {}, {}

        # Every name a step shows, in slots the renderer reads.
        needed = [pack.result.total_insured_value, *pack.result.components]
        figures = [pack.result.premium, pack.result.deductible, *pack.result.figures]
        traced: dict[str, None] = {}
        for name, formula, _ in formulas:
            for read in formula.names:
                traced[read] = None
            traced[name] = None
        for result_name in [*needed, *figures]:
            if result_name is not None:
                traced[result_name] = None
        slot_names = []
        values = []
        for name in traced:
            if name in pack.parameters:
                values.append(self.const(pack.parameters[name]))
            else:
                values.append(self.read(name)[0])
            slot_names.append(name)
        emit(
            "return (excluded, ("
            + "".join(f"{v}, " for v in values)
            + "), ("
            + "".join(f"{m}, " for m in matched)
            + "), mark)"
        )

        body = self.sums(body)
        head = [
            "def valuate(s, places, available, incoterms, duties, ctx):",
            *("    " + line for line in access.head),
        ]
        if self.needs_dd:
            head.append("    " + access.declared)
        head.extend("    " + line for line in self.prologue)
        source = "\n".join([*head, *("    " + line for line in body)]) + "\n"
        namespace: dict[str, Any] = dict(self.globals)
        kind = " (plain facts)" if access is PLAIN else ""
        compiled = compile(
            source, f"<straight line of {pack.policy.id}@{pack.version}{kind}>", "exec"
        )
        exec(compiled, namespace)
        return StraightLine(
            namespace["valuate"],
            source,
            {name: i for i, name in enumerate(slot_names)},
            decision_rules,
            pack.result.total_insured_value,
            pack.result.premium,
            uses_duties=bool(duty_formulas),
            needs_ctx=self.needs_ctx,
        )


@dataclass(frozen=True)
class _Operand:
    kind: str
    constant: Any = MISSING
    code: str | None = None
    missing: bool = False


# Placeholders in the body for the charge sums (see `_Generator.sums`); not Python.
_START, _SUMS, _UNPACK, _KINDS = "\x00start", "\x00sums", "\x00unpack", "\x00kinds"

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


def _fold(op: str, left: Any, right: Any) -> bool:
    compare: Callable[[Any, Any], bool] = {
        "==": operator.eq,
        "!=": operator.ne,
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }[op]
    return compare(left, right)


_ARITHMETIC: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def _type_test(node: Expr) -> str | None:
    """The charge type of a condition `charge.type == "<type>"`, else None."""
    if (
        isinstance(node, Compare)
        and node.op == "=="
        and isinstance(node.left, Name)
        and node.left.dotted == "charge.type"
        and isinstance(node.right, Text)
    ):
        return node.right.value
    return None


def _table_lookup(table: CompiledTable) -> Callable[..., Decimal | str]:
    """The table's row value (a number, or text) for the key values; a gap bails."""
    columns = tuple(column for column, _ in table.keys)
    lookup = table.lookup
    index = table.index
    if index is not None and len(columns) == 1:
        get = index.get
        (column,) = columns

        def one(value: Any) -> Decimal | str:
            if type(value) is str:
                row = get((value,))
                if row is None:
                    raise Bail
                return row.value
            found = lookup({column: value})
            if found is None:
                raise Bail
            return found

        return one

    def many(*values: Any) -> Decimal | str:
        found = lookup(dict(zip(columns, values, strict=True)))
        if found is None:
            raise Bail
        return found

    return many


# The context `from_currency` and `estimate_duties` read, built only when a pack calls them.
def context(shipment: Shipment, duties: Any) -> dict[str, Any]:
    return {SHIPMENT_FX: (shipment.fx, shipment.currency), DUTIES: duties}


def plain_context(facts: Mapping[str, Any], duties: Any) -> dict[str, Any]:
    """`context` of plain facts."""
    return {SHIPMENT_FX: (facts.get("fx") or {}, facts["currency"]), DUTIES: duties}
