"""The production Python matcher: the JSON condition grammar, interpreted in Python.

In: a `PhasePlan` (or, through `match`, any `MatchRuleset`) and match facts. Out: the
firings, rule order then fact order. It evaluates each parsed condition directly on each
encoded fact, so it shares no evaluation strategy with the durable_rules backend (which
splits conditions into alternatives and lets the Rete network run them) nor with the
compiled closures (which never see JSON): agreement among the three is evidence, not
tautology. It runs the JSON durable_rules would run where durable_rules does not import
(Python 3.13+).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.matching.grammar import (
    AllOf,
    AnyEquals,
    AnyOf,
    Condition,
    Firing,
    MatchRuleset,
    check_facts,
    prepare,
)
from engine.matching.plan import Env, PhasePlan, Subject, encode_subjects

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}


def holds(cond: Condition, fact: Mapping[str, Any]) -> bool:
    """Whether `cond` holds for `fact`; a comparison on an absent field is false."""
    if isinstance(cond, AllOf):
        return all(holds(part, fact) for part in cond.parts)
    if isinstance(cond, AnyOf):
        return any(holds(part, fact) for part in cond.parts)
    if isinstance(cond, AnyEquals):
        items = fact.get(cond.field)
        # `check_facts` guarantees the list's element type is the literals' type, so
        # `in` cannot confuse True with 1.
        return items is not None and any(value in items for value in cond.values)
    if cond.field not in fact:
        return False
    if cond.other is None:
        right = cond.value
    elif cond.other in fact:
        right = fact[cond.other]
    else:
        return False
    return _OPERATORS[cond.op](fact[cond.field], right)


class PythonMatcher:
    """`Matcher` evaluating conditions in Python."""

    name = "python"

    def fire(
        self, plan: PhasePlan, shipment: Env, subjects: Sequence[Subject]
    ) -> list[tuple[int, int]]:
        # The compiler's encoder makes facts of the prepared types: no check_facts here.
        facts, positions = encode_subjects(plan, shipment, subjects)
        return [
            (rule, positions[index])
            for rule, cond in enumerate(plan.prepared.conditions)
            for index, fact in enumerate(facts)
            if holds(cond, fact)
        ]

    def match(self, ruleset: MatchRuleset, facts: Sequence[Mapping[str, Any]]) -> list[Firing]:
        """Any ruleset on any facts, both checked against the grammar's contract first."""
        prepared = prepare(ruleset)
        checked = check_facts(prepared, facts)
        return [
            Firing(rule_id, fact["id"])
            for rule_id, cond in zip(prepared.rule_ids, prepared.conditions, strict=True)
            for fact in checked
            if holds(cond, fact)
        ]
