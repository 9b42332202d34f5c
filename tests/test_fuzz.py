"""Fuzzing (issue 12): every input gives a result or one of the project's errors, with a
location, within bounded time and memory.

Four families of input, each a hypothesis strategy or a fixed list:
- facts: generated shipments made absurd (extreme and malformed amounts, fx rates, floats
  in text, deep nesting, unicode, repeated keys, wrong types), sent as JSON text;
- rule files: mutations of every shipped pack and country file (a line deleted,
  duplicated or retyped, the file truncated, a number, date or code changed), loaded with
  the reference files and their examples run, as `tiv test` does;
- hostile expressions: the issue's formulas and conditions (600 alternatives, 10,000
  and-terms, `in` a list of 100,000, 100,000-term sums, ...), each put into `standard`;
- YAML bombs: aliases, deep nesting, huge documents, as rule files and as facts.

Each case runs in a worker process with a time limit (`Worker`): a case that hangs is
killed and counted, not waited for. The property is `Outcome.holds`: a result, or a
TivError whose every problem has a JSON path or a file:line. `make test` runs each family
at a small size; `bench/fuzz.py` runs the same code at 10,000 cases and prints the counts.
Inputs that still fail because they need the evaluation core changed (issue 12 items
1-4) are xfail(strict=True) with the reason, so they turn into failures once fixed.
"""

from __future__ import annotations

import decimal
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import FactsError, SelectionError, TivError, load_rules, run_examples, value
from engine.compliance.corpus import generate
from engine.matching.registry import default_matcher

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(
    str(p.relative_to(ROOT))
    for folder in ("policies", "rules")
    for p in (ROOT / folder).rglob("*.yaml")
)
TEXTS = {path: (ROOT / path).read_text(encoding="utf-8") for path in SHIPPED}
EXAMPLES = {
    str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
    for p in (ROOT / "examples").rglob("*.yaml")
}
REFERENCE = {p: t for p, t in TEXTS.items() if p.startswith("rules/reference/")}
PACKS = sorted({p.split("/")[1] for p in SHIPPED if p.startswith("policies/")})
MEMORY_LIMIT = 3 * 1024**3  # address space per worker: a runaway case is a MemoryError


# --- outcomes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one case did. `kind`: result, located (an error with a location), unlocated
    (a project error some problem of which has no location), uncaught (any other
    exception: the CLI's exit 70, the service's 500), over_budget (killed at the limit)."""

    kind: str
    detail: str = ""
    seconds: float = 0.0
    peak_kb: int = 0

    @property
    def holds(self) -> bool:
        return self.kind in ("result", "located")


# Problems about a whole document (its size, its depth) name the file and no line.
WHOLE_DOCUMENT = ("input.too_large", "too deeply")


def _located(error: TivError) -> bool:
    if isinstance(error, SelectionError):
        return True  # it names the pack and the date it was asked for: the input's place
    return all(
        p.location.path
        or (p.location.file and p.location.line)
        or (p.location.file and any(w in f"{p.code} {p.message}" for w in WHOLE_DOCUMENT))
        for p in error.problems
    )


def classify(run: Callable[[], object]) -> tuple[str, str]:
    try:
        run()
    except TivError as error:
        first = error.problems[0] if error.problems else None
        text = str(first)[:160] if first else type(error).__name__
        return ("located" if _located(error) else "unlocated"), text
    except (Exception, RecursionError, MemoryError) as error:  # what the property forbids
        return "uncaught", f"{type(error).__name__}: {str(error)[:120]}"
    return "result", ""


# --- the cases, run in a worker -------------------------------------------------------

_RULES: Any = None  # the shipped rules, loaded once per worker


def preload() -> None:
    """Read the shipped rules in this process, so workers forked from it need not."""
    global _RULES
    if _RULES is None:
        _RULES = load_rules(ROOT, entry_points=False)


def run_case(case: tuple[str, Any]) -> tuple[str, str]:
    """One case, in this process: ("facts", (pack, text)), ("rules", files) or
    ("expression", (files, facts))."""
    global _RULES
    family, data = case
    if family == "facts":
        preload()
        pack, text = data
        return classify(lambda: value(_RULES, text, policy=pack, trace=True))
    if family == "rules":

        def load_and_test() -> None:
            rules = load_rules(files=data, entry_points=False)
            run_examples(rules, matcher=default_matcher())

        return classify(load_and_test)
    if family == "expression":
        files, facts = data

        def load_and_value() -> None:
            rules = load_rules(files=files, entry_points=False)
            value(rules, facts, policy="standard")

        return classify(load_and_value)
    raise ValueError(family)


def _serve(conn: multiprocessing.connection.Connection) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    # A fresh decimal context, as in a new `tiv` process: a forked worker would otherwise
    # inherit whatever context the parent's tests left (and the valuation depends on it).
    decimal.setcontext(decimal.Context())
    while True:
        try:
            case = conn.recv()
        except EOFError:
            return
        started = time.perf_counter()
        kind, detail = run_case(case)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send(Outcome(kind, detail, time.perf_counter() - started, peak))


class Worker:
    """A forked process that runs cases one at a time; one over `limit_s` is killed (and
    the worker replaced), so a hang costs the limit and no more."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.context = multiprocessing.get_context("fork")
        self.peak_kb = 0
        self._start()

    def _start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.proc = self.context.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def run(self, case: tuple[str, Any], limit_s: float | None = None) -> Outcome:
        started = time.perf_counter()
        limit = self.limit_s if limit_s is None else limit_s
        try:
            self.conn.send(case)
            if self.conn.poll(limit):
                outcome: Outcome = self.conn.recv()
                self.peak_kb = max(self.peak_kb, outcome.peak_kb)
                return outcome
            kind, detail = "over_budget", f"killed after {limit:g} s"
        except (EOFError, OSError) as error:  # the worker died: a crash is uncaught
            kind, detail = "uncaught", f"worker died ({type(error).__name__}, {self._code()})"
        self.stop()
        self._start()
        return Outcome(kind, detail, time.perf_counter() - started)

    def _code(self) -> str:
        self.proc.join(1)
        return f"exit {self.proc.exitcode}"

    def stop(self) -> None:
        if self.proc.is_alive() and self.proc.pid is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(5)
        self.conn.close()


# --- facts ----------------------------------------------------------------------------


class Raw(str):
    """Text written into the JSON as it is (a JSON number, or something malformed)."""


class Pairs(list[tuple[str, Any]]):
    """A JSON object that may repeat keys."""


def to_json(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return to_json(Pairs(value.items()))
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


CORPUS = [dict(f) for f in generate(300, 12)]

# Amounts beyond the facts contract's bounds (money.AMOUNT, FX_RATE; jsontext's for any
# JSON number), which before the bounds reached the valuation's decimal context and
# overflowed it or took seconds and gigabytes: each is refused at its own JSON path
# (test_numbers_beyond_the_bounds_are_refused_at_their_path), and all are drawn.
UNBOUNDED_TEXT = [
    "1" + "0" * 40,
    "9" * 100,
    "0." + "0" * 60 + "1",
    "99999999999999999999999999999.99",
]
UNBOUNDED_JSON = [
    "1e-999999999",
    "1e999999999",
    "1e40",
    "1e60",
    "1e61",
    "-1e300",
    "1" + "0" * 59,
    "1" + "0" * 70,
    "1" + "0" * 5000,
    "123456789012345678901234567890.123456789",
]

AMOUNTS = st.one_of(
    st.sampled_from(
        [
            "0",
            "-0",
            "-1",
            "0.00",
            "1e5",
            "1E-7",
            "1.5e3",
            "NaN",
            "Infinity",
            "-inf",
            "1" + "0" * 40,
            "9" * 100,
            "0." + "0" * 60 + "1",
            "1e-999999999",
            "1e999999999",
            "12,50",
            " 12.50",
            "12.50 ",
            "１２",
            "١٢٣",
            "0x10",
            "1_000",
            "",
            "12.",
            ".5",
            "99999999999999999999999999999.99",
            "0.000000000000000000000000000001",
        ]
    ),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.text(max_size=12),
)
JSON_NUMBERS = st.sampled_from(
    [
        "1e-999999999",
        "1e999999999",
        "1e40",
        "1e-40",
        "1e60",
        "1e61",
        "-1e300",
        "0e0",
        "123456789012345678901234567890.123456789",
        "1" + "0" * 59,
        "1" + "0" * 70,
        "0.1",
        "1.0E+2",
        "-0.0",
        "2.5E-3",
        "1" + "0" * 5000,
        "true",
        "null",
        "[]",
        "{}",
    ]
).map(Raw)
TEXTS_ODD = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\u0000", "\ud7ff", "\U0001f600", "x" * 70_000, "é" * 500]),
)


def _nested(depth: int) -> Any:
    return Raw("[" * depth + "]" * depth)


# Paths into a corpus shipment where an amount, a rate or a text lives.
_AMOUNT_PATHS = [
    ("invoice", "amount"),
    ("charges", 0, "amount"),
    ("goods", 0, "value"),
    ("goods", 0, "quantity"),
    ("goods", 0, "weight_kg"),
    ("duties", 0, "amount"),
    ("sum_insured",),
    ("expected_transit_days",),
]
_TEXT_PATHS = [
    ("id",),
    ("currency",),
    ("mode",),
    ("origin", "country"),
    ("incoterm",),
    ("goods", 0, "description"),
    ("goods", 0, "hs_code"),
    ("charges", 0, "type"),
    ("date",),
]


def _put(facts: Any, path: tuple[Any, ...], value: Any) -> None:
    where = facts
    for step in path[:-1]:
        if isinstance(step, int):
            if not isinstance(where, list) or not where:
                return
            where = where[min(step, len(where) - 1)]
        else:
            if not isinstance(where, dict):
                return
            where = where.setdefault(step, {})
    last = path[-1]
    if isinstance(where, dict) and isinstance(last, str):
        where[last] = value
    elif isinstance(where, list) and where and isinstance(last, int):
        where[min(last, len(where) - 1)] = value


@st.composite
def hostile_facts(draw: st.DrawFn) -> tuple[str, bytes]:
    """A pack and a shipment's JSON text, made absurd in one to four ways."""
    amounts, numbers = AMOUNTS, JSON_NUMBERS
    facts = json.loads(json.dumps(draw(st.sampled_from(CORPUS))))
    repeat: str | None = None
    for _ in range(draw(st.integers(1, 4))):
        how = draw(
            st.sampled_from(
                ["amount", "number", "fx", "text", "nest", "drop", "type", "repeat", "charges"]
            )
        )
        if how == "amount":
            _put(facts, draw(st.sampled_from(_AMOUNT_PATHS)), draw(amounts))
        elif how == "number":
            _put(facts, draw(st.sampled_from(_AMOUNT_PATHS)), draw(numbers))
        elif how == "fx":
            rates = facts.setdefault("fx", {})
            code = draw(st.sampled_from(["EUR", "CNY", "JPY", "USD", "XXX", "eur", ""]))
            rates[code] = draw(st.one_of(amounts, numbers))
        elif how == "text":
            _put(facts, draw(st.sampled_from(_TEXT_PATHS)), draw(TEXTS_ODD))
        elif how == "nest":
            depth = draw(st.sampled_from([10, 100, 1000, 10_000, 100_000]))
            _put(facts, draw(st.sampled_from(_AMOUNT_PATHS + _TEXT_PATHS)), _nested(depth))
        elif how == "drop" and facts:
            facts.pop(draw(st.sampled_from(sorted(facts))), None)
        elif how == "type":
            _put(
                facts,
                draw(st.sampled_from(_AMOUNT_PATHS + _TEXT_PATHS)),
                draw(st.sampled_from([Raw("true"), Raw("null"), [], {}, Raw("1.5"), "x"])),
            )
        elif how == "repeat":
            repeat = draw(st.sampled_from(sorted(facts) or ["id"]))
        elif how == "charges":
            count = draw(st.sampled_from([0, 1, 50, 2000]))
            facts["charges"] = [
                {
                    "type": draw(st.sampled_from(["ocean_freight", "demurrage", "x"])),
                    "amount": draw(st.one_of(amounts, numbers)),
                }
            ] * count
    if repeat is not None:  # last, so the other changes need not know about Pairs
        facts = Pairs([*facts.items(), (repeat, facts.get(repeat, "again"))])
    return draw(st.sampled_from(PACKS)), to_json(facts).encode("utf-8", "surrogatepass")


# --- rule files -----------------------------------------------------------------------


def rule_files(mutated: str, text: str) -> dict[str, str]:
    """The files one mutant is loaded with: the reference files, its own pack's other
    versions and what it extends, a few country files, and the example shipments."""
    files = dict(REFERENCE)
    for country in ("US", "DE", "EU", "GB", "CN"):
        path = f"rules/countries/{country}/1.0.0.yaml"
        files[path] = TEXTS[path]
    if mutated.startswith("policies/"):
        pack = mutated.split("/")[1]
        files.update({p: t for p, t in TEXTS.items() if p.startswith(f"policies/{pack}/")})
        if "extends:" in text:
            files.update({p: t for p, t in TEXTS.items() if p.startswith("policies/standard/")})
    files.update(EXAMPLES)
    files[mutated] = text
    return files


_NUMBERS = [
    "0",
    "-1",
    "1e5",
    "0.1",
    "99999999999999999999",
    "1" + "0" * 400,
    "0." + "0" * 400 + "1",
    "-0.000001",
    "12",
    "1.10",
    "NaN",
    "0x1F",
    "1_0",
]
_DATES = [
    "2020-02-30",
    "1900-01-01",
    "9999-12-31",
    "2025-13-01",
    "0001-01-01",
    "2024-02-29",
    "2026-01-01",
    "yesterday",
]
_CODES = ["XXX", "usd", "", "ZZ", "U$D", "EUR", "JPY", "KWD", "US", "DE", "ü"]
_NODES = [
    "[]",
    "{}",
    "null",
    "~",
    "true",
    "[1, 2]",
    "{a: 1}",
    '"text"',
    "*alias",
    "&anchor x",
    "!!binary aGk=",
    "!!python/object:os.system ls",
    "'",
    '"',
    "|",
    ">",
    "- -",
    ": :",
]


@st.composite
def mutated_rule_file(draw: st.DrawFn) -> dict[str, str]:
    """One shipped file changed as an editor's slip or a hostile hand would."""
    path = draw(st.sampled_from(SHIPPED))
    lines = TEXTS[path].splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        line = lines[at]
        how = draw(
            st.sampled_from(
                ["delete", "duplicate", "retype", "truncate", "number", "date", "code", "indent"]
            )
        )
        if how == "delete":
            del lines[at]
        elif how == "duplicate":
            lines.insert(at, line)
        elif how == "retype" and ":" in line:
            key = line.split(":", 1)[0]
            lines[at] = f"{key}: {draw(st.sampled_from(_NODES))}\n"
        elif how == "truncate":
            text = "".join(lines)
            cut = draw(st.integers(0, len(text)))
            lines = text[:cut].splitlines(keepends=True)
        elif how == "number":
            lines[at] = _replace_first(
                line, r"-?[0-9]+(\.[0-9]+)?", draw(st.sampled_from(_NUMBERS))
            )
        elif how == "date":
            lines[at] = _replace_first(
                line, r"[0-9]{4}-[0-9]{2}-[0-9]{2}", draw(st.sampled_from(_DATES))
            )
        elif how == "code":
            lines[at] = _replace_first(line, r"\b[A-Z]{2,3}\b", draw(st.sampled_from(_CODES)))
        elif how == "indent":
            lines[at] = " " * draw(st.integers(0, 7)) + line.lstrip(" ")
    return rule_files(path, "".join(lines))


def _replace_first(line: str, pattern: str, new: str) -> str:
    import re

    return re.sub(pattern, lambda _: new, line, count=1)


# --- hostile expressions --------------------------------------------------------------

STANDARD = "policies/standard/1.0.0.yaml"
SHIPMENT = {
    "id": "FUZZ-1",
    "date": "2024-06-03",
    "currency": "USD",
    "mode": "ocean",
    "incoterm": "FOB",
    "origin": {"country": "CN"},
    "destination": {"country": "US"},
    "invoice": {"amount": "100000.00"},
    "charges": [{"type": "ocean_freight", "amount": "2500.00"}],
    "duties": [],
}


def with_formula(expression: str) -> dict[str, str]:
    """`standard` with its margin formula replaced (the pack's examples left out)."""
    text = TEXTS[STANDARD].split("\nexamples:", 1)[0] + "\n"
    text = text.replace(
        "  margin: (invoice + freight) * margin_rate", f"  margin: {json.dumps(expression)}"
    )
    return rule_files(STANDARD, text)


def with_condition(condition: str) -> dict[str, str]:
    """`standard` with one more rule, flagging when `condition` holds."""
    text = TEXTS[STANDARD].split("\nexamples:", 1)[0] + "\n"
    text = text.replace(
        "rules:\n",
        f"rules:\n  - id: fuzz\n    when: {json.dumps(condition)}\n"
        "    flag: fuzz\n    reason: fuzzed\n",
        1,
    )
    return rule_files(STANDARD, text)


def _chain(op: str, term: str, count: int) -> str:
    return f" {op} ".join([term] * count)


# (name, "formula" | "condition", text); the issue's list first (ISSUE_CASES of them, run
# by `make test` with their exact sizes), then more of their kind (bench/fuzz.py).
HOSTILE: list[tuple[str, str, Callable[[], str]]] = [
    (
        "600 alternatives",
        "condition",
        lambda: " or ".join(f'shipment.id == "S{i}"' for i in range(600)),
    ),
    ("10,000 and-terms", "condition", lambda: _chain("and", "invoice > 0", 10_000)),
    (
        "in a list of 100,000",
        "condition",
        lambda: "shipment.id in [" + ", ".join(f'"S{i}"' for i in range(100_000)) + "]",
    ),
    ("a 70,000-character string", "condition", lambda: f'shipment.id == "{"x" * 70_000}"'),
    ("a sum of 100,000 terms", "formula", lambda: _chain("+", "invoice", 100_000)),
    ("100,000 not", "condition", lambda: "not " * 100_000 + "exists(shipment.incoterm)"),
    ("100,000 unary minus", "formula", lambda: "-" * 100_000 + "invoice"),
    ("100,000 chained comparisons", "condition", lambda: _chain("<", "invoice", 100_000)),
    ("a literal with a million zeros", "formula", lambda: "invoice * 0." + "0" * 1_000_000 + "1"),
    ("invoice ** -12", "formula", lambda: "invoice ** -12"),
    ("division by a tiny literal", "formula", lambda: "invoice / 0." + "0" * 60 + "1"),
    ("1,000 alternatives", "condition", lambda: " or ".join(f"invoice > {i}" for i in range(1000))),
    (
        "300 or-terms of 2 ands",
        "condition",
        lambda: " or ".join(f"(invoice > {i} and freight > {i})" for i in range(300)),
    ),
    (
        "100 ors of 3 ins",
        "condition",
        lambda: " and ".join(f'(shipment.id in ["a{i}", "b{i}", "c{i}"])' for i in range(100)),
    ),
    (
        "in a list of 10,000",
        "condition",
        lambda: "shipment.id in [" + ", ".join(f'"S{i}"' for i in range(10_000)) + "]",
    ),
    ("a 1,000,000-character string", "condition", lambda: f'shipment.id == "{"y" * 1_000_000}"'),
    ("a sum of 10,000 terms", "formula", lambda: _chain("+", "invoice", 10_000)),
    ("a product of 1,000 invoices", "formula", lambda: _chain("*", "invoice", 1_000)),
    ("a product of 100 invoices", "formula", lambda: _chain("*", "invoice", 100)),
    ("1,000 nested parentheses", "formula", lambda: "(" * 1000 + "invoice" + ")" * 1000),
    ("100,000 nested parentheses", "formula", lambda: "(" * 100_000 + "invoice" + ")" * 100_000),
    ("10,000 not", "condition", lambda: "not " * 10_000 + "exists(shipment.incoterm)"),
    ("10,000 unary minus", "formula", lambda: "-" * 10_000 + "invoice"),
    ("10,000 chained comparisons", "condition", lambda: _chain("<", "invoice", 10_000)),
    ("25 chained comparisons", "condition", lambda: _chain("<", "invoice", 25)),
    ("a literal with 10,000 zeros", "formula", lambda: "invoice * 0." + "0" * 10_000 + "1"),
    ("a 5,000-digit integer", "formula", lambda: "invoice + " + "9" * 5000),
    ("a 100,000-digit integer", "formula", lambda: "invoice + " + "9" * 100_000),
    ("invoice ** 12", "formula", lambda: "invoice ** 12"),
    ("invoice ** 13", "formula", lambda: "invoice ** 13"),
    ("invoice ** 12 ** 12", "formula", lambda: "invoice ** 12 ** 12"),
    ("invoice ** 0.5", "formula", lambda: "invoice ** 0.5"),
    ("invoice ** -1 with 0 invoice", "formula", lambda: "(invoice - invoice) ** -1"),
    ("division by zero", "formula", lambda: "invoice / 0"),
    ("division by a difference that is zero", "formula", lambda: "invoice / (invoice - invoice)"),
    ("division by a tiny product", "formula", lambda: "invoice / (0.0000000001 * 0.0000000001)"),
    ("round to a million places", "formula", lambda: "round(invoice, 1000000)"),
    ("round to -5 places", "formula", lambda: "round(invoice, -5)"),
    ("round to 100 places", "formula", lambda: "round(invoice / 3, 100)"),
    ("max of 100,000", "formula", lambda: "max(" + ", ".join(["invoice"] * 100_000) + ")"),
    ("min of 10,000", "formula", lambda: "min(" + ", ".join(["invoice"] * 10_000) + ")"),
    ("10,000 nested abs", "formula", lambda: "abs(" * 10_000 + "invoice" + ")" * 10_000),
    (
        "1,000 nested if-else",
        "formula",
        lambda: "".join(f"{i} if invoice > {i} else " for i in range(1000)) + "0",
    ),
    ("a 70,000-character name", "formula", lambda: "a" * 70_000),
    ("a dunder", "formula", lambda: "invoice.__class__"),
    ("import", "formula", lambda: "__import__('os').system('true')"),
    ("a lambda", "formula", lambda: "(lambda: 1)()"),
    ("a comprehension", "formula", lambda: "sum([x for x in [1, 2]])"),
    ("a subscript", "formula", lambda: "[1, 2][0]"),
    ("an f-string", "formula", lambda: 'f"{invoice}"'),
    ("a walrus", "formula", lambda: "(x := 1)"),
    ("a text repeated 10^9 times", "formula", lambda: '"x" * 1000000000'),
    ("a list repeated", "formula", lambda: "[1] * 1000000000"),
    ("exponent notation", "formula", lambda: "invoice * 1e999999999"),
    ("a hex literal", "formula", lambda: "invoice * 0x10"),
    ("a NUL byte", "formula", lambda: "invoice\u0000 + 1"),
    ("a megabyte of spaces", "formula", lambda: "invoice" + " " * 1_000_000 + "+ 1"),
    ("text plus number", "formula", lambda: 'invoice + "1"'),
    ("comparison of text and number", "condition", lambda: "shipment.id > 5"),
    ("a date compared with a number", "condition", lambda: "shipment.date > 20240101"),
    (
        "a 100,000-item list in a formula",
        "formula",
        lambda: "sum([" + ", ".join(["1"] * 100_000) + "])",
    ),
    ("an unknown function", "formula", lambda: "open('/etc/passwd')"),
    (
        "estimate_duties of a huge fob",
        "formula",
        lambda: "estimate_duties(invoice * " + "9" * 50 + ", 0)",
    ),
    (
        "from_currency of a huge amount",
        "formula",
        lambda: "from_currency(invoice * " + "9" * 50 + ', "USD")',
    ),
]

ISSUE_CASES = 11

# Known failures that are a matter of time (over the budget, not an exception): on a
# loaded machine their time varies too much for a strict xfail, so bench/fuzz.py (one case
# at a time, 5 s each) reports them; the test suite runs the deterministic ones.
# Inputs too slow for make test while the core could not refuse them; none since the
# expression bounds (compiling/expressions: length, depth, terms, literal digits).
ONLY_IN_BENCH: set[str] = set()

# What the property needs that only the evaluation core can give; each name, the reason.
# Strict: once the core is fixed, the test fails until the entry goes. Empty now.
NEEDS_CORE: dict[str, str] = {}

# --- YAML bombs -----------------------------------------------------------------------

BOMBS: dict[str, str] = {
    "billion laughs": "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}]\n"
        for i in range(9)
    ),
    "recursive alias": "a: &a [*a]\n",
    "deep flow nesting": "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "deep block nesting": "".join("  " * i + "k:\n" for i in range(2000)) + "  " * 2000 + "v\n",
    "50 MB of list items": "x:\n" + "  - a\n" * (50 * 1024 * 1024 // 6),
    "50 MB of mapping keys": "".join(f"k{i}: {i}\n" for i in range(4_000_000)),
    "a long scalar": "x: " + "a" * 3_000_000 + "\n",
}


def bomb_cases() -> Iterator[tuple[str, tuple[str, Any]]]:
    for name, text in BOMBS.items():
        yield f"{name} as a rule file", ("rules", rule_files(STANDARD, text))
        yield f"{name} as facts", ("facts", ("standard", text.encode()))


# --- the tests (small sizes; bench/fuzz.py runs the same at scale) ---------------------


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    preload()  # before the fork: a worker replaced after a kill starts with the rules read
    # bench/fuzz.py holds each case to the issue's 5 s on a quiet machine; here, with the
    # suite running in parallel on a shared machine, a hang is anything over 20 s.
    runner = Worker(limit_s=20.0)
    yield runner
    runner.stop()


def check(outcome: Outcome, what: str) -> None:
    assert outcome.holds, f"{what}: {outcome.kind}: {outcome.detail}"


FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,  # the same cases every run: a failure is repeatable, not flaky
    suppress_health_check=list(HealthCheck),
)


@FUZZ
@given(case=hostile_facts())
def test_generated_facts_give_a_result_or_a_located_error(
    worker: Worker, case: tuple[str, bytes]
) -> None:
    check(worker.run(("facts", case)), case[1][:200].decode("utf-8", "replace"))


@pytest.mark.parametrize(
    "where, number",
    [
        pytest.param(("invoice", "amount"), Raw("1e-999999999"), id="1e-999999999"),
        pytest.param(
            ("invoice", "amount"),
            Raw("1" + "0" * 5000),
            id="a 5,001-digit integer",
        ),
        pytest.param(
            ("charges", 0, "amount"),
            Raw("1e40"),
            id="1e40 on an excluded charge",
        ),
        pytest.param(("invoice", "amount"), "9" * 100, id="100 nines in text"),
        pytest.param(("invoice", "amount"), Raw("2.5E-3"), id="a bounded exponent"),
    ],
)
def test_the_issue_s_numbers(
    worker: Worker, where: tuple[Any, ...], number: Any, request: pytest.FixtureRequest
) -> None:
    facts = json.loads(json.dumps(SHIPMENT))
    facts["charges"] = [{"type": "demurrage", "amount": "1.00"}]  # excluded by `standard`
    _put(facts, where, number)
    limit = 2.0 if request.node.get_closest_marker("xfail") else None
    check(worker.run(("facts", ("standard", to_json(facts).encode())), limit), str(number)[:40])


@pytest.mark.parametrize(
    "number",
    [*UNBOUNDED_TEXT, *(Raw(text) for text in UNBOUNDED_JSON)],
    ids=lambda number: f"{'json' if isinstance(number, Raw) else 'text'} {str(number)[:24]}",
)
@pytest.mark.parametrize("where", [("invoice", "amount"), ("charges", 0, "amount"), ("fx", "EUR")])
def test_numbers_beyond_the_bounds_are_refused_at_their_path(
    number: str, where: tuple[Any, ...]
) -> None:
    """The issue's numbers, each exactly, in this process: a facts error at the number's own
    JSON path, in well under a second (`1e-999999999` took 5.8 s and 2.9 GB)."""
    preload()
    facts = json.loads(json.dumps(SHIPMENT))
    facts["charges"] = [{"type": "demurrage", "amount": "1.00"}]  # excluded by `standard`
    _put(facts, where, number)
    started = time.perf_counter()
    with pytest.raises(FactsError) as caught:
        value(_RULES, to_json(facts).encode(), policy="standard")
    assert time.perf_counter() - started < 1.0
    path = ".".join(str(part) for part in where).replace(".0.", "[0].")
    assert ("facts.number_bounds", path) in {
        (problem.code, problem.location.path) for problem in caught.value.problems
    }, caught.value


@FUZZ
@given(files=mutated_rule_file())
def test_mutated_rule_files_give_rules_or_a_located_error(
    worker: Worker, files: dict[str, str]
) -> None:
    check(worker.run(("rules", files)), "a mutated rule file")


def _hostile_params() -> list[Any]:
    params = []
    for name, kind, make in HOSTILE[:ISSUE_CASES]:
        if name in ONLY_IN_BENCH:
            continue
        marks = []
        if name in NEEDS_CORE:
            marks.append(pytest.mark.xfail(reason=NEEDS_CORE[name], strict=True))
        params.append(pytest.param(kind, make, id=name, marks=marks))
    return params


@pytest.mark.parametrize("kind, make", _hostile_params())
def test_hostile_expressions_are_refused_or_valued(
    worker: Worker, kind: str, make: Callable[[], str], request: pytest.FixtureRequest
) -> None:
    files = with_formula(make()) if kind == "formula" else with_condition(make())
    # A case known to fail (xfail) gets 2 s: it is not waited for at full budget.
    limit = 2.0 if request.node.get_closest_marker("xfail") else None
    check(worker.run(("expression", (files, SHIPMENT)), limit), kind)


@pytest.mark.parametrize("name, case", list(bomb_cases()), ids=[n for n, _ in bomb_cases()])
def test_yaml_bombs_are_refused_in_bounded_time(
    worker: Worker, name: str, case: tuple[str, Any]
) -> None:
    check(worker.run(case), name)


@dataclass
class Tally:
    """Counts for bench/fuzz.py."""

    outcomes: dict[str, int] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    longest: tuple[float, str] = (0.0, "")
    # Located errors that are a valuation stopped at its time budget (engine.api, 2 s):
    # the property holds, but the input took the whole budget.
    stopped: int = 0

    def add(self, outcome: Outcome, what: str) -> None:
        self.outcomes[outcome.kind] = self.outcomes.get(outcome.kind, 0) + 1
        if outcome.kind == "located" and "over its time budget" in outcome.detail:
            self.stopped += 1
        if not outcome.holds:
            self.failures.setdefault(outcome.kind, []).append(f"{what}: {outcome.detail}")
        if outcome.seconds > self.longest[0]:
            self.longest = (outcome.seconds, what)


def test_a_country_example_dated_before_its_union_s_rules_fails_as_an_example() -> None:
    # bench/fuzz.py's rule-file mutant #3319 (seed 0): FR's third example moved to
    # 1900-01-01, when no EU rules are in effect; FR takes its valuation basis and default
    # rate from the EU, so the estimate reached an `assert` (exit 70 in `tiv test`). Now
    # the example fails naming the union's rules, and nothing is raised.
    path = "rules/countries/FR/1.0.0.yaml"
    text = TEXTS[path].replace("{id: FR-EX-3, date: 2026-07-01,", "{id: FR-EX-3, date: 1900-01-01,")
    assert text != TEXTS[path]
    files = {
        **rule_files(path, text),
        path: text,
        "rules/countries/EU/1.0.0.yaml": TEXTS["rules/countries/EU/1.0.0.yaml"],
    }
    outcomes = run_examples(load_rules(files=files, entry_points=False), matcher=default_matcher())
    (failed,) = [outcome for outcome in outcomes if not outcome.passed]
    assert failed.pack == "FR@1.0.0"
    (mismatch,) = failed.mismatches
    assert "takes customs rules from EU" in mismatch and "1900-01-01" in mismatch
