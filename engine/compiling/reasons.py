"""Reasons templated from parameters and figures, so a reason cannot drift from its figures.

In: a rule's `reason` text, e.g. "The TIV {tiv} is above the {per_conveyance_limit_usd}
USD limit", the pack's parameters (values known at load) and the names of its formulas
(values known per valuation). Out: the reason with every parameter written in, and, when
it names formulas, a `ReasonTemplate` that writes their values in per valuation; or a
problem at the reason's `file:line` naming the names it may use.

`{name}` is the only form: no format specs or conversions, so a figure always reads as
its exact value. `{{` and `}}` are literal braces. Values are written exactly as the
engine holds them: numbers as plain decimal text (`2000000`, `0.0035`, never `2e6` or a
float), dates as YYYY-MM-DD, true/false, lists joined with ", ".
"""

from __future__ import annotations

import datetime
import difflib
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.errors import Location, Problem
from engine.money import plain


@dataclass(frozen=True)
class ReasonTemplate:
    """A reason whose parameters are written in; formulas' values are written per valuation."""

    parts: tuple[tuple[str, str | None], ...]  # (text, formula name or None)

    def render(self, values: Mapping[str, Any]) -> str:
        out = []
        for text, name in self.parts:
            out.append(text)
            if name is not None:
                out.append(written(values.get(name)))
        return "".join(out)


def written(value: Any) -> str:
    """A value as a reason shows it: exact, and the same on every run."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str):
        return value
    if isinstance(value, tuple | list):
        return ", ".join(written(item) for item in value)
    return "(no value)"  # a figure a rate table could not give, or a fact left out


def compile_reason(
    text: str,
    where: Location,
    parameters: Mapping[str, Any],
    formulas: Collection[str],
    *,
    formulas_allowed: bool = True,
) -> tuple[str, ReasonTemplate | None, list[Problem]]:
    """(the reason with parameters written in, its template if it names formulas, problems)."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        return (
            text,
            None,
            [
                Problem(
                    "reason.template",
                    f"the reason's braces do not pair up ({exc}); write {{{{ and }}}} for a "
                    "brace, {name} for a parameter or formula",
                    where,
                )
            ],
        )
    parts: list[tuple[str, str | None]] = []
    problems: list[Problem] = []
    pending = ""
    for literal, name, spec, conversion in pieces:
        pending += literal
        if name is None:
            continue
        if spec or conversion:
            problems.append(
                Problem(
                    "reason.template",
                    f"`{{{name}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}}`: a reason names a value as {{name}} "
                    "only; it is written exactly as the engine holds it",
                    where,
                )
            )
            continue
        if name in parameters:
            pending += written(parameters[name])
        elif name in formulas and formulas_allowed:
            parts.append((pending, name))
            pending = ""
        else:
            message = _unknown(name, parameters, formulas, formulas_allowed)
            problems.append(Problem("reason.unknown_name", message, where))
    if problems:
        return text, None, problems
    if not parts:
        return pending, None, []
    parts.append((pending, None))
    # Without values (a rule book, a listing) the formulas stay named.
    shown = "".join(text + (f"{{{name}}}" if name else "") for text, name in parts)
    return shown, ReasonTemplate(tuple(parts)), []


def _unknown(
    name: str, parameters: Mapping[str, Any], formulas: Collection[str], formulas_allowed: bool
) -> str:
    if name in formulas:
        return (
            f"`{{{name}}}` is a formula, computed after charges are counted; the reason of a "
            f"charge rule can name parameters only (parameters: {', '.join(parameters) or 'none'})"
        )
    known = f"parameters: {', '.join(parameters) or 'none'}"
    names = list(parameters)
    if formulas_allowed:
        known += f"; formulas: {', '.join(formulas) or 'none'}"
        names += list(formulas)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean `{{{close[0]}}}`?" if close else ""
    return f"`{{{name}}}` in the reason is not a parameter or formula of this pack{hint} ({known})"
