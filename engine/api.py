"""The library API: load rules once, value many shipments.

    rules = load_rules("path/to/repo")              # or load_rules(files={...})
    result = value(rules, facts, policy="standard")  # a Valuation, with its trace
    for item in value_many(rules, stream, policy="standard"):  # Valuation or TivError
        ...

Loading validates and compiles everything; `value` never rereads or recompiles.

Each valuation has a time budget (`budget=` seconds; default $TIV_TIME_BUDGET, else
2 s): one that runs over it raises EvaluationError `valuation.time_budget` at the next
phase boundary, so no input holds a caller (a batch worker, a service thread) for long.
"""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from engine import firstuse
from engine.compiling.formulas import Function
from engine.compiling.pack import CompiledPack
from engine.errors import EvaluationError, FactsError, Location, Problem, TivError
from engine.evaluating.straightline import StraightLine, plain_line
from engine.evaluating.valuation import evaluate, evaluate_plain, in_time, settle
from engine.explaining.trace import NullTracer, RecordingTracer
from engine.facts import FactsReference, Shipment, read_facts, read_plain
from engine.functions import function_table
from engine.loading.sources import FileSystemSource, MemorySource, RuleSource
from engine.matching.compiled import CompiledMatcher
from engine.matching.registry import Matcher, default_matcher
from engine.result import Claim, Valuation
from engine.ruleset import RuleSet, load_ruleset
from engine.schema.models import Loss

_NO_TRACE = NullTracer()  # stateless: one serves every call
_COMPILED = default_matcher()  # stateless too
FactsInput = Shipment | Mapping[str, Any] | str | bytes | os.PathLike[str]

# The time budget of one valuation, facts reading included. Generous: a valuation takes
# milliseconds; the budget is there so that no input can hold a worker for long.
TIME_BUDGET_ENV = "TIV_TIME_BUDGET"
DEFAULT_TIME_BUDGET = 2.0


# Every valuation reads the variable: `os.environ.get` costs 0.6 µs (the name encoded,
# the value decoded), a twentieth of a fast valuation. CPython's os.environ keeps the
# encoded environment in `_data`, updated by every change made through os.environ;
# reading it, and parsing a value only when it changes, costs 0.05 µs. Where it is
# missing (another Python), os.environ.get.
_ENVIRON: Mapping[Any, Any] | None = getattr(os.environ, "_data", None)
_ENCODED_NAME: Any = getattr(os.environ, "encodekey", str)(TIME_BUDGET_ENV)
# (raw value, its seconds, the same in nanoseconds or None for no budget)
_last_budget: tuple[Any, float, int | None] = (
    None,
    DEFAULT_TIME_BUDGET,
    int(DEFAULT_TIME_BUDGET * 1e9),
)


def default_time_budget() -> float:
    """The budget in force when none is given: $TIV_TIME_BUDGET seconds, else 2 s.

    `inf` (or `none`) means no budget. EvaluationError if the variable is not a number.
    """
    return _default_budget()[1]


def _default_budget() -> tuple[Any, float, int | None]:
    global _last_budget
    raw = _ENVIRON.get(_ENCODED_NAME) if _ENVIRON is not None else os.environ.get(TIME_BUDGET_ENV)
    if raw == _last_budget[0]:
        return _last_budget
    seconds = _budget_of(os.environ.get(TIME_BUDGET_ENV, ""))
    _last_budget = (raw, seconds, None if seconds == math.inf else int(seconds * 1e9))
    return _last_budget


def _budget_of(given: str) -> float:
    given = given.strip()
    if not given:
        return DEFAULT_TIME_BUDGET
    if given.lower() in ("none", "inf", "infinity"):
        return math.inf
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise EvaluationError(
            Problem(
                "valuation.time_budget_setting",
                f"{TIME_BUDGET_ENV}={given[:40]!r} is not a number of seconds above 0 (or none)",
            )
        )
    return seconds


def deadline_of(budget: float | None) -> int | None:
    """The monotonic_ns deadline of a valuation starting now; None for no budget.

    `budget`: seconds; None is the default (`default_time_budget`); math.inf, no budget.
    """
    if budget is None:
        nanos = _default_budget()[2]
        return None if nanos is None else time.monotonic_ns() + nanos
    seconds = budget
    if seconds == math.inf:
        return None
    if not seconds > 0:  # NaN and -inf too
        raise ValueError(f"a time budget must be more than 0 seconds, not {seconds!r}")
    return time.monotonic_ns() + int(seconds * 1e9)


@runtime_checkable
class AuditSink(Protocol):
    """Where valuations are recorded (engine.audit.AuditLog is the SQLite one).

    `record` stores the canonical facts and the full result and returns the record id;
    it must be durable when it returns, or raise.
    """

    def record(
        self, kind: str, facts: Mapping[str, Any], result: Valuation | Claim, rules: RuleSet
    ) -> str: ...


def load_rules(
    root: str | Path | RuleSource | None = None,
    *,
    files: Mapping[str, str | bytes] | None = None,
    functions: Mapping[str, Function] | Iterable[Function] | None = None,
    entry_points: bool = True,
) -> RuleSet:
    """Load a rule repository from a folder, a RuleSource, or in-memory texts.

    `files` maps repository-relative paths (`policies/standard/1.0.0.yaml`,
    `rules/reference/currencies.yaml`, ...) to their text. `functions` adds custom
    formula functions (see `engine.functions.custom_function`); with `entry_points`,
    those installed packages publish under `tiv.functions` are added too.
    Raises RulesError.
    """
    if files is not None:
        if root is not None:
            raise TypeError("give either a root or files, not both")
        source: RuleSource = MemorySource(files)
    elif root is None:
        raise TypeError("load_rules needs a root folder, a RuleSource or files=")
    elif isinstance(root, str | Path):
        source = FileSystemSource(root)
    else:
        source = root
    return load_ruleset(source, function_table(functions, entry_points))


def value(
    rules: RuleSet,
    facts: FactsInput,
    *,
    policy: str,
    as_of: datetime.date | None = None,
    allow_draft: bool = False,
    matcher: Matcher | None = None,
    trace: bool = True,
    audit: AuditSink | None = None,
    budget: float | None = None,
    deadline: int | None = None,
) -> Valuation:
    """Value one shipment under `policy` (`id` or `id@version`).

    The version is the published one in effect on `as_of`, which defaults to the
    shipment's own date. With `audit`, the valuation (always with its trace) is recorded
    before it is returned, and the result carries the record's id. `budget`: seconds the
    valuation may take (None: $TIV_TIME_BUDGET, else 2 s; math.inf: no limit), or
    `deadline`, a time.monotonic_ns by which it must end (the earlier of the two holds).
    Raises FactsError, SelectionError or EvaluationError (`valuation.time_budget` when
    over the budget).
    """
    since = firstuse.spent_ns  # making what later valuations reuse is not this one's work
    deadline = deadline_of(budget) if deadline is None else _earlier(deadline_of(budget), deadline)
    if (
        audit is None
        and type(facts) is dict
        and (matcher is None or type(matcher) is CompiledMatcher)
    ):
        # The common case's road: facts read into plain dicts and valued by the pack's
        # plain straight line, no model built (see `_value_plain`).
        valued = _value_plain(
            rules, facts, policy, as_of, allow_draft, matcher, trace, deadline, since
        )
        if valued is not None:
            return valued
    shipment, pack, day = _prepare(rules, facts, policy, as_of, allow_draft)
    deadline = firstuse.credited(deadline, since)
    tracer = RecordingTracer() if trace or audit is not None else _NO_TRACE
    result = evaluate(
        rules,
        pack,
        shipment,
        as_of=day,
        matcher=matcher or default_matcher(),
        tracer=tracer,
        deadline=deadline,
    )
    if audit is not None:
        # The record holds the result as evaluated; its id is added to the copy returned.
        record_id = audit.record("valuation", shipment.canonical(), result, rules)
        result = result.model_copy(update={"audit_id": record_id})
    if not trace and audit is not None:  # recorded for the audit log, not asked for here
        result = result.model_copy(update={"trace": []})
    return result


def value_many(
    rules: RuleSet,
    facts: Iterable[FactsInput],
    *,
    policy: str,
    as_of: datetime.date | None = None,
    allow_draft: bool = False,
    matcher: Matcher | None = None,
    trace: bool = True,
    budget: float | None = None,
) -> Iterator[Valuation | TivError]:
    """Value a stream of shipments under `policy`, one result per item, in order.

    `budget` is each item's own, as in `value`: an item over it is yielded as its
    EvaluationError and the stream goes on.

    Each item is a mapping, JSON bytes or text, a path or a `Shipment`. What `value`
    raises for one item (FactsError, SelectionError, EvaluationError) is yielded in its
    place, so one bad shipment does not end the stream; anything else propagates. Items
    are read lazily: the stream may be longer than memory. Everything compiled (packs,
    condition plans, the matcher, facts references) is shared by all items.
    """
    chosen = matcher or default_matcher()
    seconds = default_time_budget() if budget is None else budget
    for item in facts:
        try:
            yield value(
                rules,
                item,
                policy=policy,
                as_of=as_of,
                allow_draft=allow_draft,
                matcher=chosen,
                trace=trace,
                budget=seconds,
            )
        except TivError as error:
            yield error


def claim(
    rules: RuleSet,
    facts: FactsInput,
    loss: Loss | Mapping[str, Any],
    *,
    policy: str,
    as_of: datetime.date | None = None,
    allow_draft: bool = False,
    matcher: Matcher | None = None,
    trace: bool = True,
    audit: AuditSink | None = None,
    budget: float | None = None,
    deadline: int | None = None,
) -> Claim:
    """Settle a loss under `policy`: the valuation, then the pack's claims formulas.

    `loss` is a `Loss` or a mapping: {"kind": "total"}, {"kind": "partial",
    "damage_percent": "25"}, or {"kind": "partial", "gross_sound_value": ...,
    "gross_damaged_value": ...}. Raises FactsError for a bad loss, as for bad facts.
    `budget` and `deadline` bound the time as in `value`.
    """
    since = firstuse.spent_ns
    deadline = _earlier(deadline_of(budget), deadline)
    if not isinstance(loss, Loss):
        loss = _read_loss(loss)
    shipment, pack, day = _prepare(rules, facts, policy, as_of, allow_draft)
    deadline = firstuse.credited(deadline, since)
    tracer = RecordingTracer() if trace or audit is not None else NullTracer()
    result = settle(
        rules,
        pack,
        shipment,
        loss,
        as_of=day,
        matcher=matcher or default_matcher(),
        tracer=tracer,
        deadline=deadline,
    )
    if audit is not None:
        record_id = audit.record(
            "claim",
            {"shipment": shipment.canonical(), "loss": result.loss.model_dump(mode="json")},
            result,
            rules,
        )
        result = result.model_copy(update={"audit_id": record_id})
    return result


def _prepare(
    rules: RuleSet, facts: FactsInput, policy: str, as_of: datetime.date | None, allow_draft: bool
) -> tuple[Shipment, CompiledPack, datetime.date]:
    """Read the facts and select the pack version for their date (or `as_of`)."""
    # The date picks the version, so facts are read before it is known: against every
    # charge type of the pack, then checked against the selected version's own.
    reference = rules.pack_facts_reference(policy.partition("@")[0])
    shipment = _read(facts, reference)
    pack, day = _select(rules, shipment, reference, policy, as_of, allow_draft)
    return shipment, pack, day


class _PlainRoad:
    """What the plain road needs for one policy of a rule set, found once: the facts
    reference, and per (day, allow_draft) the version it selects, its plain line and
    whether it has every charge type of the pack (if not, each shipment's are checked:
    one it lacks is an error `_select` words), or False when that version takes the
    Shipment road."""

    __slots__ = ("policy", "reference", "versions")

    def __init__(self, policy: str, reference: FactsReference) -> None:
        self.policy = policy
        self.reference = reference
        self.versions: dict[tuple[datetime.date, bool], Any] = {}

    @staticmethod
    def of(rules: RuleSet, policy: str) -> _PlainRoad | Literal[False]:
        pack_id = policy.partition("@")[0]
        versions = rules.packs.get(pack_id, ())
        if not any(plain_line(pack) is not None for pack in versions):
            return False  # reading facts plain only helps a pack that values them
        return _PlainRoad(policy, rules.pack_facts_reference(pack_id))

    def version(
        self, rules: RuleSet, day: datetime.date, allow_draft: bool
    ) -> tuple[CompiledPack, StraightLine, bool] | Literal[False]:
        try:
            pack = rules.select(self.policy, day, allow_draft=allow_draft)
        except TivError:
            return False  # no version: the Shipment road words the error
        line = plain_line(pack)
        read_against = self.reference.charge_types
        found: tuple[CompiledPack, StraightLine, bool] | Literal[False] = False
        if line is not None and read_against is not None:
            found = (pack, line, pack.charge_types.keys() >= read_against)
        if len(self.versions) >= _VERSIONS_MAX:  # a stream repeats few dates: bounded
            self.versions.clear()
        self.versions[day, allow_draft] = found
        return found


_VERSIONS_MAX = 4096


def _value_plain(
    rules: RuleSet,
    facts: dict[str, Any],
    policy: str,
    as_of: datetime.date | None,
    allow_draft: bool,
    matcher: Matcher | None,
    trace: bool,
    deadline: int | None,
    since: int,
) -> Valuation | None:
    """`value`'s result by the plain road (facts.read_plain, evaluating.evaluate_plain),
    or None for anything that is not its common case: `value` then reads a `Shipment`
    and values it, deciding every error. `since`: `firstuse.spent_ns` as `value` began."""
    road: _PlainRoad | Literal[False] | None = rules.plain_roads.get(policy)
    if road is None:
        road = rules.plain_roads[policy] = _PlainRoad.of(rules, policy)
    if road is False:
        return None
    reference = road.reference
    plain = read_plain(facts, reference)
    if plain is None:
        return None
    day = as_of or plain["date"]
    found = road.versions.get((day, allow_draft))
    if found is None:
        found = road.version(rules, day, allow_draft)
    if found is False:
        return None
    pack, line, reads_all = found
    if not reads_all and not all(c["type"] in pack.charge_types for c in plain.get("charges", ())):
        return None
    valued = evaluate_plain(rules, pack, line, plain, reference, day, matcher or _COMPILED, trace)
    if valued is not None and deadline is not None and time.monotonic_ns() > deadline:
        # One call: checked after it, less what was made on first use meanwhile.
        in_time(firstuse.credited(deadline, since), "valued the shipment", pack)
    return valued


def _select(
    rules: RuleSet,
    shipment: Shipment,
    reference: FactsReference,
    policy: str,
    as_of: datetime.date | None,
    allow_draft: bool,
) -> tuple[CompiledPack, datetime.date]:
    """The version of `policy` for the shipment (read against `reference`, the pack's) and
    the day that chose it; FactsError for a charge type that version does not know."""
    day = as_of or shipment.date
    pack = rules.select(policy, day, allow_draft=allow_draft)
    read_against = reference.charge_types
    if read_against is not None and pack.charge_types.keys() >= read_against:
        return pack, day  # read against types this version all has: none unknown
    unknown = [
        (i, c.type) for i, c in enumerate(shipment.charges) if c.type not in pack.charge_types
    ]
    if unknown:
        known = ", ".join(pack.charge_types)
        raise FactsError(
            [
                Problem(
                    "facts.unknown_charge_type",
                    f"unknown charge type {kind!r} for {pack.ref} (known: {known})",
                    Location(path=f"charges[{i}].type"),
                )
                for i, kind in unknown
            ]
        )
    return pack, day


def value_versions(
    rules: RuleSet,
    facts: FactsInput,
    policies: Sequence[str],
    *,
    allow_draft: bool = False,
    matcher: Matcher | None = None,
    trace: bool = True,
    budget: float | None = None,
) -> list[Valuation | TivError]:
    """One shipment under several policies (the two sides of an impact), each result or
    error in the order given, as `value` would give them one by one.

    When every policy is a version of one pack, the facts are read once (the pack's facts
    reference is the same for all its versions) and each version selected and valued from
    them; each valuation has its own `budget`.
    """
    chosen = matcher or default_matcher()
    pack_ids = {policy.partition("@")[0] for policy in policies}
    if len(pack_ids) != 1:  # different packs read facts against different charge types
        return [
            next(
                value_many(
                    rules,
                    [facts],
                    policy=policy,
                    allow_draft=allow_draft,
                    matcher=chosen,
                    trace=trace,
                    budget=budget,
                )
            )
            for policy in policies
        ]
    seconds = default_time_budget() if budget is None else budget
    since = firstuse.spent_ns
    started = deadline_of(seconds)
    reference = rules.pack_facts_reference(pack_ids.pop())
    try:
        shipment = _read(facts, reference)
    except TivError as error:
        return [error] * len(policies)
    started = firstuse.credited(started, since)
    results: list[Valuation | TivError] = []
    for index, policy in enumerate(policies):
        try:
            pack, day = _select(rules, shipment, reference, policy, None, allow_draft)
            results.append(
                evaluate(
                    rules,
                    pack,
                    shipment,
                    as_of=day,
                    matcher=chosen,
                    tracer=RecordingTracer() if trace else _NO_TRACE,
                    # The first valuation's budget counts the reading of the facts too.
                    deadline=started if index == 0 else deadline_of(seconds),
                )
            )
        except TivError as error:
            results.append(error)
    return results


def _earlier(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    return first if second is None else min(first, second)


def _read_loss(data: Mapping[str, Any]) -> Loss:
    from pydantic import ValidationError

    from engine.errors import json_path

    try:
        return Loss.model_validate(dict(data))
    except ValidationError as exc:
        raise FactsError(
            [
                Problem(
                    "facts.loss",
                    str(err["msg"]).removeprefix("Value error, "),
                    Location(path=json_path(["loss", *err["loc"]])),
                )
                for err in exc.errors()
            ]
        ) from None


def _read(facts: FactsInput, reference: FactsReference) -> Shipment:
    if isinstance(facts, Shipment):
        # A model built by the caller has not met this rule set's reference data.
        facts = facts.canonical()
    return read_facts(facts, reference)
