"""Run the examples kept beside the rules: each a shipment and the figures it must give.

In: a `RuleSet` (examples' facts were read when it loaded). Out: one `ExampleOutcome`
per example, with what differed. `tiv test` prints them and `tiv validate` counts a
failing example as a meaning error of its pack: an expectation that no longer holds
means the rules and their documentation disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from engine.compiling.pack import CompiledExample, CompiledPack
from engine.errors import Location, TivError
from engine.evaluating.matcher import Matcher, default_matcher
from engine.evaluating.valuation import evaluate
from engine.explaining.trace import NullTracer
from engine.facts import read_facts
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
    """Run every example of the named packs (`id` or `id@version`), or of all packs."""
    matcher = matcher or default_matcher()
    wanted = list(packs) if packs else None
    outcomes = []
    for pack_id, versions in rules.packs.items():
        for pack in versions:
            if wanted is not None and pack_id not in wanted and pack.ref not in wanted:
                continue
            for example in pack.examples:
                outcomes.append(run_example(rules, pack, example, matcher))
    return outcomes


def run_example(
    rules: RuleSet, pack: CompiledPack, example: CompiledExample, matcher: Matcher
) -> ExampleOutcome:
    expect = example.example.expect
    try:
        reference = rules.facts_reference(pack)
        shipment = read_facts(example.facts, reference, name=example.facts_name)
        places = rules.currencies[shipment.currency]
        result = evaluate(
            pack,
            shipment,
            places,
            as_of=example.example.as_of or shipment.date,
            matcher=matcher,
            tracer=NullTracer(),
        )
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


def _outcome(pack: CompiledPack, example: CompiledExample, diffs: list[str]) -> ExampleOutcome:
    return ExampleOutcome(pack.ref, example.example.name, example.where, tuple(diffs))
