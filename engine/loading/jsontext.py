"""Strict JSON: the one reader for facts, request bodies, corpora and audit records.

In: JSON text. Out: Python data whose numbers are exact (`Decimal` for every number with a
fraction or exponent, `int` otherwise), or the problems that make the text unusable, each
with its JSON path. Stricter than `json.loads` where readers disagree: a repeated key
(which value wins?) and NaN/Infinity (not JSON) are refused, not guessed at. No amount
ever passes through a binary float.

`parse` marks those problems in the data and leaves the choice to the caller (a batch of
shipments reports them per shipment); `problems` lists them; `loads` does both and raises
`FactsError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from engine.errors import FactsError, Location, Problem, json_path

__all__ = [
    "MAX_DIGITS",
    "MAX_EXPONENT",
    "NonFinite",
    "loads",
    "parse",
    "parse_marked",
    "problems",
    "syntax_problem",
]

# Bounds of a JSON number with a fraction or exponent, so that one short number cannot
# make a valuation's arithmetic take seconds and gigabytes (`1e-999999999` is 12 bytes):
# at most MAX_DIGITS digits, its exponent (scientific notation) within +-MAX_EXPONENT.
# Mechanism, not a figure: far beyond any amount, rate or quantity a shipment has.
MAX_DIGITS = 60
MAX_EXPONENT = 60


class NonFinite:
    """Stands in for JSON's NaN/Infinity until `problems` reports it with its path."""

    def __init__(self, text: str) -> None:
        self.text = text


class Unbounded:
    """Stands in for a number beyond MAX_DIGITS or MAX_EXPONENT until `problems` reports it."""

    def __init__(self, text: str) -> None:
        self.text = text


def _number(text: str) -> Decimal | Unbounded:
    value = Decimal(text)
    exponent = value.adjusted()
    if len(value.as_tuple().digits) > MAX_DIGITS or not -MAX_EXPONENT <= exponent <= MAX_EXPONENT:
        return Unbounded(text)
    return value


def _integer(text: str) -> int | Unbounded:
    if len(text.lstrip("-")) > MAX_DIGITS:
        return Unbounded(text)
    return int(text)


class _Repeated(dict[str, Any]):
    """A JSON object that repeated keys (json.loads would silently keep the last)."""

    duplicates: list[str]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    repeated: list[str] = []
    for key, value in pairs:
        if key in result:
            repeated.append(key)
        else:
            result[key] = value
    if not repeated:
        return result
    marked = _Repeated(result)
    marked.duplicates = repeated
    return marked


_DECODER = json.JSONDecoder(
    parse_float=_number, parse_int=_integer, parse_constant=NonFinite, object_pairs_hook=_object
)


def parse(text: str) -> Any:
    """The data of `text`, repeated keys and NaN marked (see `problems`).

    Raises json.JSONDecodeError (bad syntax), RecursionError (too deep) or ValueError (an
    integer beyond Python's int-from-text digit limit); `syntax_problem` words them.
    """
    return _DECODER.decode(text)


def parse_marked(text: str) -> tuple[Any, bool]:
    """`parse`, and whether it marked anything: when it did not, `problems` finds none, so
    a caller with much data (a batch of shipments) need not walk it to find out."""
    # A \u escape may be a lone surrogate, which only the walk finds: walk then.
    marked = "\\u" in text
    keys = 0

    def counted(read: dict[str, Any]) -> dict[str, Any]:
        nonlocal keys
        keys += len(read)
        return read

    def constant(name: str) -> NonFinite:
        nonlocal marked
        marked = True
        return NonFinite(name)

    def number(written: str) -> Decimal | Unbounded:
        nonlocal marked
        value = _number(written)
        marked = marked or isinstance(value, Unbounded)
        return value

    def integer(written: str) -> int | Unbounded:
        nonlocal marked
        value = _integer(written)
        marked = marked or isinstance(value, Unbounded)
        return value

    if not marked:
        # Objects built by the C scanner, only counted here: a third faster than pairs
        # handed to Python. Repeated keys are ruled out by counting ':' (see
        # `_no_repeated_key`); when that cannot tell, the text is read again below.
        counting = json.JSONDecoder(
            parse_float=number, parse_int=integer, parse_constant=constant, object_hook=counted
        )
        data = counting.decode(text)
        if _no_repeated_key(text, data, keys):
            return data, marked

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal marked
        result = _object(items)
        if type(result) is not dict:
            marked = True
        return result

    decoder = json.JSONDecoder(
        parse_float=number, parse_int=integer, parse_constant=constant, object_pairs_hook=pairs
    )
    return decoder.decode(text), marked


def _no_repeated_key(text: str, data: Any, keys: int) -> bool:
    """Whether `data`, read from `text` (which has no \\u escape) into `keys` keys, kept
    every key written: True only when sure.

    Outside strings, JSON text has one ':' per key written, so the text's ':' are the keys
    written plus the ':' inside its strings, which are the ':' in the strings read (without
    \\u escapes, no escape makes or hides one). Keys read = keys written exactly when no
    key was repeated (a repeated key is read once).
    """
    colons = text.count(":")
    if colons == keys:
        return True  # no ':' left for any string, nor for a repeated key
    try:
        return colons == keys + _colons_in_strings(data)
    except RecursionError:  # nested deeper than this walk goes: the pairs will tell
        return False


def _colons_in_strings(value: Any) -> int:
    if type(value) is str:
        return value.count(":")
    if type(value) is dict:
        return sum(key.count(":") + _colons_in_strings(item) for key, item in value.items())
    if type(value) is list:
        return sum(_colons_in_strings(item) for item in value)
    return 0


def syntax_problem(error: Exception, file: str = "", path: str = "") -> Problem:
    """The one-line problem for an exception `parse` raised."""
    if isinstance(error, json.JSONDecodeError):
        return Problem(
            "facts.syntax",
            f"invalid JSON: {error.msg}",
            Location(file, error.lineno, error.colno, path),
        )
    if isinstance(error, RecursionError):
        return Problem("facts.too_deep", "the facts nest too deeply to read", Location(file))
    return Problem("facts.syntax", "invalid JSON: a number has too many digits", Location(file))


def problems(data: Any, file: str = "", at: tuple[str | int, ...] = ()) -> list[Problem]:
    """Every repeated key and NaN/Infinity `parse` marked in `data`, with its JSON path."""
    return list(_walk(data, at, file))


def _walk(value: Any, parts: tuple[str | int, ...], file: str) -> Iterator[Problem]:
    if isinstance(value, NonFinite):
        yield Problem(
            "facts.not_finite",
            f"{value.text} is not a finite number; write a plain decimal number",
            Location(file, path=json_path(parts)),
        )
    elif isinstance(value, Unbounded):
        shown = value.text if len(value.text) <= 24 else value.text[:20] + "..."
        yield Problem(
            "facts.number_bounds",
            f"{shown} is beyond the numbers facts may hold (at most {MAX_DIGITS} digits, "
            f"exponent within +-{MAX_EXPONENT}); write the amount as a plain decimal",
            Location(file, path=json_path(parts)),
        )
    elif isinstance(value, str):
        if _SURROGATE.search(value):
            yield _surrogate(file, parts)
    elif isinstance(value, dict):
        for key in getattr(value, "duplicates", ()):
            yield Problem(
                "facts.duplicate_key",
                f"duplicate key {_quoted(key)}: JSON readers disagree on which value wins, "
                "so keep only one",
                Location(file, path=json_path((*parts, key))),
            )
        for key, item in value.items():
            if _SURROGATE.search(key):
                yield _surrogate(file, parts)
                continue
            yield from _walk(item, (*parts, key), file)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*parts, index), file)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate(file: str, parts: tuple[str | int, ...]) -> Problem:
    return Problem(
        "facts.encoding",
        "a \\u escape of a lone surrogate (\\ud800-\\udfff) is not text; send the "
        "character itself, or a surrogate pair",
        Location(file, path=json_path(parts)),
    )


def _quoted(key: str) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:56] + "...'"


def loads(text: str | bytes, file: str = "") -> Any:
    """The data of `text`; FactsError listing every problem if it is not strict JSON."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8-sig")
        data = parse(text)
    except UnicodeDecodeError as error:
        raise FactsError(
            Problem("facts.encoding", f"not UTF-8 text (byte {error.start})", Location(file))
        ) from None
    except (ValueError, RecursionError) as error:
        raise FactsError(syntax_problem(error, file)) from None
    found = problems(data, file)
    if found:
        raise FactsError(found)
    return data
