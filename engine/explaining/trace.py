"""Tracers: what evaluation tells about each figure it makes.

In: calls from the evaluator, one per step (a conversion, a counted or excluded
charge, a formula, a rule that fired). Out: ordered `Step`s with the expression,
its inputs, the value and the `path:line` of the rule text that produced it.

The evaluator always receives a tracer; `NullTracer` does nothing, so valuing
without an explanation costs no formatting. Explanations are rendered from these
steps (`engine.explaining.render`), never from logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from pydantic import BaseModel

from engine.money import plain
from engine.result import TraceStep


def show(value: Any) -> str:
    """A value as the trace writes it: exact decimals, ISO dates, lower-case booleans."""
    kind = type(value)
    if kind is str:
        return str(value)
    if kind is Decimal:
        text = format(value, "f")
        return text[1:] if text[0] == "-" and value.is_zero() else text  # no "-0.00"
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


@dataclass(frozen=True)
class Step:
    kind: str  # "convert", "charge", "formula", "rule", "decision"
    name: str
    expression: str
    inputs: Mapping[str, str]
    value: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "expression": self.expression,
            "inputs": dict(self.inputs),
            "value": self.value,
            "source": self.source,
        }


class Tracer(Protocol):
    enabled: bool

    def step(
        self,
        kind: str,
        name: str,
        expression: str,
        inputs: Mapping[str, Any],
        value: Any,
        source: str,
    ) -> None: ...


class NullTracer:
    enabled = False

    def step(
        self,
        kind: str,
        name: str,
        expression: str,
        inputs: Mapping[str, Any],
        value: Any,
        source: str,
    ) -> None:
        return None


class RecordingTracer:
    """Records each step's values as given; `steps`/`rendered` turn them into text on demand.

    The expression, the inputs' names and the source of a step are the plan's own
    (static) strings: recording a step costs a tuple, and nothing is formatted until the
    result is built. A plain class with slots: one is made per valuation.
    """

    __slots__ = ("enabled", "recorded")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.recorded: list[tuple[str, str, str, Mapping[str, Any], Any, str]] = []

    def step(
        self,
        kind: str,
        name: str,
        expression: str,
        inputs: Mapping[str, Any],
        value: Any,
        source: str,
    ) -> None:
        self.recorded.append((kind, name, expression, inputs, value, source))

    @property
    def steps(self) -> list[Step]:
        return [
            Step(kind, name, expression, {k: show(v) for k, v in inputs.items()}, show(value), src)
            for kind, name, expression, inputs, value, src in self.recorded
        ]

    def rendered(self) -> list[TraceStep]:
        """The steps as the result's `TraceStep`s (see `render_steps`)."""
        return render_steps(self.recorded)


def render_steps(
    recorded: list[tuple[str, str, str, Mapping[str, Any], Any, str]],
) -> list[TraceStep]:
    """Recorded steps as `TraceStep`s, built from our own strings: not re-validated.

    A value met again (a formula's result read by later formulas) is written once:
    the recorded steps keep every value alive, so its id is its identity here.
    """
    texts: dict[int, str] = {}
    get = texts.get

    def text(value: Any) -> str:
        if type(value) is str:
            return value
        found = get(id(value))
        if found is None:
            found = texts[id(value)] = show(value)
        return found

    new = TraceStep.__new__
    set_dict = _set_dict
    set_fields = _set_fields
    set_extra = _set_extra
    set_private = _set_private
    fields_set = _FIELDS_SET
    steps: list[TraceStep] = []
    append = steps.append
    for kind, name, expression, inputs, value, source in recorded:
        step = new(TraceStep)
        set_dict(
            step,
            {
                "kind": kind,
                "name": name,
                "expression": expression,
                "inputs": {k: text(v) for k, v in inputs.items()} if inputs else {},
                "value": text(value),
                "source": source,
            },
        )
        # Shared: a frozen model's fields set is only ever copied, never changed.
        set_fields(step, fields_set)
        set_extra(step, None)
        set_private(step, None)
        append(step)
    return steps


_FIELDS_SET = set(TraceStep.model_fields)
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
