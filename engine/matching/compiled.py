"""The compiled matcher (the default): each rule's condition is a closure over the typed
environment, built at load from the same expression tree as formulas.

In: a `PhasePlan` and the subjects. Out: the firings, rule order then subject order. No
fact is encoded, no JSON is read, nothing is prepared per call: the closures compare
Decimals, dates, text and lists as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.matching.plan import Env, PhasePlan, Subject


class CompiledMatcher:
    """`Matcher` running the plan's compiled closures."""

    name = "compiled"

    def fire(
        self, plan: PhasePlan, shipment: Env, subjects: Sequence[Subject]
    ) -> list[tuple[int, int]]:
        hits: list[tuple[int, int]] = []
        append = hits.append
        tests = plan.tests
        for rule, scope in enumerate(plan.scopes):
            test = tests[rule]
            for index, subject in enumerate(subjects):
                if subject[0] == scope and test(shipment, subject[2]):
                    append((rule, index))
        return hits
