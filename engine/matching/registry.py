"""Which matchers exist here, and the one used when the caller names none.

A matcher decides which rules of a `PhasePlan` hold for which subjects (the shipment, a
charge line, a goods line). Every backend gives the same firings on every input: the
compiled closures (the default), durable_rules' Rete network, and the production Python
matcher that interprets the same JSON durable_rules runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.matching.compiled import CompiledMatcher
from engine.matching.plan import Env, PhasePlan, Subject


class Matcher(Protocol):
    name: str  # "compiled", "durable_rules" or "python"

    def fire(
        self, plan: PhasePlan, shipment: Env, subjects: Sequence[Subject]
    ) -> list[tuple[int, int]]:
        """(rule index, subject index) of every rule that holds, rule order then subject order.

        A subject's scope must be the rule's scope. Raises `plan.ConditionLimit` (or
        OverflowError) for a value a JSON backend cannot compare exactly.
        """
        ...


def available_matchers() -> list[Matcher]:
    """Every backend usable in this interpreter: compiled, durable_rules (if it imports), python."""
    from engine.matching import compiled, durable_rules, production

    found: list[Matcher] = [compiled.CompiledMatcher()]
    if durable_rules.AVAILABLE:
        found.append(durable_rules.DurableMatcher())
    found.append(production.PythonMatcher())
    return found


def default_matcher() -> Matcher:
    """The compiled matcher: closures over the typed environment, no encoding. One
    instance serves every call (it holds no state); it is asked for on every valuation."""
    return _DEFAULT


def matcher_named(name: str) -> Matcher:
    """The available matcher called `name`; ValueError listing the others."""
    found = available_matchers()
    for matcher in found:
        if matcher.name == name:
            return matcher
    names = ", ".join(m.name for m in found)
    raise ValueError(f"no matcher {name!r} here (available: {names})")


_DEFAULT: Matcher = CompiledMatcher()
