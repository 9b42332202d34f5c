"""Parse formula and condition text into a small, checked expression tree.

In: the text of a formula or `when` condition and the Location of its YAML scalar.
Out: an `Expr` tree of our own node types, or problems with `file:line:col`.

The syntax is a subset of Python expressions, parsed by `ast` and then rebuilt
node by node into the types below; anything not explicitly allowed is rejected
here, at validation, so nothing reaches evaluation that we did not design for.
Number literals are read from their source text as Decimal: Python's parser would
already have turned `1.1` into a binary float. A number written with a percent sign
right after it (`0.35%`) is that many hundredths, exactly: Decimal("0.0035"); `%` is
never the modulo operator here.
"""

from __future__ import annotations

import ast
import io
import itertools
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from engine.errors import Location, Problem

# Exponents are literal and small: (1 + r) ** 2 is legitimate, 10 ** 10000 is a
# denial of service waiting in a rule file.
MAX_POWER = 12

# Bounds on one expression, checked before and after Python's parser sees it, so that
# loading any rule file takes time in proportion to its size and no recursion runs
# without a bound (Python's parser and our builder both recurse). Mechanisms, not
# figures: the shipped rule files' longest expression is about 200 characters, 8 levels
# deep and 42 nodes; past these a formula is better split into named helper formulas.
MAX_EXPRESSION_CHARS = 4_000
MAX_DEPTH = 200  # a sum of n terms nests n deep; evaluation recurses as deep
MAX_NODES = 2_000
MAX_LITERAL_DIGITS = 60  # as many as a facts number may hold (loading/jsontext)

NAME_PART = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


@dataclass(frozen=True)
class Expr:
    col: int  # 0-based offset in the expression text, for error messages


@dataclass(frozen=True)
class Num(Expr):
    value: Decimal


@dataclass(frozen=True)
class Text(Expr):
    value: str


@dataclass(frozen=True)
class Bool(Expr):
    value: bool


@dataclass(frozen=True)
class ListOf(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Name(Expr):
    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Unary(Expr):
    op: str  # "-", "+", "not"
    operand: Expr


@dataclass(frozen=True)
class Binary(Expr):
    op: str  # "+", "-", "*", "/", "**"
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare(Expr):
    op: str  # "==", "!=", "<", "<=", ">", ">=", "in", "not in"
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Logic(Expr):
    op: str  # "and", "or"
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class IfElse(Expr):
    test: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True)
class Call(Expr):
    func: str
    args: tuple[Expr, ...]


_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_COMPARE = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_UNARY = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not"}
_NUMBER_TEXT = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")

_WHAT = {
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Subscript: "subscripts",
    ast.Attribute: "attribute access on a value",
    ast.Dict: "dictionaries",
    ast.Set: "sets",
    ast.Tuple: "tuples",
    ast.Starred: "unpacking",
    ast.NamedExpr: "assignment",
    ast.JoinedStr: "f-strings",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.Slice: "slices",
}


class _Reject(Exception):
    def __init__(self, node: ast.AST | None, message: str) -> None:
        super().__init__(message)
        self.col = getattr(node, "col_offset", 0) if node is not None else 0
        self.line = getattr(node, "lineno", 1) if node is not None else 1
        self.message = message


def text_location(where: Location, line: int, col: int) -> Location:
    """Position of a column inside expression text held by the YAML scalar at `where`.

    Exact for the usual single-line plain scalar; for multi-line text it names the line
    within the scalar, and we accept that a quoted scalar's column is one off.
    """
    if not where.line:
        return where
    if line <= 1:
        return Location(where.file, where.line, where.col + col, where.path)
    return Location(where.file, where.line + line - 1, col + 1, where.path)


def parse(text: str, where: Location) -> tuple[Expr | None, list[Problem]]:
    """Parse one expression. Returns (tree, []) or (None, problems)."""
    source = " ".join(text.strip().splitlines()) if "\n" in text.strip() else text.strip()
    if not source:
        return None, [Problem("expr.empty", "the expression is empty", where)]
    if len(source) > MAX_EXPRESSION_CHARS:
        return None, [
            Problem(
                "expr.too_long",
                f"the expression has {len(source):,} characters, more than the "
                f"{MAX_EXPRESSION_CHARS:,} allowed; split it into named helper formulas",
                where,
            )
        ]
    python, percents = _percent_signs(source)
    try:
        tree = ast.parse(python, mode="eval")
    except (RecursionError, MemoryError):  # CPython's parser on very deep nesting
        return None, [_too_deep(where)]
    except SyntaxError as exc:
        col = max((exc.offset or 1) - 1, 0)
        msg = (exc.msg or "invalid syntax").replace("invalid syntax. ", "")
        return None, [
            Problem(
                "expr.syntax", f"syntax error: {msg} in `{source}`", text_location(where, 1, col)
            )
        ]
    bounds = _bounds(tree, where)
    if bounds:
        return None, bounds
    try:
        return _Builder(python, percents).build(tree.body), []
    except _Reject as exc:
        return None, [
            Problem("expr.unsupported", exc.message, text_location(where, exc.line, exc.col))
        ]


def _percent_signs(source: str) -> tuple[str, frozenset[int]]:
    """The text Python's parser reads, and the columns of the percent literals in it.

    `0.35%` becomes `0.35j` (the same length, so columns still point into the author's
    text): an imaginary literal, which no rule may write, so the builder knows it for a
    percent by its column. A `%` followed by an operand (`7%2`) is left alone, and
    refused as the modulo operator.
    """
    if "%" not in source:
        return source, frozenset()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return source, frozenset()  # Python's parser reports it
    chars, found = list(source), set()
    for token, after in itertools.pairwise(tokens):
        if (
            token.type == tokenize.NUMBER
            and after.type == tokenize.OP
            and after.string == "%"
            and after.start == token.end
            and token.start[0] == 1
            and _NUMBER_TEXT.fullmatch(token.string)
        ):
            col = after.start[1]
            following = source[col + 1 : col + 2]
            if following.isalnum() or following in ("_", ".", "(", "[", '"', "'"):
                continue
            chars[col] = "j"
            found.add(token.start[1])
    return "".join(chars), frozenset(found)


def _too_deep(where: Location) -> Problem:
    return Problem(
        "expr.too_deep",
        f"the expression nests more than {MAX_DEPTH} levels deep; split it into named "
        "helper formulas",
        where,
    )


def _bounds(tree: ast.AST, where: Location) -> list[Problem]:
    """Depth and size of Python's tree, walked without recursion, before our builder
    (which recurses) sees it."""
    nodes = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            return [_too_deep(where)]
        if nodes > MAX_NODES:
            return [
                Problem(
                    "expr.too_large",
                    f"the expression has more than {MAX_NODES:,} terms; split it into "
                    "named helper formulas",
                    where,
                )
            ]
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return []


class _Builder:
    def __init__(self, source: str, percents: frozenset[int] = frozenset()) -> None:
        self.source = source
        self.percents = percents  # columns of the number literals written with `%`

    def build(self, node: ast.expr) -> Expr:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            what = _WHAT.get(type(node), type(node).__name__)
            raise _Reject(node, f"{what} are not allowed in rule expressions")
        built: Expr = method(node)
        return built

    def _Constant(self, node: ast.Constant) -> Expr:
        value = node.value
        if isinstance(value, bool):
            return Bool(node.col_offset, value)
        if isinstance(value, str):
            return Text(node.col_offset, value)
        if isinstance(value, complex) and node.col_offset in self.percents:
            digits = (ast.get_source_segment(self.source, node) or "")[:-1]
            if sum(c.isdigit() for c in digits) > MAX_LITERAL_DIGITS:
                raise _Reject(node, f"a number literal has more than {MAX_LITERAL_DIGITS} digits")
            return Num(node.col_offset, Decimal(digits).scaleb(-2))
        if isinstance(value, int | float):
            text = ast.get_source_segment(self.source, node) or ""
            if not _NUMBER_TEXT.fullmatch(text):
                raise _Reject(node, f"write numbers in plain decimal notation, not `{text}`")
            if sum(c.isdigit() for c in text) > MAX_LITERAL_DIGITS:
                raise _Reject(node, f"a number literal has more than {MAX_LITERAL_DIGITS} digits")
            try:
                return Num(node.col_offset, Decimal(text))
            except InvalidOperation:  # pragma: no cover - the regex admits only valid text
                raise _Reject(node, f"`{text}` is not a number") from None
        if value is None:
            raise _Reject(node, "`None` is not a value here; use exists(...) to test presence")
        raise _Reject(node, f"literal {value!r} is not allowed")

    def _Name(self, node: ast.Name) -> Expr:
        if node.id in ("True", "False"):
            return Bool(node.col_offset, node.id == "True")
        self._check_part(node, node.id)
        return Name(node.col_offset, (node.id,))

    def _Attribute(self, node: ast.Attribute) -> Expr:
        parts: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            raise _Reject(
                node, "attribute access is only allowed on names, e.g. shipment.destination.country"
            )
        parts.append(current.id)
        parts.reverse()
        for part in parts:
            self._check_part(node, part)
        return Name(node.col_offset, tuple(parts))

    def _check_part(self, node: ast.AST, part: str) -> None:
        if part.startswith("_"):
            raise _Reject(node, f"names beginning with '_' are not allowed (`{part}`)")
        if not NAME_PART.fullmatch(part):
            raise _Reject(node, f"`{part}` is not a valid name: use lower_snake_case")

    def _List(self, node: ast.List) -> Expr:
        return ListOf(node.col_offset, tuple(self.build(item) for item in node.elts))

    def _UnaryOp(self, node: ast.UnaryOp) -> Expr:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise _Reject(node, "bitwise operators are not allowed")
        return Unary(node.col_offset, op, self.build(node.operand))

    def _BinOp(self, node: ast.BinOp) -> Expr:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise _Reject(
                node,
                f"operator `{_op_text(node)}` is not allowed; "
                "use + - * / and ** with a small exponent",
            )
        left, right = self.build(node.left), self.build(node.right)
        if op == "**":
            exponent = right.operand if isinstance(right, Unary) and right.op == "-" else right
            if not (
                isinstance(exponent, Num)
                and exponent.value == exponent.value.to_integral()
                and abs(exponent.value) <= MAX_POWER
            ):
                raise _Reject(
                    node.right,
                    f"the exponent of ** must be a whole number literal "
                    f"between -{MAX_POWER} and {MAX_POWER}",
                )
        return Binary(node.col_offset, op, left, right)

    def _BoolOp(self, node: ast.BoolOp) -> Expr:
        op = "and" if isinstance(node.op, ast.And) else "or"
        return Logic(node.col_offset, op, tuple(self.build(v) for v in node.values))

    def _Compare(self, node: ast.Compare) -> Expr:
        # a < b < c means (a < b) and (b < c), as in Python.
        parts: list[Expr] = []
        left = self.build(node.left)
        for op_node, right_node in zip(node.ops, node.comparators, strict=True):
            op = _COMPARE.get(type(op_node))
            if op is None:
                raise _Reject(node, "`is` is not allowed; use == or exists(...)")
            right = self.build(right_node)
            parts.append(Compare(node.col_offset, op, left, right))
            left = right
        return parts[0] if len(parts) == 1 else Logic(node.col_offset, "and", tuple(parts))

    def _IfExp(self, node: ast.IfExp) -> Expr:
        return IfElse(
            node.col_offset, self.build(node.test), self.build(node.body), self.build(node.orelse)
        )

    def _Call(self, node: ast.Call) -> Expr:
        if not isinstance(node.func, ast.Name):
            raise _Reject(node, "only named functions can be called, e.g. max(a, b)")
        if node.keywords:
            raise _Reject(node, "keyword arguments are not allowed")
        self._check_part(node.func, node.func.id)
        return Call(node.col_offset, node.func.id, tuple(self.build(a) for a in node.args))


def _op_text(node: ast.BinOp) -> str:
    return {
        ast.Mod: "%",
        ast.FloorDiv: "//",
        ast.MatMult: "@",
        ast.LShift: "<<",
        ast.RShift: ">>",
        ast.BitOr: "|",
        ast.BitAnd: "&",
        ast.BitXor: "^",
    }.get(type(node.op), type(node.op).__name__)


def nodes(expr: Expr) -> Iterator[Expr]:
    """Every node of the tree, in reading order (`a if c else b` reads a, c, b)."""
    yield expr
    if isinstance(expr, ListOf):
        children: tuple[Expr, ...] = expr.items
    elif isinstance(expr, Unary):
        children = (expr.operand,)
    elif isinstance(expr, Binary | Compare):
        children = (expr.left, expr.right)
    elif isinstance(expr, Logic):
        children = expr.values
    elif isinstance(expr, IfElse):
        children = (expr.then, expr.test, expr.otherwise)
    elif isinstance(expr, Call):
        children = expr.args
    else:
        children = ()
    for child in children:
        yield from nodes(child)


def names_in(expr: Expr) -> list[Name]:
    """Every name the expression refers to, in reading order (functions excluded)."""
    return [node for node in nodes(expr) if isinstance(node, Name)]


def calls_in(expr: Expr) -> list[str]:
    """Every function the expression calls, in reading order."""
    return [node.func for node in nodes(expr) if isinstance(node, Call)]
