"""The strict JSON reader (engine.loading.jsontext) and the atomic writer (engine.atomic)."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.atomic import write_atomic
from engine.errors import FactsError
from engine.loading import jsontext


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_numbers_are_read_exactly(amount: Decimal) -> None:
    text = f'{{"amount": {amount}}}'
    read = jsontext.loads(text)["amount"]
    # A number with a fraction is the Decimal of its text, never a float's neighbour.
    assert read == amount and not isinstance(read, float)


def test_repeated_keys_and_nan_are_refused_with_their_paths() -> None:
    text = '{"charges": [{"amount": "1", "amount": "2"}], "fx": {"EUR": NaN}, "id": 1}'
    with pytest.raises(FactsError) as caught:
        jsontext.loads(text, "<input>")
    found = {(p.code, p.location.path) for p in caught.value.problems}
    assert found == {
        ("facts.duplicate_key", "charges[0].amount"),
        ("facts.not_finite", "fx.EUR"),
    }
    # parse marks them and leaves the choice to the caller: the first value is kept.
    data = jsontext.parse(text)
    assert data["charges"][0]["amount"] == "1"
    assert [p.location.path for p in jsontext.problems(data["fx"], at=("fx",))] == ["fx.EUR"]


@pytest.mark.parametrize(
    ("text", "code", "where"),
    [
        ('{"id": "x",\n  "date": }', "facts.syntax", (2, 11)),
        ("[" * 100_000, "facts.too_deep", (0, 0)),
        # Beyond the 60-digit bound (and Python's int digit limit): refused, at its path.
        ('{"n": ' + "9" * 5000 + "}", "facts.number_bounds", (0, 0)),
        (b'{"id": "\xff"}', "facts.encoding", (0, 0)),
    ],
)
def test_bad_text_is_one_problem_with_its_place(
    text: str | bytes, code: str, where: tuple[int, int]
) -> None:
    with pytest.raises(FactsError) as caught:
        jsontext.loads(text, "f.json")
    (problem,) = caught.value.problems
    assert problem.code == code and problem.location.file == "f.json"
    assert (problem.location.line, problem.location.col) == where
    assert "\n" not in problem.message


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "a:b", ":"]), st.sampled_from(["x", "1:2", "::", ""])),
        max_size=6,
    ),
    st.booleans(),
)
def test_parse_marked_finds_every_repeated_key_whatever_the_colons(
    pairs: list[tuple[str, str]], nested: bool
) -> None:
    # parse_marked reads objects without looking at their pairs when the ':' of the text
    # account for every key read (and the ':' in strings): a repeated key must still be
    # marked, however many ':' the strings hold.
    inner = "{" + ", ".join(f'"{key}" : "{value}"' for key, value in pairs) + "}"
    text = f'[{{"n": {inner}}}]' if nested else inner
    data, marked = jsontext.parse_marked(text)
    read = data[0]["n"] if nested else data
    first: dict[str, str] = {}
    for key, value in pairs:
        first.setdefault(key, value)
    assert read == first and list(read) == list(first)  # the first value of each key
    repeats = len(pairs) - len(first)  # each repeat is a problem of its own
    found = [p for p in jsontext.problems(data) if p.code == "facts.duplicate_key"]
    assert len(found) == repeats and marked == (repeats > 0)


def test_atomic_write_replaces_whole_or_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_atomic(target, "first\n")
    assert target.read_text() == "first\n"

    def half_then_fail(handle: object) -> None:
        handle.write("second, half")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "first\n"  # untouched
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary file left behind
    write_atomic(target, lambda handle: handle.write("third\n"))
    assert target.read_text() == "third\n"


@pytest.mark.parametrize(
    "text, path",
    [
        ('{"amount": 1e-999999999}', "amount"),  # 12 bytes asking for a billion digits
        ('{"amount": 1e61}', "amount"),
        ('{"a": [1, 0.' + "0" * 70 + "1]}", "a[1]"),
        ('{"n": ' + "9" * 61 + "}", "n"),
    ],
)
def test_numbers_beyond_the_bounds_are_refused_at_their_path(text: str, path: str) -> None:
    with pytest.raises(FactsError) as caught:
        jsontext.loads(text)
    (problem,) = caught.value.problems
    assert problem.code == "facts.number_bounds" and problem.location.path == path


def test_numbers_within_the_bounds_are_exact() -> None:
    data = jsontext.loads('{"a": 1e60, "b": 2.50E+3, "c": 1e-7, "d": ' + "9" * 60 + "}")
    assert data == {
        "a": Decimal("1e60"),
        "b": Decimal("2500"),
        "c": Decimal("1e-7"),
        "d": 10**60 - 1,
    }


def test_a_lone_surrogate_is_refused_at_its_path() -> None:
    with pytest.raises(FactsError) as caught:
        jsontext.loads('{"goods": [{"description": "x\\ud800"}], "ok": "\\ud83d\\ude00"}')
    (problem,) = caught.value.problems
    assert problem.code == "facts.encoding" and problem.location.path == "goods[0].description"
