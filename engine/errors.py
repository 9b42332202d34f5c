"""Errors are values: a `Problem` is a code, a message and a `Location`.

Every stage (loading, schema, compiling, facts, evaluating) collects problems rather
than stopping at the first, and raises one `TivError` subclass that carries them all.
The subclass says whose fault it is, and therefore which CLI exit status and HTTP
status a caller should use: bad rule files are not the same failure as bad facts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Location:
    """Where a problem is: a rule file position, a JSON path into facts, or both.

    `file` is relative to the rule repository root; `line` and `col` are 1-based
    (0 means unknown); `path` is a JSON-path-like address such as
    `charges[2].amount` or `formulas.tiv`.
    """

    file: str = ""
    line: int = 0
    col: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.file:
            text = self.file
            if self.line:
                text += f":{self.line}"
                if self.col:
                    text += f":{self.col}"
            return text
        return self.path

    @property
    def source(self) -> str:
        """`path:line`, the form traces cite."""
        return f"{self.file}:{self.line}" if self.line else self.file

    def at(self, path: str) -> Location:
        return Location(self.file, self.line, self.col, path)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("file", self.file),
                ("line", self.line),
                ("col", self.col),
                ("path", self.path),
            )
            if v
        }


@dataclass(frozen=True)
class Problem:
    """One thing wrong. `code` is stable and machine-readable (`yaml.duplicate_key`).

    `severity` "warning" marks something likely wrong that still works (a table row that
    can never be chosen): reported by `tiv validate`, never raised, never an exit status.
    """

    code: str
    message: str
    location: Location = field(default_factory=Location)
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = str(self.location)
        message = f"warning: {self.message}" if self.severity == "warning" else self.message
        if self.location.file and self.location.path:
            return f"{where}: {self.location.path}: {message}"
        return f"{where}: {message}" if where else message

    def to_dict(self) -> dict[str, Any]:
        severity = {"severity": self.severity} if self.severity != "error" else {}
        return {"code": self.code, "message": self.message, **self.location.to_dict(), **severity}


def _sort_key(problem: Problem) -> tuple[str, int, int, str, str]:
    loc = problem.location
    return (loc.file, loc.line, loc.col, loc.path, problem.code)


class TivError(Exception):
    """Base of every error tiv raises on purpose. Carries one or more problems."""

    exit_code = 1
    kind = "error"

    def __init__(self, problems: Problem | Iterable[Problem]) -> None:
        items = [problems] if isinstance(problems, Problem) else list(problems)
        if not items:
            raise ValueError("a TivError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(sorted(items, key=_sort_key))
        super().__init__(str(self))

    def __str__(self) -> str:
        first = str(self.problems[0])
        more = len(self.problems) - 1
        return f"{first} (and {more} more)" if more else first

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.kind, "problems": [p.to_dict() for p in self.problems]}


class RulesError(TivError):
    """A rule file (policy pack, country rules, reference data) is invalid."""

    exit_code = 3
    kind = "invalid_rules"


class FactsError(TivError):
    """The shipment facts are invalid; each problem names the JSON path."""

    exit_code = 2
    kind = "invalid_facts"


class SelectionError(TivError):
    """No such pack or version, or no published version in effect on the date."""

    exit_code = 2
    kind = "no_policy"


class EvaluationError(TivError):
    """Valid rules and facts met at run time and failed (division by zero, no fx rate)."""

    exit_code = 4
    kind = "evaluation_failed"


def problem(code: str, message: str, location: Location | None = None) -> Problem:
    return Problem(code, message, location or Location())


def json_path(parts: Iterable[str | int]) -> str:
    """`("charges", 2, "amount")` -> `charges[2].amount`; odd keys are quoted."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.replace("_", "a").replace("-", "a").isalnum() and not part[:1].isdigit():
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text


def pydantic_problems(
    errors: Iterable[Mapping[str, Any]],
    code: str | Callable[[str], str],
    *,
    prefix: Sequence[str | int] = (),
    where: Callable[[str], Location] | None = None,
) -> list[Problem]:
    """pydantic's `ValidationError.errors()` as Problems: the one translator.

    `code` is the code, or makes it from pydantic's error type; `prefix` goes before each
    error's path (`("loss",)`); `where` turns the JSON path into a Location (a YAML file's
    line marks), else the Location is the path alone.
    """
    problems = []
    for error in errors:
        parts = [*prefix, *(p for p in error["loc"] if isinstance(p, str | int))]
        path = json_path(parts)
        message = str(error["msg"]).removeprefix("Value error, ")
        kind = code if isinstance(code, str) else code(str(error["type"]))
        problems.append(Problem(kind, message, where(path) if where else Location(path=path)))
    return problems
