"""What a compiled pack hands the matchers: one `PhasePlan` per rule phase.

In: built once at load by `engine.compiling.conditions` and `engine.compiling.pack`. Out:
for the compiled matcher, each rule's condition as a closure over the typed environment;
for the JSON backends (durable_rules, production), the same conditions as checked JSON
(`PreparedRuleset`) and the `FieldSpec`s that encode environment values into match facts.

A subject is what one rule is tested on: the shipment, a charge line or a goods line, as
`(scope, fact id, environment)`. The shipment's environment is the shipment's own; a
line's holds its `charge.*` or `goods.*` names only, the shipment's are read beside it.

Exactness: durable_rules parses fact JSON with a float parser, so a number is never
handed over as a decimal. A number compared at scale S (the literal's decimal places)
is encoded as the integer 2*floor(x*10^S) + (1 if x*10^S is not whole), and the
literal c as 2*c*10^S. Both sides are then integers and every comparison (<, <=, ==,
!=, >=, >) gives the same answer as on the exact decimals: a non-whole x sits strictly
between two even numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.compiling.formulas import GAP, MISSING
from engine.matching.grammar import (
    MAX_STRING_CHARS,
    MatchRuleset,
    PreparedRuleset,
    orderable,
)

Env = Mapping[str, Any]
# (shipment environment, subject environment) -> whether the condition holds
Test = Callable[[Env, Env], bool]
Subject = tuple[str, str, Env]  # (scope, fact id, environment)

# durable_rules compares integers exactly up to this magnitude; past it we refuse.
MAX_EXACT = 2**53


class ConditionLimit(ValueError):
    """A fact's value is outside what durable_rules compares correctly (see encode_subjects)."""


@dataclass(frozen=True)
class FieldSpec:
    """How one value becomes one field of a match fact."""

    key: str  # field name in the fact, e.g. "shipment__destination__country"
    name: str  # dotted name in the environment (for a computed field, the key)
    encoding: str  # "text", "bool", "date", "number", "list", "present"
    scale: int = 0
    # For a value computed from an expression in a `when` (arithmetic, a function):
    # env -> value, MISSING when it reads an absent value.
    compute: Callable[[Env], Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PhasePlan:
    """The rules of one phase (charges or decision), in pack order, ready for any backend."""

    phase: str
    rule_ids: tuple[str, ...]
    scopes: tuple[str, ...]  # per rule: "shipment", "charge" or "goods"
    tests: tuple[Test, ...]  # per rule, for the compiled matcher
    ruleset: MatchRuleset  # per rule its JSON condition, for the JSON backends
    prepared: PreparedRuleset  # checked at load: grammar, limits, types, hashes
    fields: tuple[FieldSpec, ...]  # every field the JSON conditions read
    ordered_text: frozenset[str]  # text fields compared by order (durable must order them)
    text_keys: tuple[str, ...] = ()  # fields holding text: their length is checked per fact
    # scope -> the fields its rules read; a subject of a scope no rule has is not encoded
    scope_fields: Mapping[str, tuple[FieldSpec, ...]] = field(default_factory=dict)
    # What a backend prepares once per plan (durable_rules' registration): lives with the
    # plan, not in a global cache. Written under the backend's own lock.
    prepared_by_backend: dict[str, Any] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )


def encode_number(value: Decimal, scale: int) -> int:
    scaled = value.scaleb(scale)
    whole = int(scaled.to_integral_value(rounding="ROUND_FLOOR"))
    encoded = 2 * whole + (0 if scaled == whole else 1)
    if abs(encoded) >= MAX_EXACT:
        raise OverflowError(f"{value} is too large to compare exactly in a rule condition")
    return encoded


def scale_of(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def encode_item(item: Any) -> Any:
    if isinstance(item, Decimal):
        # list members are matched for equality only; whole numbers stay numbers
        return int(item) if item == item.to_integral_value() else str(item)
    return item


def encode_fact(env: Env, fields: tuple[FieldSpec, ...]) -> dict[str, Any]:
    """The JSON-safe fact a condition is matched against (without `id` and `kind`).

    Absent values (and table gaps) are left out: every comparison with them is false.
    """
    fact: dict[str, Any] = {}
    for spec in fields:
        compute = spec.compute
        value = env.get(spec.name, MISSING) if compute is None else compute(env)
        if spec.encoding == "present":
            fact[spec.key] = value is not MISSING
            continue
        if value is MISSING or value is GAP:
            continue
        if spec.encoding == "number":
            fact[spec.key] = encode_number(value, spec.scale)
        elif spec.encoding == "date":
            fact[spec.key] = value.isoformat()
        elif spec.encoding == "list":
            fact[spec.key] = [encode_item(item) for item in value]
        else:
            fact[spec.key] = value
    return fact


def encode_subjects(
    plan: PhasePlan, shipment: Env, subjects: Sequence[Subject]
) -> tuple[list[dict[str, Any]], list[int]]:
    """The match facts of `subjects`, and the subject index of each.

    Only subjects of a scope some rule has become facts, each with the fields the rules
    of its scope read (a fact of another kind can match no rule: every condition tests
    `kind`). Field names, types and hashes are fixed by the compiler; what depends on
    the facts' values is checked here: numbers within ±2**53 (in `encode_number`), text
    length, and text compared by order that durable_rules can order.
    """
    scope_fields = plan.scope_fields
    text_keys = plan.text_keys
    ordered = plan.ordered_text
    facts: list[dict[str, Any]] = []
    positions: list[int] = []
    for position, (scope, fact_id, env) in enumerate(subjects):
        fields = scope_fields.get(scope)
        if fields is None:
            continue
        merged = env if env is shipment else {**shipment, **env}
        fact = {"id": fact_id, "kind": scope, **encode_fact(merged, fields)}
        if len(fact_id) > MAX_STRING_CHARS:
            raise ConditionLimit(f"a fact id of {len(fact_id)} characters is too long")
        for key in text_keys:
            value = fact.get(key)
            if value is None:
                continue
            if len(value) > MAX_STRING_CHARS:
                raise ConditionLimit(
                    f"a text of {len(value)} characters is too long to compare in a rule "
                    f"condition (at most {MAX_STRING_CHARS})"
                )
            if key in ordered and not orderable(value):
                raise ConditionLimit(
                    f"{value!r} is compared by order in a rule condition but cannot be "
                    "ordered reliably (spaces, '!', quotes, backslashes, control characters)"
                )
        facts.append(fact)
        positions.append(position)
    return facts, positions
