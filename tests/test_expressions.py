"""The expression language: what parses, what is rejected, and where the error points."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.compiling.expressions import (
    Binary,
    Compare,
    Logic,
    Name,
    Num,
    Text,
    Unary,
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


# --- bounds: every expression is refused at its own line past these, never crashes ---


def test_an_expression_over_the_length_bound_is_refused_at_its_line() -> None:
    from engine.compiling.expressions import MAX_EXPRESSION_CHARS

    # a text literal of 3,999 characters between its two quotes: 4,001 in all, one over
    text = '"' + "a" * 3_999 + '"'
    assert len(text) == MAX_EXPRESSION_CHARS + 1
    message, where = rejected(text)
    assert "4,001 characters" in message and where.line == 10
    assert isinstance(ok('"' + "a" * 3_998 + '"'), Text)  # 4,000 characters: within


def test_nesting_past_the_depth_bound_is_refused_not_a_recursion_error() -> None:
    message, where = rejected("-" * 3_000 + "a")  # 3,001 characters, 3,001 levels
    assert "levels deep" in message and where.line == 10
    ok("-" * 150 + "a")


def test_a_sum_past_the_term_bound_is_refused() -> None:
    # a + a + ... is a left-leaning tree: 800 terms nest 800 deep, over the depth bound
    # (200) before the length bound (3,197 characters); 150 terms are within both.
    message, where = rejected(" + ".join(["a"] * 800))
    assert "levels deep" in message and where.line == 10
    ok(" + ".join(["a"] * 150))


def test_a_number_literal_past_the_digit_bound_is_refused() -> None:
    message, _ = rejected("0." + "0" * 60 + "1")  # 62 digits
    assert "more than 60 digits" in message
    assert ok("0." + "0" * 58 + "1").value == Decimal("1e-59")  # 60 digits: within


def test_percent_literals_are_exact_hundredths() -> None:
    # 0.35% = 0.35 / 100 = 0.0035, digits moved, nothing rounded
    expr = ok("0.35%")
    assert isinstance(expr, Num) and expr.value == Decimal("0.0035")
    assert str(expr.value) == "0.0035"
    # 0.3464% = 0.003464 (the US MPF); 100% = 1.00; 12.5% = 0.125
    assert ok("0.3464%") == Num(0, Decimal("0.003464"))
    assert ok("100%") == Num(0, Decimal("1.00"))
    # inside arithmetic and comparisons, the column still points into the author's text
    expr = ok("invoice * 12.5% + 1")
    assert isinstance(expr, Binary) and expr.op == "+"
    assert expr.left == Binary(0, "*", Name(0, ("invoice",)), Num(10, Decimal("0.125")))
    compare = ok("damage > 45%")
    assert isinstance(compare, Compare) and compare.right == Num(9, Decimal("0.45"))
    # text keeps its percent sign
    assert ok('"5%"') == Text(0, "5%")


def test_percent_sign_before_an_operand_is_still_modulo_and_refused() -> None:
    message, _ = rejected("7%2")
    assert "operator `%` is not allowed" in message
    message, _ = rejected("x % 2")
    assert "operator `%` is not allowed" in message


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False))
def test_a_percent_literal_is_its_number_divided_by_a_hundred(number: Decimal) -> None:
    text = format(number, "f")
    expr = ok(f"x * {text}%") if not text.startswith("-") else ok(f"x * ({text}%)")
    assert isinstance(expr, Binary)
    found = expr.right.operand if isinstance(expr.right, Unary) else expr.right
    assert isinstance(found, Num)
    sign = -1 if isinstance(expr.right, Unary) else 1
    # exact: n% = n / 100, computed here with enough precision that nothing rounds
    with localcontext() as context:
        context.prec = 50
        assert sign * found.value == number / 100
