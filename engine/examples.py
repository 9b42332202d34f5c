"""Run the examples kept beside the rules: each a shipment and the figures it must give.

In: a `RuleSet` (examples' facts were read when it loaded). Out: one `ExampleOutcome`
per example, with what differed, from the expectation or between matcher backends.
`tiv test` prints them and `tiv validate` counts a
failing example as a meaning error of its pack: an expectation that no longer holds
means the rules and their documentation disagree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from engine.compiling.country import CompiledCountry, CountryExampleCase
from engine.compiling.pack import CompiledClaimExample, CompiledExample, CompiledPack
from engine.errors import EvaluationError, Location, Problem, TivError
from engine.evaluating.duties import DutyEstimator
from engine.evaluating.valuation import evaluate, settle
from engine.explaining.trace import NullTracer, RecordingTracer
from engine.facts import FactsReference, read_facts
from engine.matching.registry import Matcher, available_matchers
from engine.money import exact, plain
from engine.result import Valuation
from engine.ruleset import RuleSet


@dataclass(frozen=True)
class ExampleOutcome:
    pack: str
    name: str
    where: Location
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


def run_examples(
    rules: RuleSet, packs: Iterable[str] | None = None, matcher: Matcher | None = None
) -> list[ExampleOutcome]:
    """Run every example of the named packs and countries (`id` or `id@version`), or all.

    Without a `matcher`, each pack example runs on every available matcher and fails on
    any difference between their results (the `matcher` field aside).
    """
    matchers = [matcher] if matcher is not None else available_matchers()
    wanted = list(packs) if packs else None
    outcomes = []
    for pack_id, versions in rules.packs.items():
        for pack in versions:
            if wanted is not None and pack_id not in wanted and pack.ref not in wanted:
                continue
            for example in pack.examples:
                outcomes.append(_on_every(rules, pack, example, matchers))
            for claim_case in pack.claims.examples if pack.claims else ():
                each = [run_claim_example(rules, pack, claim_case, m) for m in matchers]
                diffs = list(each[0].mismatches)
                for other, got in zip(matchers[1:], each[1:], strict=True):
                    if got.mismatches != each[0].mismatches:
                        diffs.append(f"matcher {other.name} differs: {'; '.join(got.mismatches)}")
                outcomes.append(dataclasses.replace(each[0], mismatches=tuple(diffs)))
    for country_id, countries in rules.duty_rules.items():
        for country in countries:
            if wanted is not None and country_id not in wanted and country.ref not in wanted:
                continue
            for case in country.examples:
                outcomes.append(run_country_example(rules, country, case))
    return outcomes


def run_claim_example(
    rules: RuleSet, pack: CompiledPack, case: CompiledClaimExample, matcher: Matcher
) -> ExampleOutcome:
    """Settle the example's loss under this exact pack version and compare the figures."""
    example = case.example
    expect = example.expect
    name = f"claim: {example.name}"
    try:
        shipment = read_facts(case.facts, rules.facts_reference(pack), name=case.facts_name)
        result = settle(
            rules,
            pack,
            shipment,
            example.loss,
            as_of=shipment.date,
            matcher=matcher,
            tracer=NullTracer(),
        )
    except TivError as exc:
        if expect.error is not None and expect.error in {p.code for p in exc.problems}:
            return ExampleOutcome(pack.ref, name, case.where, ())
        return ExampleOutcome(pack.ref, name, case.where, (f"raised {exc.kind}: {exc}",))
    diffs = []
    if expect.error is not None:
        diffs.append(f"expected error {expect.error}, got an indemnity")
    if expect.indemnity is not None and Decimal(result.indemnity) != expect.indemnity:
        diffs.append(f"indemnity: expected {expect.indemnity}, got {result.indemnity}")
    for key, wanted in (expect.components or {}).items():
        if key not in result.components:
            diffs.append(f"components.{key}: not a claims component of this pack")
        elif Decimal(result.components[key]) != wanted:
            diffs.append(f"components.{key}: expected {wanted}, got {result.components[key]}")
    return ExampleOutcome(pack.ref, name, case.where, tuple(diffs))


def run_country_example(
    rules: RuleSet, country: CompiledCountry, case: CountryExampleCase
) -> ExampleOutcome:
    """Estimate duties for the example's shipment with this exact country version."""
    example = case.example
    expect = example.expect
    try:
        reference = FactsReference(rules.currencies, rules.countries)
        shipment = read_facts(case.facts, reference, name=case.facts_name)
        union = None
        if country.customs_union is not None:
            union = rules.duty_rules_for(country.customs_union, shipment.date)[0]
            if union is None:  # as `RuleSet.duty_rules_for` says it for a valuation
                raise EvaluationError(
                    Problem(
                        "duties.no_union_rules",
                        f"{country.ref} takes customs rules from {country.customs_union}, "
                        f"which has no published version in effect on {shipment.date}",
                        country.where.at("customs_union"),
                    )
                )
        estimator = DutyEstimator(shipment, country, union, NullTracer())
        with exact():
            estimator.estimate(example.fob, example.freight)
        estimate = estimator.result
        assert estimate is not None
    except TivError as exc:
        if expect.error is not None and expect.error in {p.code for p in exc.problems}:
            return ExampleOutcome(country.ref, example.name, case.where, ())
        return ExampleOutcome(country.ref, example.name, case.where, (f"raised {exc.kind}: {exc}",))
    diffs = []
    if expect.error is not None:
        diffs.append(f"expected error {expect.error}, got an estimate")
    if expect.total is not None and Decimal(estimate.total) != expect.total:
        diffs.append(f"total: expected {expect.total}, got {estimate.total}")
    sums: dict[str, Decimal] = {}
    for line in estimate.lines:
        sums[line.id] = sums.get(line.id, Decimal(0)) + Decimal(line.amount)
    for line_id, wanted in (expect.lines or {}).items():
        if line_id not in sums:
            diffs.append(f"lines.{line_id}: no such line (lines: {', '.join(sums)})")
        elif sums[line_id] != wanted:
            diffs.append(f"lines.{line_id}: expected {wanted}, got {plain(sums[line_id])}")
    if expect.de_minimis is not None and sorted(expect.de_minimis) != sorted(
        estimate.de_minimis_applied
    ):
        diffs.append(
            f"de_minimis: expected {sorted(expect.de_minimis)}, got "
            f"{sorted(estimate.de_minimis_applied)}"
        )
    return ExampleOutcome(country.ref, example.name, case.where, tuple(diffs))


def _on_every(
    rules: RuleSet, pack: CompiledPack, example: CompiledExample, matchers: list[Matcher]
) -> ExampleOutcome:
    """The example on the first matcher, and what any other matcher gives differently."""
    first = run_example(rules, pack, example, matchers[0])
    if len(matchers) == 1:
        return first
    seen = _valued(rules, pack, example, matchers[0], trace=True)
    diffs = list(first.mismatches)
    for other in matchers[1:]:
        got = _valued(rules, pack, example, other, trace=True)
        if got != seen:
            where = (
                ", ".join(k for k in seen if got.get(k) != seen.get(k))
                if isinstance(got, dict) and isinstance(seen, dict)
                else f"{got} != {seen}"
            )
            diffs.append(f"matcher {other.name} differs from {matchers[0].name}: {where}")
    return _outcome(pack, example, diffs)


def _valued(
    rules: RuleSet, pack: CompiledPack, example: CompiledExample, matcher: Matcher, trace: bool
) -> dict[str, object] | list[str]:
    """The result (trace included, matcher left out) or the error's problems, comparable."""
    try:
        result = _evaluate_example(rules, pack, example, matcher, trace)
    except TivError as exc:
        return [str(p) for p in exc.problems]
    data = result.model_dump(mode="json")
    del data["matcher"]
    return data


def _evaluate_example(
    rules: RuleSet, pack: CompiledPack, example: CompiledExample, matcher: Matcher, trace: bool
) -> Valuation:
    reference = rules.facts_reference(pack)
    shipment = read_facts(example.facts, reference, name=example.facts_name)
    return evaluate(
        rules,
        pack,
        shipment,
        as_of=example.example.as_of or shipment.date,
        matcher=matcher,
        tracer=RecordingTracer() if trace else NullTracer(),
    )


def run_example(
    rules: RuleSet, pack: CompiledPack, example: CompiledExample, matcher: Matcher
) -> ExampleOutcome:
    expect = example.example.expect
    try:
        result = _evaluate_example(rules, pack, example, matcher, trace=False)
    except TivError as exc:
        codes = {p.code for p in exc.problems}
        if expect.error is not None and expect.error in codes:
            return _outcome(pack, example, [])
        return _outcome(pack, example, [f"raised {exc.kind}: {exc}"])
    if expect.error is not None:
        return _outcome(pack, example, [f"expected error {expect.error}, got a valuation"])
    return _outcome(pack, example, compare(expect, result))


def compare(expect: object, result: Valuation) -> list[str]:
    """What differs between an Expectation and a Valuation, one line per difference."""
    from engine.schema.models import Expectation

    assert isinstance(expect, Expectation)
    diffs = []
    checked = expect.checked()
    for label, wanted_amount, got_amount in (
        ("premium", expect.premium, result.premium),
        ("deductible", expect.deductible, result.deductible),
    ):
        if label in checked and not _same(wanted_amount, got_amount):
            diffs.append(f"{label}: expected {_shown(wanted_amount)}, got {_shown(got_amount)}")
    for key, wanted_figure in (expect.figures or {}).items():
        if key not in result.figures:
            known = ", ".join(sorted(result.figures)) or "none"
            diffs.append(f"figures.{key}: not a figure of this pack (figures: {known})")
        elif not _same(wanted_figure, result.figures[key]):
            got_figure = _shown(result.figures[key])
            diffs.append(f"figures.{key}: expected {_shown(wanted_figure)}, got {got_figure}")
    if expect.total_insured_value is not None:
        got = Decimal(result.total_insured_value)
        if got != expect.total_insured_value:
            diffs.append(
                f"total_insured_value: expected {expect.total_insured_value}, "
                f"got {result.total_insured_value}"
            )
    for name, wanted in (expect.components or {}).items():
        if name not in result.components:
            diffs.append(f"components.{name}: not a component of this pack")
        elif Decimal(result.components[name]) != wanted:
            diffs.append(f"components.{name}: expected {wanted}, got {result.components[name]}")
    if expect.decision is not None and expect.decision != result.decision:
        diffs.append(f"decision: expected {expect.decision}, got {result.decision}")
    checks = (
        ("reasons", expect.reasons, [r.rule for r in result.reasons]),
        ("flags", expect.flags, [f.name for f in result.flags]),
        ("excluded_charges", expect.excluded_charges, [c.type for c in result.excluded_charges]),
    )
    for label, wanted_list, got_list in checks:
        if wanted_list is not None and sorted(wanted_list) != sorted(got_list):
            diffs.append(f"{label}: expected {sorted(wanted_list)}, got {sorted(got_list)}")
    return diffs


def _same(wanted: Decimal | None, got: Decimal | str | None) -> bool:
    """An expected amount (None: expected null) against a result's text (None: null)."""
    if wanted is None or got is None:
        return wanted is None and got is None
    return Decimal(got) == wanted


def _shown(amount: Decimal | str | None) -> str:
    return "null" if amount is None else str(amount)


def _outcome(pack: CompiledPack, example: CompiledExample, diffs: list[str]) -> ExampleOutcome:
    return ExampleOutcome(pack.ref, example.example.name, example.where, tuple(diffs))
