"""The JSON condition grammar the JSON backends share, its contract and its limits.

In: a `MatchRuleset` (rule ids with conditions in durable_rules' JSON condition format,
emitted by the condition compiler) and, for `check_facts`, flat match facts. Out: a
`PreparedRuleset` (parsed, checked), or ValueError/TypeError naming the rule.

The durable_rules backend (`matching.durable_rules`) and the production Python matcher
(`matching.production`) run this JSON and must agree on every input, errors included: so
everything both must reject is decided here. The compiler calls `prepare` at load, so a
condition past any limit is a load error with the rule's `file:line:col`; `check_facts`
is for facts that do not come from the compiler's own encoder (tests, ad-hoc rulesets).

The contract, beyond the grammar (see `parse_condition`):
- a comparison involving a field absent from the fact is false, `$neq` included;
- a compared field keeps one type across the facts of one call, the type of the literals
  it is compared with (durable_rules silently coerces "1" to 1 and true to 1);
- values are str, bool, int with |x| < 2**53, or lists of str or int; never floats;
- ordering (`$lt` ...) applies to int or str; such strings must not contain a space, `!`,
  `"`, a backslash or a control character, which durable_rules orders wrongly;
- the limits below keep durable_rules inside the envelope in which it was measured to be
  correct (beyond it, it fails, crashes or hangs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# --- Limits. Each is below a durable_rules 2.0.28 limit measured on this machine. ---
INT_BOUND = 2**53  # ints beyond would be rounded by a JSON double somewhere; keep them exact
MAX_STRING_CHARS = 10_000  # durable stores a string's byte length in 16 bits; escaping x6
MAX_FACT_FIELDS = 200  # durable rejects a fact with more than ~252 properties
MAX_ALTERNATIVES = 256  # per rule, after distributing $and over $or (see `alternatives`)
MAX_CONJUNCTION = 24  # comparisons per alternative: a chain of 24 alpha nodes in durable
MAX_FIELD_NAME = 64

FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
RESERVED_FIELDS = frozenset({"sid"})  # durable_rules' session id, set by the backend

ORDERING_OPS = {"$lt": "lt", "$lte": "lte", "$gt": "gt", "$gte": "gte"}
COMPARE_OPS = {"$neq": "neq", **ORDERING_OPS}

Literal = str | int | bool


@dataclass(frozen=True)
class MatchRuleset:
    name: str  # unique, already contains pack, version and a content hash
    rules: tuple[tuple[str, Mapping[str, Any]], ...]  # (rule_id, condition) in pack order


@dataclass(frozen=True)
class Firing:
    rule_id: str
    fact_id: str


# --- Parsed conditions ---


@dataclass(frozen=True)
class Compare:
    """`field op value`, or `field op other` (a field of the same fact) when `other` is set."""

    op: str  # eq, neq, lt, lte, gt, gte
    field: str
    value: Literal | None = None
    other: str | None = None


@dataclass(frozen=True)
class AnyEquals:
    """Some element of the list `field` equals one of `values`."""

    field: str
    values: tuple[str | int, ...]


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]


Condition = Compare | AnyEquals | AllOf | AnyOf
Leaf = Compare | AnyEquals  # in `alternatives`, an AnyEquals has exactly one value


def type_tag(value: Any) -> str:
    """The type the contract knows a value by: bool, int, str or list."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _check_int(value: int, where: str) -> None:
    if not -INT_BOUND < value < INT_BOUND:
        raise ValueError(
            f"{where}: integer {value} is outside ±2**53; the encoder must keep such "
            "numbers as decimal strings"
        )


def _check_str(value: str, where: str) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise ValueError(f"{where}: string of {len(value)} characters exceeds {MAX_STRING_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{where}: string is not valid Unicode text ({error.reason})") from None


def orderable(text: str) -> bool:
    """True if durable_rules orders `text` as Python does.

    It compares the raw JSON text, escapes included, and reads one byte past the end of
    the shorter string, where it finds the closing quote: so `"`, `\\`, control characters,
    and a space or `!` following a common prefix, all order wrongly there.
    """
    return all(ord(ch) > 0x22 and ch != "\\" for ch in text)


def _check_literal(value: Any, where: str, allow_bool: bool = True) -> Literal:
    if isinstance(value, float):
        raise TypeError(f"{where}: float literal {value!r}; money must never pass through a float")
    if isinstance(value, bool):
        if not allow_bool:
            raise TypeError(f"{where}: boolean literal where a str or int is required")
        return value
    if isinstance(value, int):
        _check_int(value, where)
        return value
    if isinstance(value, str):
        _check_str(value, where)
        return value
    raise TypeError(f"{where}: literal {value!r} is a {type(value).__name__}; use str, int or bool")


def _check_field(name: Any, where: str) -> str:
    if not isinstance(name, str) or not FIELD_NAME.fullmatch(name) or len(name) > MAX_FIELD_NAME:
        raise ValueError(
            f"{where}: field name {name!r} must match {FIELD_NAME.pattern} "
            f"(at most {MAX_FIELD_NAME} characters)"
        )
    if name in RESERVED_FIELDS:
        raise ValueError(f"{where}: field name {name!r} is reserved by durable_rules")
    return name


def _single(raw: Any, where: str) -> tuple[str, Any]:
    # durable_rules reads only the first key of an object: a second one would be ignored.
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ValueError(f"{where}: expected an object with exactly one key, got {raw!r}")
    ((key, value),) = raw.items()
    if not isinstance(key, str):
        raise ValueError(f"{where}: key {key!r} is not a string")
    return key, value


def parse_condition(raw: Any, where: str = "condition") -> Condition:
    """Parse one condition of the grammar; ValueError (or TypeError) on anything else.

    Grammar: {"$and"|"$or": [c, ...]}; {field: literal}; {field: {"$m": other}};
    {"$neq"|"$lt"|"$lte"|"$gt"|"$gte": {field: literal | {"$m": other}}};
    {"$iany": {field: {"$i": lit}}}; {"$iany": {field: {"$or": [{"$i": lit}, ...]}}}.
    No `$ex`/`$nex`: a rule on `$nex` alone hangs durable_rules when the field is absent
    (measured: killed after 20 s). Presence is an explicit boolean field instead.
    """
    key, value = _single(raw, where)
    if key in ("$and", "$or"):
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{where}: {key} needs a non-empty list of conditions")
        parts = tuple(
            parse_condition(part, f"{where}.{key}[{index}]") for index, part in enumerate(value)
        )
        return AllOf(parts) if key == "$and" else AnyOf(parts)
    if key in COMPARE_OPS:
        field, operand = _single(value, f"{where}.{key}")
        return _comparison(COMPARE_OPS[key], field, operand, f"{where}.{key}")
    if key == "$iany":
        field, operand = _single(value, f"{where}.$iany")
        field = _check_field(field, f"{where}.$iany")
        inner, inner_value = _single(operand, f"{where}.$iany.{field}")
        options: Sequence[Any]
        if inner == "$i":
            options = [operand]
        elif inner == "$or" and isinstance(inner_value, list | tuple) and inner_value:
            options = inner_value
        else:
            raise ValueError(
                f"{where}.$iany.{field}: expected {{'$i': literal}} or "
                "{'$or': [{'$i': literal}, ...]}"
            )
        values: list[str | int] = []
        for index, option in enumerate(options):
            there = f"{where}.$iany.{field}[{index}]"
            name, literal = _single(option, there)
            if name != "$i":
                raise ValueError(f"{there}: expected {{'$i': literal}}, got key {name!r}")
            checked = _check_literal(literal, there, allow_bool=False)
            if checked not in values:
                values.append(checked)
        return AnyEquals(field, tuple(values))
    if key.startswith("$"):
        raise ValueError(f"{where}: operator {key!r} is not in the matcher grammar")
    return _comparison("eq", key, value, where)


def _comparison(op: str, field: Any, operand: Any, where: str) -> Compare:
    field = _check_field(field, where)
    if isinstance(operand, Mapping):
        name, other = _single(operand, f"{where}.{field}")
        if name != "$m":
            raise ValueError(
                f"{where}.{field}: expected a literal or {{'$m': field}}, got {name!r}"
            )
        return Compare(op, field, other=_check_field(other, f"{where}.{field}.$m"))
    ordering = op in ORDERING_OPS.values()
    literal = _check_literal(operand, f"{where}.{field}", allow_bool=not ordering)
    if ordering and isinstance(literal, str) and not orderable(literal):
        raise ValueError(
            f"{where}.{field}: {literal!r} cannot be ordered reliably; ordered strings must not "
            "contain spaces, '!', quotes, backslashes or control characters"
        )
    return Compare(op, field, value=literal)


def alternative_count(cond: Condition) -> int:
    """How many alternatives `alternatives` would produce, without producing them."""
    if isinstance(cond, Compare):
        return 1
    if isinstance(cond, AnyEquals):
        return len(cond.values)
    counts = [alternative_count(part) for part in cond.parts]
    if isinstance(cond, AnyOf):
        return sum(counts)
    product = 1
    for count in counts:
        product *= count
        if product > MAX_ALTERNATIVES:
            return product  # enough to reject; the exact product could be astronomical
    return product


def alternatives(cond: Condition) -> tuple[tuple[Leaf, ...], ...]:
    """The condition as an `$or` of `$and`s of leaves (disjunctive normal form).

    Sound because the grammar has no negation: a leaf's truth is fixed by the fact alone.
    An `$iany` over several literals becomes one alternative per literal. Repeated leaves
    within an alternative and repeated alternatives are dropped, keeping first positions.
    """
    if isinstance(cond, Compare):
        return ((cond,),)
    if isinstance(cond, AnyEquals):
        return tuple((AnyEquals(cond.field, (value,)),) for value in cond.values)
    if isinstance(cond, AnyOf):
        return _unique(alt for part in cond.parts for alt in alternatives(part))
    result: tuple[tuple[Leaf, ...], ...] = ((),)
    for part in cond.parts:
        result = _unique(
            tuple(dict.fromkeys(left + right)) for left in result for right in alternatives(part)
        )
    return result


def _unique(alts: Iterable[tuple[Leaf, ...]]) -> tuple[tuple[Leaf, ...], ...]:
    return tuple(dict.fromkeys(alts))


def _leaves(cond: Condition) -> Iterator[Leaf]:
    if isinstance(cond, Compare | AnyEquals):
        yield cond
    else:
        for part in cond.parts:
            yield from _leaves(part)


# --- Prepared rulesets ---


@dataclass(frozen=True)
class PreparedRuleset:
    """A checked ruleset: parsed conditions, their alternatives, and how fields are used."""

    name: str
    rule_ids: tuple[str, ...]
    conditions: tuple[Condition, ...]
    alternatives: tuple[tuple[tuple[Leaf, ...], ...], ...]  # per rule
    literal_types: Mapping[str, str]  # field -> type of the literals it is compared with
    list_element_types: Mapping[str, str]  # $iany field -> type of its literals
    field_pairs: frozenset[tuple[str, str]]  # fields compared with each other
    ordered_fields: frozenset[str]  # fields under $lt/$lte/$gt/$gte
    fields: frozenset[str]  # every field a condition reads
    fingerprint: str


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):  # an immutable mapping from the compiler, say
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _fingerprint(rules: Any) -> str | None:
    """Canonical JSON of the rules: tells true from 1, unlike ==."""
    try:
        return json.dumps(
            [[rule_id, cond] for rule_id, cond in rules],
            sort_keys=True,
            separators=(",", ":"),
            default=_json_default,
        )
    except (TypeError, ValueError):
        return None  # not JSON at all: `_prepare` will say what is wrong


def _prepare(ruleset: MatchRuleset, fingerprint: str) -> PreparedRuleset:
    if not isinstance(ruleset.name, str) or not ruleset.name:
        raise ValueError(f"ruleset name {ruleset.name!r} must be a non-empty string")
    rule_ids: list[str] = []
    conditions: list[Condition] = []
    alts: list[tuple[tuple[Leaf, ...], ...]] = []
    literal_types: dict[str, str] = {}
    list_types: dict[str, str] = {}
    pairs: set[tuple[str, str]] = set()
    ordered: set[str] = set()
    for rule_id, raw in ruleset.rules:
        where = f"ruleset {ruleset.name}: rule {rule_id}"
        if not isinstance(rule_id, str) or not rule_id:
            raise ValueError(f"{where}: rule id must be a non-empty string")
        if rule_id in rule_ids:
            raise ValueError(f"{where}: rule id appears twice")
        cond = parse_condition(raw, where)
        count = alternative_count(cond)
        if count > MAX_ALTERNATIVES:
            raise ValueError(
                f"{where}: condition expands to more than {MAX_ALTERNATIVES} alternatives "
                "($and over $or multiplies them); split the rule"
            )
        rule_alts = alternatives(cond)
        longest = max(len(alt) for alt in rule_alts)
        if longest > MAX_CONJUNCTION:
            raise ValueError(
                f"{where}: an alternative of the condition has {longest} comparisons, more than "
                f"{MAX_CONJUNCTION}; split the rule"
            )
        for leaf in _leaves(cond):
            _record_use(leaf, literal_types, list_types, pairs, ordered, where)
        rule_ids.append(rule_id)
        conditions.append(cond)
        alts.append(rule_alts)
    scalar = set(literal_types) | {name for pair in pairs for name in pair}
    both = scalar & set(list_types)
    if both:
        raise TypeError(
            f"ruleset {ruleset.name}: field {sorted(both)[0]!r} is compared as a scalar and "
            "searched with $iany as a list"
        )
    return PreparedRuleset(
        name=ruleset.name,
        rule_ids=tuple(rule_ids),
        conditions=tuple(conditions),
        alternatives=tuple(alts),
        literal_types=literal_types,
        list_element_types=list_types,
        field_pairs=frozenset(pairs),
        ordered_fields=frozenset(ordered),
        fields=frozenset(scalar | set(list_types)),
        fingerprint=fingerprint,
    )


def _record_use(
    leaf: Leaf,
    literal_types: dict[str, str],
    list_types: dict[str, str],
    pairs: set[tuple[str, str]],
    ordered: set[str],
    where: str,
) -> None:
    if isinstance(leaf, AnyEquals):
        for value in leaf.values:
            _agree(list_types, leaf.field, type_tag(value), where, "$iany literals")
        return
    if leaf.op in ORDERING_OPS.values():
        ordered.add(leaf.field)
    if leaf.other is not None:
        pairs.add((leaf.field, leaf.other))
        if leaf.op in ORDERING_OPS.values():
            ordered.add(leaf.other)
    else:
        _agree(literal_types, leaf.field, type_tag(leaf.value), where, "literals")


def _agree(types: dict[str, str], field: str, tag: str, where: str, what: str) -> None:
    known = types.setdefault(field, tag)
    if known != tag:
        raise TypeError(f"{where}: field {field!r} is compared with {known} and {tag} {what}")


def prepare(ruleset: MatchRuleset) -> PreparedRuleset:
    """Parse and check `ruleset`: ValueError or TypeError naming the rule on anything refused.

    Pure: the compiler calls it once per phase at load and keeps the result in the pack,
    so no backend prepares (or caches) anything per call.
    """
    fingerprint = _fingerprint(ruleset.rules)
    if fingerprint is None:
        # Not JSON-serialisable: parsing names the offending value.
        _prepare(ruleset, "")
        raise TypeError(f"ruleset {ruleset.name}: rules are not JSON data")
    prepared = _prepare(ruleset, fingerprint)
    _check_hashes(set(prepared.fields) | RESERVED_FIELDS | {"id", "kind"})
    return prepared


# --- Facts ---


def property_hash(name: str) -> int:
    """durable_rules' 32-bit FNV-1a hash of a property name, by which it finds properties."""
    value = 0x811C9DC5
    for byte in name.encode("utf-8"):
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def check_facts(
    prepared: PreparedRuleset, facts: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Check `facts` against the contract and `prepared`; return plain-dict copies."""
    checked: list[dict[str, Any]] = []
    ids: set[str] = set()
    names: set[str] = set(prepared.fields) | RESERVED_FIELDS
    observed: dict[str, tuple[str, str]] = {}  # field -> (type, id of the fact showing it)
    elements: dict[str, tuple[str, str]] = {}  # list field -> (element type, fact id)
    for index, fact in enumerate(facts):
        where = f"fact [{index}]"
        if not isinstance(fact, Mapping):
            raise TypeError(f"{where}: a fact must be a mapping, got {type(fact).__name__}")
        fact_id = fact.get("id")
        if not isinstance(fact_id, str) or not fact_id:
            raise ValueError(f"{where}: 'id' must be a non-empty string")
        where = f"fact {fact_id!r}"
        _check_str(fact_id, f"{where}.id")
        if fact_id in ids:
            raise ValueError(f"{where}: two facts share this id; ids must be unique")
        ids.add(fact_id)
        if not isinstance(fact.get("kind"), str):
            raise ValueError(f"{where}: 'kind' must be a string")
        if len(fact) > MAX_FACT_FIELDS:
            raise ValueError(f"{where}: {len(fact)} fields exceed the limit of {MAX_FACT_FIELDS}")
        copy: dict[str, Any] = {}
        for field, value in fact.items():
            _check_field(field, where)
            there = f"{where}.{field}"
            tag = _check_value(value, there)
            names.add(field)
            if tag == "list":
                value = list(value)
                if field in prepared.fields and value:
                    _observe(elements, field, type_tag(value[0]), fact_id, "list elements")
            if field in prepared.fields:
                _observe(observed, field, tag, fact_id, "values")
                if field in prepared.ordered_fields and tag == "str" and not orderable(value):
                    raise ValueError(
                        f"{there}: {value!r} is compared by order but cannot be ordered "
                        "reliably (spaces, '!', quotes, backslashes, control characters)"
                    )
            copy[field] = value
        checked.append(copy)
    _check_uses(prepared, observed, elements)
    _check_hashes(names)
    return checked


def _check_value(value: Any, where: str) -> str:
    tag = type_tag(value)
    if tag == "float":
        raise TypeError(f"{where}: float {value!r}; money must never pass through a float")
    if tag == "int":
        _check_int(value, where)
    elif tag == "str":
        _check_str(value, where)
    elif tag == "list":
        element_tags = {_check_element(item, where) for item in value}
        if len(element_tags) > 1:
            raise TypeError(f"{where}: list mixes {' and '.join(sorted(element_tags))} elements")
    elif tag != "bool":
        raise TypeError(f"{where}: value of type {tag}; use str, bool, int or a list of str/int")
    return tag


def _check_element(item: Any, where: str) -> str:
    tag = type_tag(item)
    if tag == "float":
        raise TypeError(f"{where}: float element {item!r}; money must never pass through a float")
    if tag == "int":
        _check_int(item, where)
    elif tag == "str":
        _check_str(item, where)
    else:
        raise TypeError(f"{where}: list element of type {tag}; lists hold str or int")
    return tag


def _observe(
    seen: dict[str, tuple[str, str]], field: str, tag: str, fact_id: str, what: str
) -> None:
    known = seen.setdefault(field, (tag, fact_id))
    if known[0] != tag:
        raise TypeError(
            f"field {field!r} has {known[0]} {what} in fact {known[1]!r} and {tag} in fact "
            f"{fact_id!r}; a field used by conditions keeps one type"
        )


def _check_uses(
    prepared: PreparedRuleset,
    observed: Mapping[str, tuple[str, str]],
    elements: Mapping[str, tuple[str, str]],
) -> None:
    where = f"ruleset {prepared.name}"
    for field, literal_tag in prepared.literal_types.items():
        if field in observed and observed[field][0] != literal_tag:
            tag, fact_id = observed[field]
            raise TypeError(
                f"{where}: field {field!r} is compared with {literal_tag} literals but is "
                f"{tag} in fact {fact_id!r}"
            )
    for field, element_tag in prepared.list_element_types.items():
        if field in observed and observed[field][0] != "list":
            tag, fact_id = observed[field]
            raise TypeError(
                f"{where}: $iany needs a list but {field!r} is {tag} in fact {fact_id!r}"
            )
        if field in elements and elements[field][0] != element_tag:
            tag, fact_id = elements[field]
            raise TypeError(
                f"{where}: $iany looks for {element_tag} in {field!r} but fact {fact_id!r} "
                f"holds {tag} elements"
            )
    for left, right in prepared.field_pairs:
        tags = {observed[name][0] for name in (left, right) if name in observed}
        if "list" in tags:
            raise TypeError(f"{where}: fields {left!r} and {right!r} are compared but hold lists")
        if len(tags) > 1:
            raise TypeError(
                f"{where}: fields {left!r} and {right!r} are compared but hold "
                f"{' and '.join(sorted(tags))}"
            )
    for field in prepared.ordered_fields:
        if field in observed and observed[field][0] not in ("int", "str"):
            tag, fact_id = observed[field]
            raise TypeError(
                f"{where}: field {field!r} is compared by order but is {tag} in fact {fact_id!r}"
            )


def _check_hashes(names: set[str]) -> None:
    # durable_rules finds a property by its 32-bit hash alone: two names with one hash
    # would read each other's values. Astronomically rare, cheap to rule out.
    by_hash: dict[int, str] = {}
    for name in sorted(names):
        other = by_hash.setdefault(property_hash(name), name)
        if other != name:
            raise ValueError(
                f"field names {other!r} and {name!r} have the same durable_rules property hash; "
                "rename one"
            )
