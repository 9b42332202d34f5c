"""The expression language: what parses, what is rejected, and where the error points."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.compiling.expressions import (
    Binary,
    Compare,
    Logic,
    Name,
    Num,
    Text,
    names_in,
    parse,
)
from engine.errors import Location

WHERE = Location("policies/p/1.0.0.yaml", 10, 12, "formulas.x")


def ok(text: str):
    expr, problems = parse(text, WHERE)
    assert problems == [], problems
    return expr


def rejected(text: str) -> tuple[str, Location]:
    expr, problems = parse(text, WHERE)
    assert expr is None and len(problems) == 1
    return problems[0].message, problems[0].location


def test_number_literals_are_exact_decimals_from_their_text() -> None:
    expr = ok("1.10")
    assert isinstance(expr, Num) and expr.value == Decimal("1.10")
    assert str(expr.value) == "1.10"  # the text, not float(1.1) = 1.100000000000000088...
    expr = ok("0.1 + 0.2")
    assert isinstance(expr, Binary)
    assert expr.left == Num(0, Decimal("0.1")) and expr.right == Num(6, Decimal("0.2"))


def test_dotted_names_and_strings() -> None:
    expr = ok('shipment.destination.country == "US"')
    assert isinstance(expr, Compare)
    assert expr.left == Name(0, ("shipment", "destination", "country"))
    assert expr.right == Text(32, "US")


def test_chained_comparison_becomes_and() -> None:
    expr = ok("1 < x <= 3")
    assert isinstance(expr, Logic) and expr.op == "and"
    assert [c.op for c in expr.values] == ["<", "<="]  # type: ignore[attr-defined]


def test_names_in_reading_order() -> None:
    expr = ok("max(a, b.c) + (d if e else a)")
    assert [n.dotted for n in names_in(expr)] == ["a", "b.c", "d", "e", "a"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("lambda x: x", "lambdas are not allowed"),
        ("[x for x in y]", "comprehensions are not allowed"),
        ("sum(x for x in y)", "comprehensions are not allowed"),
        ("a[0]", "subscripts are not allowed"),
        ("shipment._secret", "names beginning with '_'"),
        ("__import__", "names beginning with '_'"),
        ("a % 2", "operator `%` is not allowed"),
        ("a // 2", "operator `//` is not allowed"),
        ("2 ** 100", "exponent of ** must be a whole number literal between -12 and 12"),
        ("a ** b", "exponent of ** must be"),
        ("max(a, key=b)", "keyword arguments are not allowed"),
        ("a.b().c", "attribute access is only allowed on names"),
        ("{'a': 1}", "dictionaries are not allowed"),
        ("1e5", "plain decimal notation"),
        ("0x10", "plain decimal notation"),
        ("1_000", "plain decimal notation"),
        ("x == None", "`None` is not a value here"),
        ("x is y", "`is` is not allowed"),
        ("Margin", "lower_snake_case"),
    ],
)
def test_rejected_constructs_name_the_problem(text: str, fragment: str) -> None:
    message, _ = rejected(text)
    assert fragment in message


def test_rejection_points_at_the_column_in_the_file() -> None:
    # The scalar starts at line 10, column 12; `a[0]` starts 8 characters in.
    _, where = rejected("1 + 2 + a[0]")
    assert (where.file, where.line, where.col) == ("policies/p/1.0.0.yaml", 10, 20)


def test_syntax_error_is_a_problem_not_an_exception() -> None:
    message, where = rejected("(a + ")
    assert message.startswith("syntax error")
    assert where.line == 10


def test_empty_expression() -> None:
    expr, problems = parse("   ", WHERE)
    assert expr is None and problems[0].code == "expr.empty"


def test_small_power_is_allowed() -> None:
    expr = ok("(1 + r) ** 2")
    assert isinstance(expr, Binary) and expr.op == "**"
    ok("x ** -2")
