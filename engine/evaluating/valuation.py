"""Evaluate one shipment against one compiled pack.

In: a `RuleSet`, the selected `CompiledPack`, validated `Shipment` facts, a matcher
and a tracer. Out: a `Valuation`, or an `EvaluationError` naming the formula and its
`file:line`.

Order: convert amounts -> match charge rules on each charge (exclude, or reject the
facts) -> sum counted charges -> formulas top to bottom (a rate table with no row
for the shipment refers it or fails, as the table says; what depends on the missing
rate becomes a gap, reported as null) -> match decision rules on the shipment, each
charge and each goods line -> strongest decision wins (decline > refer > accept).
`settle` continues from the valuation's names with the pack's claims formulas.
Everything runs under the engine's Decimal context.

Three ways to the same result: the interpreted path (`_evaluate`, which alone decides
unusual cases and every error), the pack's straight line over a `Shipment`
(`_evaluate_straight`), and its plain line over `facts.read_plain`'s dicts
(`evaluate_plain`, engine.api's plain road); the last two give way to the first.
"""

from __future__ import annotations

import datetime
import decimal
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal, getcontext, setcontext
from functools import partial
from typing import Any

from engine import firstuse
from engine._version import __version__
from engine.compiling.formulas import (
    CURRENCY_PLACES,
    DUTIES,
    GAP,
    MISSING,
    SHIPMENT_FX,
    Formula,
    GapValue,
    MissingRate,
    MissingValue,
    TableGap,
)
from engine.compiling.pack import CHARGE_PHASE, DECISION_PHASE, CompiledPack, CompiledRule
from engine.errors import EvaluationError, FactsError, Location, Problem, SelectionError
from engine.evaluating.duties import DutyEstimator
from engine.evaluating.environment import (
    _CHARGE_PATHS,
    _GOODS_PATHS,
    Environment,
    build_environment,
    convert_step,
)
from engine.evaluating.straightline import StraightLine, plain_context, straight_line
from engine.evaluating.straightline import context as straight_context
from engine.explaining.trace import NullTracer, RecordingTracer, Tracer, render_steps, show
from engine.facts import FactsReference, Shipment, read_facts
from engine.matching.compiled import CompiledMatcher
from engine.matching.plan import ConditionLimit, Subject
from engine.matching.registry import Matcher
from engine.money import PRECISION, RUNNING, exact
from engine.result import (
    Claim,
    ExcludedCharge,
    Flag,
    LossIn,
    Reason,
    Valuation,
    built,
    deferred_valuation,
)
from engine.ruleset import RuleSet
from engine.schema.models import Loss, ResultSpec

_STRENGTH = {"accept": 0, "refer": 1, "decline": 2}


def money_text(value: Decimal, places: int) -> Decimal:
    """The figure as results carry it: at least the currency's places, no trailing zeros beyond.

    9070 -> 9070.00 and 50907.0000 -> 50907.00 in USD; 115.335000 -> 115.335. Only zeros
    are added or dropped: the value is never rounded here. A Decimal, which JSON writes as
    exactly that text ("9070.00"); no string is made until someone writes one.
    """
    quantized = value.quantize(_QUANTUM[places] if places < len(_QUANTUM) else _quantum(places))
    if quantized == value:
        # -0.00 (a negative figure rounded to nothing) is written 0.00: keep it as that.
        return quantized if quantized else quantized.copy_abs()
    return value.normalize()


def _quantum(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


_QUANTUM = tuple(_quantum(places) for places in range(8))


def evaluate(
    rules: RuleSet,
    pack: CompiledPack,
    shipment: Shipment,
    *,
    as_of: datetime.date,
    matcher: Matcher,
    tracer: Tracer,
    deadline: int | None = None,
) -> Valuation:
    """`deadline` (time.monotonic_ns) is the valuation's time budget, checked between
    phases: past it, EvaluationError `valuation.time_budget`. None: no budget."""
    # The compiled matcher's common case runs the pack's generated function; anything it
    # does not handle, and every error, is valued again on the interpreted path below,
    # which alone decides results of unusual cases and every error's message.
    since = firstuse.spent_ns  # generating the line on first use is not this one's work
    if type(matcher) is CompiledMatcher and type(tracer) in _FAST_TRACERS:
        line = straight_line(pack)
        if line is not None:
            try:
                valued = _evaluate_straight(line, rules, pack, shipment, as_of, matcher, tracer)
            except Exception:  # the interpreted path decides
                pass
            else:
                # One call with no phase boundary inside: the budget is checked after it.
                in_time(firstuse.credited(deadline, since), "valued the shipment", pack)
                return valued
    return _evaluate(
        rules,
        pack,
        shipment,
        as_of=as_of,
        matcher=matcher,
        tracer=tracer,
        deadline=firstuse.credited(deadline, since),
    )[0]


def in_time(deadline: int | None, done: str, pack: CompiledPack) -> None:
    """EvaluationError if the valuation's deadline has passed (`done`: its last phase)."""
    if deadline is not None and time.monotonic_ns() > deadline:
        raise EvaluationError(
            Problem(
                "valuation.time_budget",
                f"the valuation ran over its time budget (it had {done}); a valuation "
                "normally takes milliseconds: check the facts and the pack, or raise the "
                "budget (--time-budget SECONDS, $TIV_TIME_BUDGET, value(..., budget=...))",
                pack.where,
            )
        )


_FAST_TRACERS = (NullTracer, RecordingTracer)
_NO_TRACE = NullTracer()


def _evaluate_straight(
    line: StraightLine,
    rules: RuleSet,
    pack: CompiledPack,
    shipment: Shipment,
    as_of: datetime.date,
    matcher: Matcher,
    tracer: Tracer,
) -> Valuation:
    """`_evaluate`'s valuation, by the pack's straight line (raises on anything unusual)."""
    tracing = tracer.enabled
    with exact():
        places = rules.currencies[shipment.currency]
        country, union = rules.duty_rules_for(shipment.destination.country, shipment.date)
        duties = duty_trace = None
        if line.uses_duties:
            duty_trace = RecordingTracer() if tracing else _NO_TRACE
            duties = DutyEstimator(shipment, country, union, duty_trace)
        ctx = straight_context(shipment, duties) if line.needs_ctx else None
        output = line.function(shipment, places, country is not None, rules.incoterms, duties, ctx)
        return _straight_valuation(
            line,
            rules,
            pack,
            (shipment, None),
            (shipment.id, shipment.currency, shipment.duties is not None),
            output,
            places,
            as_of,
            matcher,
            tracing,
            duties,
            duty_trace if tracing else None,
        )


def evaluate_plain(
    rules: RuleSet,
    pack: CompiledPack,
    line: StraightLine,
    facts: dict[str, Any],
    reference: FactsReference,
    as_of: datetime.date,
    matcher: Matcher,
    trace: bool,
) -> Valuation | None:
    """The valuation of plain facts (`facts.read_plain`, read against `reference`) by
    the pack's plain straight line (`straightline.plain_line`), with the compiled
    matcher's result; None when the shipment is not its common case: `evaluate` then
    values the `Shipment`, and decides every error."""
    saved = getcontext()
    setcontext(RUNNING)  # `with exact()` at a fifth of the cost (see money.RUNNING)
    try:
        places = rules.currencies[facts["currency"]]
        country, union = rules.duty_rules_for(facts["destination"]["country"], facts["date"])
        duties = duty_trace = None
        if line.uses_duties:  # a Shipment is made only if the duties are estimated
            duty_trace = RecordingTracer() if trace else _NO_TRACE
            made = partial(read_facts, facts, reference)
            duties = DutyEstimator(made, country, union, duty_trace)
        ctx = plain_context(facts, duties) if line.needs_ctx else None
        output = line.function(facts, places, country is not None, rules.incoterms, duties, ctx)
        return _straight_valuation(
            line,
            rules,
            pack,
            (facts, reference),
            (facts["id"], facts["currency"], facts.get("duties") is not None),
            output,
            places,
            as_of,
            matcher,
            trace,
            duties,
            duty_trace if trace else None,
        )
    except Exception:  # the interpreted path decides
        return None
    finally:
        setcontext(saved)


def _rules_fired(
    line: StraightLine, values: tuple[Any, ...], matched: tuple[list[str] | None, ...]
) -> tuple[list[tuple[CompiledRule, list[str]]], list[Reason], list[Flag]]:
    """The decision rules that held (with the paths they matched), their reasons and
    their flags, from a straight line's output."""
    reasons: list[Reason] = []
    flags: list[Flag] = []
    fired: list[tuple[CompiledRule, list[str]]] = []
    for rule, paths in zip(line.decision_rules, matched, strict=True):
        if paths is not None:
            fired.append((rule, paths))
            text = rule.reason
            if rule.template is not None:  # it names formulas: write this valuation's in
                named = {name: values[slot] for name, slot in line.slots.items()}
                text = rule.template.render(named)
            _fired(rule, paths, text, reasons, flags)
    return fired, reasons, flags


def _straight_valuation(
    line: StraightLine,
    rules: RuleSet,
    pack: CompiledPack,
    facts: tuple[Shipment | dict[str, Any], FactsReference | None],
    shown: tuple[str, str, bool],
    output: tuple[Any, ...],
    places: int,
    as_of: datetime.date,
    matcher: Matcher,
    tracing: bool,
    duties: DutyEstimator | None,
    duty_trace: Tracer | None,
) -> Valuation:
    """The valuation a straight line's `output` makes, its other fields deferred.

    `facts`: the `Shipment` valued, or the plain facts and the reference they were read
    against (a `Shipment` is made of them only if a deferred field is read); `shown`: the
    shipment's id, its currency and whether it declares duties."""
    excluded, values, matched, mark = output
    fired: list[tuple[CompiledRule, list[str]]]
    reasons: list[Reason]
    flags: list[Flag]
    if matched.count(None) == len(matched):  # most valuations: no rule fired
        fired, reasons, flags = [], [], []
    else:
        fired, reasons, flags = _rules_fired(line, values, matched)
    if duties is not None and duties.flags:
        flags = flags + duties.flags
    # The premium is made now too: impact and bordereaux read it from every result, and
    # reading a deferred field would render all the others (the trace included).
    premium = None if line.premium is None else values[line.premium]
    shipment_id, currency, declared = shown
    # The rest is made when first read, from values that no longer change: `values`
    # is a tuple, `excluded` is this valuation's own.
    deferred = partial(
        _straight_rest,
        pack,
        facts,
        places,
        rules.incoterms,
        excluded,
        values,
        mark,
        duty_trace,
        fired,
        reasons,
        tracing,
    )
    return deferred_valuation(
        deferred,
        {
            "shipment_id": shipment_id,
            "currency": currency,
            "currency_minor_units": places,
            "total_insured_value": money_text(values[line.total], places),
            "premium": None if premium is None else money_text(premium, places),
            "decision": _strongest(reasons) if reasons else "accept",
            "reasons": reasons,
            "flags": flags,
            "policy": pack.policy,
            "as_of": as_of,
            "engine_version": __version__,
            "matcher": matcher.name,
            "duties_basis": _duties_basis(declared, duties),
            "duty_estimate": None if duties is None else duties.result,
            "audit_id": None,
        },
    )


def _straight_rest(
    pack: CompiledPack,
    facts: tuple[Shipment | dict[str, Any], FactsReference | None],
    places: int,
    incoterms: Mapping[str, tuple[str, ...]],
    excluded: dict[int, CompiledRule] | None,
    values: tuple[Any, ...],
    mark: int,
    duty_trace: Tracer | None,
    fired: list[tuple[CompiledRule, list[str]]],
    reasons: list[Reason],
    tracing: bool,
) -> dict[str, Any]:
    """The deferred fields of a straight-line valuation."""
    given, reference = facts
    if isinstance(given, Shipment):
        shipment = given
    else:
        assert reference is not None
        shipment = read_facts(given, reference)
    line = straight_line(pack)  # the plain line's values are in the same slots
    assert line is not None
    plan = _plan(pack)
    spec = pack.result
    slots = line.slots
    figures = [None if name is None else values[slots[name]] for name in plan.figure_names]
    charges = shipment.charges
    lines = sorted(excluded.items()) if excluded else []
    recorded = (
        _straight_steps(
            pack,
            plan,
            line,
            shipment,
            (places, incoterms),
            excluded,
            values,
            mark,
            duty_trace,
            fired,
            reasons,
        )
        if tracing
        else None
    )
    components = [(name, values[slots[name]]) for name in spec.components]
    excluded_lines = [
        (
            index,
            charges[index].type,
            _charge_amount(charges[index], shipment.currency, shipment.fx),
            rule,
        )
        for index, rule in lines
    ]
    return _rest_fields(spec, places, components, figures, excluded_lines, recorded)


def _rest_fields(
    spec: ResultSpec,
    places: int,
    components: list[tuple[str, Any]],
    figures: list[Any],
    excluded: list[tuple[int, str, Decimal, CompiledRule]],
    recorded: list[Recorded] | None,
) -> dict[str, Any]:
    """A valuation's deferred fields (either path's) from what it computed: the figures'
    texts, the excluded charges (index, type, amount in the valuation currency, rule) and
    the trace, rendered only now that someone reads them."""
    with exact():
        texts = [None if v is None or v is GAP else money_text(v, places) for v in figures]
        return {
            "components": {name: money_text(v, places) for name, v in components},
            "premium": texts[0],
            "deductible": texts[1],
            "figures": dict(zip(spec.figures, texts[2:], strict=True)),
            "excluded_charges": [
                built(
                    ExcludedCharge,
                    index=index,
                    type=kind,
                    amount=money_text(amount, places),
                    reason=rule.reason,
                    rule=rule.id,
                    source=rule.source,
                )
                for index, kind, amount, rule in excluded
            ],
            "trace": [] if recorded is None else render_steps(recorded),
        }


def _strongest(reasons: Sequence[Reason]) -> str:
    """The decision: the strongest of the reasons' (decline over refer), else accept."""
    decision = "accept"
    for reason in reasons:
        if _STRENGTH[reason.decision] > _STRENGTH[decision]:
            decision = reason.decision
    return decision


def _decision_step(reasons: Sequence[Reason], decision: str, pack: CompiledPack) -> Recorded:
    """The trace step saying how the decision was reached."""
    how = ", ".join(f"{r.rule} → {r.decision}" for r in reasons) if reasons else "no rule fired"
    return ("decision", "decision", f"strongest of: {how}", {}, decision, pack.where.source)


def _duties_basis(declared: bool, duties: DutyEstimator | None) -> str:
    """Where the duties came from: estimated, declared in the facts (`declared`), or none."""
    if duties is not None and duties.result is not None:
        return "estimated"
    return "declared" if declared else "none"


Recorded = tuple[str, str, str, Mapping[str, Any], Any, str]


def _charge_amount(charge: Any, currency: str, fx: Mapping[str, Decimal]) -> Decimal:
    """A charge's amount in the valuation currency, as the environment converts it."""
    written = charge.currency
    if written is None or written == currency:
        amount: Decimal = charge.amount
        return amount
    with exact():
        converted: Decimal = charge.amount * fx[written]
    return converted


def _convert_step(path: str, amount: Decimal, currency: str, fx: Mapping[str, Decimal]) -> Recorded:
    """The step `environment.convert` records for an amount in another currency."""
    rate = fx[currency]
    with exact():
        value = amount * rate
    return convert_step(path, amount, currency, rate, value)


def _named_values(
    shipment: Shipment,
    plan: _Plan,
    setting: tuple[int, Mapping[str, tuple[str, ...]]],
    slots: Mapping[str, int],
    values: tuple[Any, ...],
) -> dict[str, Any]:
    """The names the interpreted path would hold once every formula ran: a table's keys
    may read any fact or formula. Made only to render a traced table row."""
    places, incoterms = setting
    env = build_environment(shipment, places, plan.charge_groups, _NO_TRACE, incoterms)
    named = dict(env.shipment)
    named.update((name, values[slot]) for name, slot in slots.items())
    return named


def _straight_steps(
    pack: CompiledPack,
    plan: _Plan,
    line: StraightLine,
    shipment: Shipment,
    setting: tuple[int, Mapping[str, tuple[str, ...]]],
    excluded: dict[int, CompiledRule] | None,
    values: tuple[Any, ...],
    mark: int,
    duty_trace: Tracer | None,
    fired: list[tuple[CompiledRule, list[str]]],
    reasons: list[Reason],
) -> list[Recorded]:
    """The steps the interpreted path records, from the straight line's values.

    Every value a step shows is a name assigned once, so it is read after the fact from
    the values the function returned; the texts and sources are the pack's own.
    """
    steps: list[Recorded] = []
    append = steps.append
    # Conversions first, in the order the environment traces them: the invoice, declared
    # duties, charges, then goods values.
    currency, fx, invoice = shipment.currency, shipment.fx, shipment.invoice
    if invoice.currency is not None and invoice.currency != currency:
        append(_convert_step("invoice.amount", invoice.amount, invoice.currency, fx))
    for index, duty in enumerate(shipment.duties or ()):
        if duty.currency is not None and duty.currency != currency:
            path = f"duties[{index}].amount"
            append(_convert_step(path, duty.amount, duty.currency, fx))
    for index, charge in enumerate(shipment.charges):
        if charge.currency is not None and charge.currency != currency:
            path = _CHARGE_PATHS[index] if index < len(_CHARGE_PATHS) else f"charges[{index}]"
            append(_convert_step(f"{path}.amount", charge.amount, charge.currency, fx))
    for index, item in enumerate(shipment.goods):
        if item.value is not None and item.currency is not None and item.currency != currency:
            path = _GOODS_PATHS[index] if index < len(_GOODS_PATHS) else f"goods[{index}]"
            append(_convert_step(f"{path}.value", item.value, item.currency, fx))
    counted = plan.counted
    sources = pack.charge_source_texts
    for index, charge in enumerate(shipment.charges):
        path = _CHARGE_PATHS[index] if index < len(_CHARGE_PATHS) else f"charges[{index}]"
        kind, amount = charge.type, _charge_amount(charge, currency, fx)
        rule = excluded.get(index) if excluded else None
        if rule is not None:
            append(
                (
                    "charge",
                    path,
                    f"excluded: {rule.reason}",
                    {"type": kind, "amount": amount},
                    _ZERO,
                    rule.source,
                )
            )
        else:
            append(
                (
                    "charge",
                    path,
                    counted[kind][2],
                    {"type": kind, "amount": amount},
                    amount,
                    sources[kind],
                )
            )
    slots = line.slots
    named: dict[str, Any] | None = None  # the interpreted path's names, made if a table needs them
    for position, (name, formula) in enumerate(pack.formulas):
        if position == mark and isinstance(duty_trace, RecordingTracer):
            steps.extend(duty_trace.recorded)
        inputs = {}
        for read in formula.names:
            found = values[slots[read]]
            if found is not MISSING and found is not GAP:
                inputs[read] = found
        append(("formula", name, formula.text, inputs, values[slots[name]], formula.source))
        for table in formula.tables:  # the row each lookup chose, as `_run_formulas` shows it
            if named is None:
                named = _named_values(shipment, plan, setting, slots, values)
            row = pack.tables[table].trace(named)
            if row is not None:
                append(("table", table, *row))
    for rule, paths in fired:
        append(
            (
                "rule",
                rule.id,
                rule.when,
                {"matched": ", ".join(paths)},
                rule.flag or rule.effect,
                rule.source,
            )
        )
    append(_decision_step(reasons, _strongest(reasons), pack))
    return steps


class _Plan:
    """What evaluating a pack needs that does not depend on the facts, made once per pack."""

    def __init__(self, pack: CompiledPack) -> None:
        self.by_id = {rule.id: rule for rule in pack.rules}
        # The rules of the decision phase, by their index in its plan (pack order).
        decision = pack.plans.get(DECISION_PHASE)
        self.decision_rules = tuple(
            self.by_id[rule_id] for rule_id in (decision.rule_ids if decision else ())
        )
        self.charge_groups: dict[str, str | None] = dict(pack.charge_types)
        groups = dict.fromkeys(group for group in pack.charge_types.values() if group)
        # The sums every valuation starts from, in the order the environment has them.
        self.sums = {
            f"charges.{name}": Decimal(0) for name in ["total", *groups, *pack.charge_types]
        }
        # charge type -> (its sum's name, its group's sum's name or None, counted-in text)
        self.counted = {
            kind: (
                f"charges.{kind}",
                f"charges.{group}" if group else None,
                f"counted in charges.{group if group else MISSING}",
            )
            for kind, group in pack.charge_types.items()
        }
        spec = pack.result
        self.figure_names = (spec.premium, spec.deductible, *spec.figures)
        self.needed = (spec.total_insured_value, *spec.components)
        self.parameters = dict(pack.parameters)


def _plan(pack: CompiledPack) -> _Plan:
    plan: _Plan | None = pack.__dict__.get("_evaluation_plan")
    if plan is None:
        started = time.monotonic_ns()
        plan = _Plan(pack)
        object.__setattr__(pack, "_evaluation_plan", plan)
        firstuse.made(started)
    return plan


def _evaluate(
    rules: RuleSet,
    pack: CompiledPack,
    shipment: Shipment,
    *,
    as_of: datetime.date,
    matcher: Matcher,
    tracer: Tracer,
    deadline: int | None = None,
) -> tuple[Valuation, dict[str, Any]]:
    """The valuation, and the environment it ended with (claims formulas continue from it)."""
    since = firstuse.spent_ns
    plan = _plan(pack)
    deadline = firstuse.credited(deadline, since)  # the plan, made on first use
    in_time(deadline, "read the facts", pack)
    with exact():
        places = rules.currencies[shipment.currency]
        env = build_environment(shipment, places, plan.charge_groups, tracer, rules.incoterms)
        # Country rules follow the shipment's own date: duties are owed on the import.
        country, union = rules.duty_rules_for(shipment.destination.country, shipment.date)
        duties = DutyEstimator(shipment, country, union, tracer)
        values = env.shipment
        values[DUTIES] = duties
        values[SHIPMENT_FX] = (shipment.fx, shipment.currency)
        values["duty_rules.available"] = country is not None  # DutyEstimator.available

        excluded = _charge_rules(pack, env, matcher, plan.by_id)
        _count_charges(pack, plan, env, excluded, tracer)
        in_time(deadline, "counted the charges", pack)
        values.update(plan.parameters)
        gaps = _run_formulas(pack.formulas, "formula", values, pack, tracer)
        in_time(deadline, "run the formulas and estimated the duties", pack)

        reasons, flags = _decide(pack, plan, env, matcher, tracer)
        in_time(deadline, "matched the rules", pack)
        if gaps:
            reasons = gaps + reasons
        if duties.flags:
            flags = flags + duties.flags
        decision = _strongest(reasons)
        if tracer.enabled:
            tracer.step(*_decision_step(reasons, decision, pack))

        spec = pack.result
        for name in plan.needed:
            if values[name] is GAP:
                raise EvaluationError(
                    Problem(
                        "table.gap",
                        f"`{name}` needs a rate the tables do not give: "
                        + "; ".join(r.reason for r in gaps),
                        pack.where,
                    )
                )
        _written_in_full((*plan.needed, *plan.figure_names), values, places, pack)
        total = money_text(values[spec.total_insured_value], places)
        # What the deferred fields are made of, taken now: `settle` goes on writing names
        # into `values`, and a figure must be the one this valuation computed.
        components = [(name, values[name]) for name in spec.components]
        figures = [None if name is None else values[name] for name in plan.figure_names]
        lines = [
            (index, shipment.charges[index].type, env.charges[index].env["charge.amount"], rule)
            for index, rule in sorted(excluded.items())
        ]
        recorded = tracer.recorded if isinstance(tracer, RecordingTracer) else None

        deferred = partial(_rest_fields, spec, places, components, figures, lines, recorded)

        # Every value here was computed from compiled, typed data: the model is not
        # re-validated, and what costs most to write out (the trace, the figures' texts)
        # is made only when someone reads it.
        valuation = Valuation.deferred(
            deferred,
            shipment_id=shipment.id,
            currency=shipment.currency,
            currency_minor_units=places,
            total_insured_value=total,
            decision=decision,
            reasons=reasons,
            flags=flags,
            policy=pack.policy,
            as_of=as_of,
            engine_version=__version__,
            matcher=matcher.name,
            duties_basis=_duties_basis(shipment.duties is not None, duties),
            duty_estimate=duties.result,
            audit_id=None,
        )
        return valuation, values


def settle(
    rules: RuleSet,
    pack: CompiledPack,
    shipment: Shipment,
    loss: Loss,
    *,
    as_of: datetime.date,
    matcher: Matcher,
    tracer: Tracer,
    deadline: int | None = None,
) -> Claim:
    """Value the shipment, then run the pack's claims formulas on the loss (within
    `deadline`, as `evaluate`)."""
    claims = pack.claims
    if claims is None:
        raise SelectionError(
            Problem(
                "claims.none",
                f"{pack.ref} has no claims section, so it cannot settle a claim",
                pack.where,
            )
        )
    since = firstuse.spent_ns
    valuation, values = _evaluate(
        rules, pack, shipment, as_of=as_of, matcher=matcher, tracer=NullTracer(), deadline=deadline
    )
    with exact():
        places = values[CURRENCY_PLACES]
        values.update(
            {
                "loss.kind": loss.kind,
                "loss.damage_percent": _given(loss.damage_percent),
                "loss.gross_sound_value": _given(loss.gross_sound_value),
                "loss.gross_damaged_value": _given(loss.gross_damaged_value),
            }
        )
        gaps = _run_formulas(claims.formulas, "claim", values, pack, tracer)
        in_time(firstuse.credited(deadline, since), "run the claims formulas", pack)
        names = [claims.result.indemnity, *claims.result.components]
        _written_in_full(names, values, places, pack)
        if gaps or any(values[name] is GAP for name in names):
            raise EvaluationError(
                Problem(
                    "table.gap",
                    "a claims formula needs a rate the tables do not give",
                    claims.where,
                )
            )
        return Claim(
            shipment_id=shipment.id,
            currency=shipment.currency,
            loss=LossIn(
                kind=loss.kind,
                **{
                    key: getattr(loss, key)
                    for key in ("damage_percent", "gross_sound_value", "gross_damaged_value")
                    if getattr(loss, key) is not None
                },
            ),
            indemnity=money_text(values[claims.result.indemnity], places),
            components={
                name: money_text(values[name], places) for name in claims.result.components
            },
            valuation=valuation,
            trace=tracer.rendered() if isinstance(tracer, RecordingTracer) else [],
        )


def _given(value: Decimal | None) -> Any:
    return MISSING if value is None else value


def _fire(
    pack: CompiledPack,
    phase: str,
    matcher: Matcher,
    shipment: dict[str, Any],
    subjects: Sequence[Subject],
) -> list[tuple[int, int]]:
    """(rule index in the phase plan, subject index) of every rule that holds."""
    plan = pack.plans[phase]
    if not plan.rule_ids or not subjects:
        return []
    try:
        return matcher.fire(plan, shipment, subjects)
    except (OverflowError, ConditionLimit) as exc:
        raise EvaluationError(Problem("condition.overflow", str(exc), pack.where)) from None


def _charge_rules(
    pack: CompiledPack, env: Environment, matcher: Matcher, rules: dict[str, CompiledRule]
) -> dict[int, CompiledRule]:
    """Charges left out (index -> the rule that explains it); rejected charges raise."""
    subjects = [("charge", line.id, line.env) for line in env.charges]
    rule_ids = pack.plans[CHARGE_PHASE].rule_ids
    excluded: dict[int, CompiledRule] = {}
    rejected: list[Problem] = []
    for rule_index, index in _fire(pack, CHARGE_PHASE, matcher, env.shipment, subjects):
        rule = rules[rule_ids[rule_index]]
        if rule.effect == "reject_charge":
            rejected.append(
                Problem(
                    "facts.rejected_charge",
                    f"{rule.reason} (rule {rule.id}, {rule.source})",
                    Location(path=f"charges[{index}]"),
                )
            )
        else:
            excluded.setdefault(index, rule)  # first rule in pack order explains it
    if rejected:
        raise FactsError(rejected)
    return excluded


def _count_charges(
    pack: CompiledPack,
    plan: _Plan,
    env: Environment,
    excluded: dict[int, CompiledRule],
    tracer: Tracer,
) -> None:
    sums = plan.sums.copy()
    counted = plan.counted
    tracing = tracer.enabled
    for index, line in enumerate(env.charges):
        charge = line.env
        amount = charge["charge.amount"]
        kind = charge["charge.type"]
        if excluded:
            rule = excluded.get(index)
            if rule is not None:
                if tracing:
                    tracer.step(
                        "charge",
                        line.path,
                        f"excluded: {rule.reason}",
                        {"type": kind, "amount": amount},
                        _ZERO,
                        rule.source,
                    )
                continue
        own, group, text = counted[kind]
        sums["charges.total"] += amount
        sums[own] += amount
        if group is not None:
            sums[group] += amount
        if tracing:
            tracer.step(
                "charge",
                line.path,
                text,
                {"type": kind, "amount": amount},
                amount,
                pack.charge_source_texts[kind],
            )
    env.shipment.update(sums)


_ZERO = Decimal(0)


def _run_formulas(
    formulas: tuple[tuple[str, Formula], ...],
    kind: str,
    values: dict[str, Any],
    pack: CompiledPack,
    tracer: Tracer,
) -> list[Reason]:
    """Run formulas top to bottom into `values`, tracing each; returns the gap referrals."""
    gaps: list[Reason] = []
    for name, formula in formulas:
        values[name] = _run_formula(name, formula, values, pack, gaps)
        if tracer.enabled:
            inputs = {}
            for n in formula.names:
                found = values.get(n, MISSING)
                if found is not MISSING and found is not GAP:
                    inputs[n] = found
            tracer.step(kind, name, formula.text, inputs, values[name], formula.source)
            for table in formula.tables:  # the row each lookup chose, at its file:line
                row = pack.tables[table].trace(values)
                if row is not None:
                    tracer.step("table", table, *row)
    return gaps


def _run_formula(
    name: str, formula: Any, values: dict[str, Any], pack: CompiledPack, gaps: list[Reason]
) -> Any:
    try:
        return formula.run(values)
    except GapValue:
        return GAP  # it reads a value a table could not give: a gap too
    except TableGap as gap:
        table = pack.tables[gap.table]
        keys = ", ".join(f"{column} = {show(value)}" for column, value in gap.keys.items())
        if table.table.on_gap == "error":
            raise EvaluationError(
                Problem(
                    "table.gap",
                    f"table `{gap.table}` has no row for {keys} (formula `{name}`)",
                    table.where,
                )
            ) from None
        gaps.append(
            built(
                Reason,
                decision="refer",
                rule=f"tables.{gap.table}",
                reason=f"{table.table.gap_reason} ({keys})",
                source=table.where.source,
                citation=None,
                subjects=["shipment"],
            )
        )
        return GAP
    except MissingRate as exc:
        currency = exc.currency
        raise EvaluationError(
            Problem(
                "fx.missing",
                f"formula `{name}` converts from {currency}; add fx.{currency} "
                f"(the value of one {currency} in {values['shipment.currency']}) to the "
                "shipment",
                formula.where,
            )
        ) from None
    except MissingValue as exc:
        raise EvaluationError(
            Problem(
                "formula.missing_fact",
                f"formula `{name}` reads `{exc.name}`, which this "
                f"shipment does not give; give it, or guard the formula with exists({exc.name})",
                formula.where,
            )
        ) from None
    except ZeroDivisionError:  # decimal's DivisionByZero and DivisionUndefined (0/0)
        raise _signal(
            "formula.division_by_zero",
            f"divided by zero: {formula.text}",
            name,
            formula,
            values,
            pack,
        ) from None
    except decimal.InvalidOperation as exc:
        # The C decimal module raises 0/0 as InvalidOperation naming DivisionUndefined.
        signals = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        if decimal.DivisionUndefined in signals:
            raise _signal(
                "formula.division_by_zero",
                f"divided zero by zero: {formula.text}",
                name,
                formula,
                values,
                pack,
            ) from None
        raise _signal(
            "formula.invalid",
            f"made an invalid operation (a result beyond 34 significant digits, or an "
            f"operation with no defined result): {formula.text}",
            name,
            formula,
            values,
            pack,
        ) from None
    except (decimal.Overflow, OverflowError):
        raise _signal(
            "formula.overflow", f"overflowed: {formula.text}", name, formula, values, pack
        ) from None
    except (ArithmeticError, ValueError) as exc:  # any other signal of a figure out of range
        raise _signal(
            "formula.invalid",
            f"could not compute ({type(exc).__name__}): {formula.text}",
            name,
            formula,
            values,
            pack,
        ) from None


def _signal(
    code: str, what: str, name: str, formula: Any, values: dict[str, Any], pack: CompiledPack
) -> EvaluationError:
    """A decimal signal in formula `name` as an EvaluationError at the formula's file:line
    and the JSON path of the first fact it reads (all of them in the message)."""
    paths = fact_paths(name, formula, values, pack)
    shown = ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")
    reads = f"; it reads the facts {shown}" if paths else ""
    text = formula.text if len(formula.text) <= 200 else formula.text[:196] + "..."
    message = f"formula `{name}` {what.replace(formula.text, text)}{reads}"
    return EvaluationError(Problem(code, message, formula.where.at(paths[0] if paths else "")))


def _written_in_full(
    names: Sequence[str | None], values: dict[str, Any], places: int, pack: CompiledPack
) -> None:
    """EvaluationError for a result figure too long to write with the currency's places
    within the context's 34 significant digits (quantizing it would raise InvalidOperation
    far from its formula): at its formula's file:line, with the facts it reads."""
    for name in names:
        figure = values.get(name) if name is not None else None
        if type(figure) is not Decimal or not figure or figure.adjusted() + 1 + places <= PRECISION:
            continue
        formulas = dict(pack.formulas)
        if pack.claims is not None:
            formulas.update(pack.claims.formulas)
        formula = formulas.get(name)  # type: ignore[arg-type]
        what = (
            f"gives a figure of {figure.adjusted() + 1} digits before the decimal point: "
            f"more than a result may have ({PRECISION} significant digits, {places} of them "
            "after the point)"
        )
        if formula is None:
            raise EvaluationError(Problem("formula.too_large", f"`{name}` {what}", pack.where))
        raise _signal("formula.too_large", what, str(name), formula, values, pack)


# Names of the environment that stand for a fact somewhere else than `shipment.<path>`.
_SHIPMENT_NAMES = {
    "invoice_includes": "incoterm",
    "goods.count": "goods",
    "goods.main_category": "goods",
    "charges.count": "charges",
}


def fact_paths(name: str, formula: Any, values: dict[str, Any], pack: CompiledPack) -> list[str]:
    """The JSON paths of the facts formula `name` reads: directly (`shipment.invoice.amount`
    is `invoice.amount`, `charges.freight` each freight charge's amount, `loss.*` the
    loss, estimate_duties the goods' values), and through the pack's formulas it names.

    For messages, on the error path only: it walks the pack's formulas each time.
    """
    shipment: Shipment | None = getattr(values.get(DUTIES), "shipment", None)
    formulas: dict[str, Any] = dict(pack.formulas)
    if pack.claims is not None:
        formulas.update(pack.claims.formulas)
    formulas[name] = formula
    groups = pack.charge_types
    paths: dict[str, None] = {}
    seen: set[str] = set()
    todo = [name]
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        head, _, rest = name.partition(".")
        if name in formulas:
            todo.extend(formulas[name].names)
            if "estimate_duties" in formulas[name].text and shipment is not None:
                paths.update(dict.fromkeys(f"goods[{i}].value" for i in range(len(shipment.goods))))
        elif head == "shipment":
            paths[_SHIPMENT_NAMES.get(rest, rest)] = None
            if rest == "invoice.amount" and shipment is not None:
                currency = shipment.invoice.currency
                if currency and currency != shipment.currency:
                    paths[f"fx.{currency}"] = None
        elif head == "charges" and shipment is not None:
            for index, charge in enumerate(shipment.charges):
                if rest in ("total", charge.type) or groups.get(charge.type) == rest:
                    paths[f"charges[{index}].amount"] = None
        elif head == "declared_duties" and shipment is not None:
            for index, duty in enumerate(shipment.duties or ()):
                if rest in ("total", duty.type):
                    paths[f"duties[{index}].amount"] = None
        elif head == "loss":
            paths[name] = None
    return list(paths)


def _decide(
    pack: CompiledPack, plan: _Plan, env: Environment, matcher: Matcher, tracer: Tracer
) -> tuple[list[Reason], list[Flag]]:
    if not plan.decision_rules:
        return [], []
    shipment = env.shipment
    lines: list[Subject] = [("shipment", "shipment", shipment)]
    paths = ["shipment"]
    for line in env.charges:
        lines.append(("charge", line.id, line.env))
        paths.append(line.path)
    for line in env.goods:
        lines.append(("goods", line.id, line.env))
        paths.append(line.path)
    subjects: dict[int, list[str]] = {}
    for rule_index, index in _fire(pack, DECISION_PHASE, matcher, shipment, lines):
        found = subjects.get(rule_index)
        if found is None:
            subjects[rule_index] = [paths[index]]
        else:
            found.append(paths[index])
    reasons: list[Reason] = []
    flags: list[Flag] = []
    if not subjects:
        return reasons, flags
    rules = plan.decision_rules
    for rule_index in sorted(subjects):  # pack order, whatever order the matcher fired in
        rule = rules[rule_index]
        matched = subjects[rule_index]
        if tracer.enabled:
            tracer.step(
                "rule",
                rule.id,
                rule.when,
                {"matched": ", ".join(matched)},
                rule.flag or rule.effect,
                rule.source,
            )
        _fired(rule, matched, rule.reason_in(shipment), reasons, flags)
    return reasons, flags


def _fired(
    rule: CompiledRule, matched: list[str], reason: str, reasons: list[Reason], flags: list[Flag]
) -> None:
    """What a decision rule that held adds to the result: a flag, or a reason (`reason`:
    the rule's own, with this valuation's figures written in)."""
    if rule.effect == "flag":
        flags.append(
            built(
                Flag,
                name=rule.flag or rule.id,
                rule=rule.id,
                reason=reason,
                source=rule.source,
                citation=rule.citation,
                subjects=matched,
            )
        )
    else:
        reasons.append(
            built(
                Reason,
                decision=rule.effect,
                rule=rule.id,
                reason=reason,
                source=rule.source,
                citation=rule.citation,
                subjects=matched,
            )
        )
