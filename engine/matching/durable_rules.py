"""The durable_rules matcher: conditions run in durable_rules' Rete network.

In: a `PhasePlan` (prepared and checked at load) and the subjects, encoded into match
facts; or, through `match`, any `MatchRuleset` and facts, checked by
`grammar.prepare`/`check_facts`. Out: the firings, rule order then fact order, whatever
order durable_rules fired in. This is the only module in the project that imports
`durable`.

How it drives durable_rules: each rule's condition is split into its alternatives
(`matcher.alternatives`: an `$or` of `$and`s of comparisons) and each alternative becomes
one durable rule; the rules are packed, in order, into as many durable rulesets
("chunks") as the node budget below requires, and registered once per plan (the
registration lives in the plan). Each call asserts the facts one by one into a fresh
session per chunk (a sentinel only if none matched), reads the firings from the engine's
action queue, and deletes the session.

durable-rules 2.0.28 on CPython 3.11, as measured here, and what this module does about it:
- It does not import on Python 3.13+ (`PyEval_CallObject` was removed): the import is
  guarded, `AVAILABLE` says whether it worked, `matcher.default_matcher` falls back.
- `Host.__init__` calls `_run`, which starts two daemon `threading.Timer` loops calling
  `dispatch()`/`dispatch_timers()` on every ruleset every ~0.2 s; they could run actions
  of an evaluation in flight. `_Host._run` starts nothing (timers are never used), and
  one module-level lock serialises every call into the engine, which is not thread-safe.
- One Host per process, created lazily. A ruleset name can be registered only once and
  never replaced: `_COMPILED` remembers what is registered; each `MatchRuleset` name is
  registered once (same name, same content: `matcher.prepare` enforces it), under
  engine names of our own (`tiv<n>`), since names containing `$state`/`$flow` would be
  taken for statecharts and flowcharts.
- Firings are read straight from the C engine, not through durable's Python actions:
  after an `assert_fact` that matched, `start_action_for_state` and then
  `complete_and_start_action` hand over each queued action as JSON,
  {rule name: {"m": fact}}, until none is left. durable's `Closure`/`Promise` plumbing
  and its `update_state` round trip per action (a third of a durable valuation) are
  skipped: no action of ours changes a session's state. `Host.get_action` is still asked
  for a callable per rule at registration; it gets one that is never run.
- `assert_fact`, not `post`: an event is consumed by its first matching rule, a fact
  fires every matching rule. A fact matching no rule raises `MessageNotHandledException`:
  that is "no match". Two identical facts in one session raise `MessageObservedException`
  and two facts with one `id` are one fact: every fact has a distinct `id`.
- More than 1,024 live sessions raise `MemoryError`: one fresh `sid` per chunk and call,
  deleted in a `finally`, also when evaluation fails.
- Deleting a session in which no fact was ever stored (every fact unmatched) is a
  segmentation fault; deleting a session that does not exist raises. So every session
  starts with a sentinel fact that its own rule matches, and is deleted only if that
  assertion succeeded.
- A firing that cannot be recorded (`_on_firing` raises) does not stop the draining of
  the session's actions, so its deletion stays safe; it is raised afterwards as a
  RuntimeError naming the ruleset and rule.
- Facts pass through `json.dumps` into the engine's parser: non-integer numbers become
  doubles (0.30000000000000001 > 0.3 is false there); integers compare exactly. Hence
  the int-only contract (`matcher.INT_BOUND`) and no floats.
- `$or` inside a condition fires a rule once per satisfied branch: conditions are split
  into alternatives, so no `$or` reaches the engine, and firings are deduplicated.
- A `$m` comparison whose right-hand field is absent from the fact holds (!) as soon as
  the fact matched another rule of the ruleset: every field read by `$m` is first tested
  with `$ex` (an engine-internal guard, never in the grammar).
- Per ruleset, at most 64 alpha nodes can be pending while one fact is matched (more:
  error 303), at most 256 rules can end on one node (error 108), and 511 children of
  one node hang the process. A chunk holds at most `NODE_BUDGET` comparisons, counted
  without assuming any node is shared, which bounds all three.
- A rule's expression sequence (two entries per `$and` or `$or`) must stay under 32
  entries (error 113: an `$or` of 15 `$and`s is refused). Alternatives have no `$or` and
  at most one `$and`.
- A rule whose only condition is `{"$nex": ...}` hangs the process when the field is
  absent (killed after 20 s). `$ex`/`$nex` are not in the grammar; do not add them.
- Strings are compared as raw JSON text, escapes included, reading past the shorter
  one: `matcher.orderable` says which strings may be ordered.
- A string of 65,536 bytes or more wraps its 16-bit length (equalities then go wrong),
  a fact of more than ~252 properties is refused, and properties are looked up by a
  32-bit hash alone: `matcher.check_facts` enforces limits under all three.
"""

from __future__ import annotations

import importlib
import itertools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.matching.grammar import (
    MAX_CONJUNCTION,
    AnyEquals,
    Compare,
    Firing,
    Leaf,
    MatchRuleset,
    PreparedRuleset,
    check_facts,
    prepare,
)
from engine.matching.plan import Env, PhasePlan, Subject, encode_subjects

_durable: Any  # durable_rules ships no type information
_rules_engine: Any
try:
    _durable = importlib.import_module("durable.engine")
    _rules_engine = importlib.import_module("durable_rules_engine")  # the C engine under it
except ImportError:  # Python 3.13+: the C extension calls the removed PyEval_CallObject
    _durable = None
    _rules_engine = None

# One encoder for every fact: json.dumps with an option builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False).encode
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_encoder is not None:
    # JSONEncoder.encode makes a new C encoder on every call; this one is made once.
    # A fact holds text, ints, bools and lists only, made by us: no circular check.
    _iterencode = _c_encoder(
        None,
        json.JSONEncoder().default,  # raises TypeError, as json.dumps does
        json.encoder.encode_basestring,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )

    def _encode(value: Any) -> str:  # type: ignore[misc]
        return "".join(_iterencode(value, 0))


_decode = json.JSONDecoder().decode
_NOT_HANDLED, _OBSERVED = 1, 2  # the engine's result codes: no rule matched; seen before

AVAILABLE = _durable is not None

# Alpha nodes per chunk, plus one for the sentinel: below the 64 pending nodes durable
# allows, and far below its per-node limits of 256 rules and 511 children.
NODE_BUDGET = 56
# The longest alternative, with a `$ex` guard per comparison at worst, fits one chunk.
assert 2 * MAX_CONJUNCTION <= NODE_BUDGET

SENTINEL_FIELD = "tiv-sentinel"  # not a valid fact field name, so no fact has it
SENTINEL_RULE = "sentinel"

_OPERATORS = {"neq": "$neq", "lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}

_LOCK = threading.Lock()  # every call into durable_rules, and the state below
_HOST: Any = None
# Rulesets given to `match` directly have no plan to keep their registration in; durable
# never forgets a ruleset name, so these are remembered here (tests, ad-hoc use only).
_AD_HOC: dict[str, _Compiled] = {}
_ENGINE_NAMES = itertools.count()
_SESSIONS = itertools.count()


@dataclass(frozen=True)
class _Chunk:
    engine_name: str
    rule_of: Mapping[str, int]  # durable rule name -> index of our rule
    handle: Any = None  # the C engine's handle of the registered ruleset


@dataclass(frozen=True)
class _Compiled:
    fingerprint: str
    chunks: tuple[_Chunk, ...]


@dataclass
class _Call:
    """One chunk of one `match` in flight: what its firings report goes here."""

    matcher: DurableMatcher
    prepared: PreparedRuleset
    chunk: _Chunk
    index_of: Mapping[str, int]  # fact id -> position
    sentinel_id: str
    hits: set[tuple[int, int]]
    failed: Exception | None = None  # the first firing that failed, raised after
    failed_rule: str | None = None
    stored: bool = False  # some fact of the session matched: it may (and must) be deleted

    def fired(self, message: Mapping[str, Any]) -> None:
        """Record the firings of one action message, {durable rule: {"m": fact}}."""
        for term, content in message.items():
            if term == SENTINEL_RULE:
                continue
            fact_id = content["m"]["id"]
            if fact_id == self.sentinel_id:
                continue  # a condition on `id` may match the sentinel; not a fact of ours
            rule = self.chunk.rule_of[term]
            try:
                self.matcher._on_firing(self, rule, self.index_of[fact_id])
            except Exception as error:
                if self.failed is None:
                    self.failed, self.failed_rule = error, self.prepared.rule_ids[rule]

    def check(self) -> None:
        if self.failed is not None:
            raise RuntimeError(
                f"ruleset {self.prepared.name}: rule {self.failed_rule or '?'}: recording a "
                f"firing failed: {self.failed}"
            ) from self.failed


def _ignore(closure: Any) -> None:
    return None


if _durable is not None:

    class _Host(_durable.Host):  # type: ignore[misc]
        def _run(self) -> None:
            # The base class starts dispatch timer threads here; we never use timers.
            return None

        def get_action(self, action_name: str) -> Any:
            # Registration wants a callable per rule; firings are read from the engine's
            # action messages by `_run`, so durable's own action machinery never runs.
            return _ignore


def _host() -> Any:
    """The process's one Host, created on first use; call with `_LOCK` held."""
    global _HOST
    if _HOST is None:
        _HOST = _Host()
    return _HOST


def _leaf_json(leaf: Leaf) -> dict[str, Any]:
    if isinstance(leaf, AnyEquals):
        return {"$iany": {leaf.field: {"$i": leaf.values[0]}}}
    operand: Any = leaf.value if leaf.other is None else {"$m": leaf.other}
    if leaf.op == "eq":
        return {leaf.field: operand}
    return {_OPERATORS[leaf.op]: {leaf.field: operand}}


def _durable_conditions(alternative: tuple[Leaf, ...]) -> list[dict[str, Any]]:
    """The comparisons of one alternative, each field read by `$m` first tested present.

    durable_rules reaches a `$m` comparison whenever its left field is present; if the
    right one is absent it fires anyway once the fact matched another rule. A `$ex` test
    ahead of it (internal to this module: not in the grammar) keeps such facts out.
    """
    guarded = dict.fromkeys(
        leaf.other for leaf in alternative if isinstance(leaf, Compare) and leaf.other
    )
    return [{"$ex": {name: 1}} for name in guarded] + [_leaf_json(leaf) for leaf in alternative]


def _plan(prepared: PreparedRuleset) -> list[list[tuple[int, list[dict[str, Any]]]]]:
    """Pack every rule's alternatives, in order, into chunks of at most NODE_BUDGET nodes.

    An alternative of n comparisons is a chain of n alpha nodes; none is assumed shared.
    """
    chunks: list[list[tuple[int, list[dict[str, Any]]]]] = [[]]
    used = 0
    for rule, alternatives in enumerate(prepared.alternatives):
        for alternative in alternatives:
            conditions = _durable_conditions(alternative)
            if used + len(conditions) > NODE_BUDGET and chunks[-1]:
                chunks.append([])
                used = 0
            chunks[-1].append((rule, conditions))
            used += len(conditions)
    return chunks


def _register(prepared: PreparedRuleset) -> _Compiled:
    """Register `prepared`'s chunks with the host; call with `_LOCK` held."""
    chunks: list[_Chunk] = []
    for part in _plan(prepared):
        engine_name = f"tiv{next(_ENGINE_NAMES)}"
        definition: dict[str, Any] = {
            SENTINEL_RULE: {"all": [{"m": {SENTINEL_FIELD: True}}], "run": SENTINEL_RULE}
        }
        rule_of: dict[str, int] = {}
        for number, (rule, conditions) in enumerate(part):
            term = f"t{number}"
            condition = conditions[0] if len(conditions) == 1 else {"$and": conditions}
            definition[term] = {"all": [{"m": condition}], "run": term}
            rule_of[term] = rule
        try:
            _host().set_rulesets({engine_name: definition})
        except Exception as error:
            raise RuntimeError(
                f"ruleset {prepared.name}: durable_rules refused it: {error}"
            ) from error
        handle = _host().get_ruleset(engine_name)._handle
        chunks.append(_Chunk(engine_name, rule_of, handle))
    return _Compiled(prepared.fingerprint, tuple(chunks))


def _ad_hoc(prepared: PreparedRuleset) -> _Compiled:
    """The registration of a ruleset given to `match`; call with `_LOCK` held."""
    known = _AD_HOC.get(prepared.name)
    if known is not None:
        if known.fingerprint != prepared.fingerprint:
            raise ValueError(f"ruleset name {prepared.name!r} is registered with other rules")
        return known
    compiled = _register(prepared)
    _AD_HOC[prepared.name] = compiled
    return compiled


class DurableMatcher:
    """`Matcher` running conditions in durable_rules."""

    name = "durable_rules"

    def __init__(self) -> None:
        if not AVAILABLE:
            raise RuntimeError("durable_rules does not import in this Python; use another matcher")

    def fire(
        self, plan: PhasePlan, shipment: Env, subjects: Sequence[Subject]
    ) -> list[tuple[int, int]]:
        # The plan was prepared at load and the encoder makes facts of the prepared types:
        # no per-call prepare or check_facts.
        prepared = plan.prepared
        if not subjects or not prepared.rule_ids:
            return []
        facts, positions = encode_subjects(plan, shipment, subjects)
        if not facts:
            return []
        with _LOCK:
            compiled = plan.prepared_by_backend.get(self.name)
            if compiled is None:
                compiled = plan.prepared_by_backend[self.name] = _register(prepared)
            hits = self._hits(prepared, compiled, facts)
        return sorted((rule, positions[fact]) for rule, fact in hits)

    def match(self, ruleset: MatchRuleset, facts: Sequence[Mapping[str, Any]]) -> list[Firing]:
        """Any ruleset on any facts, both checked against the grammar's contract first."""
        prepared = prepare(ruleset)
        checked = check_facts(prepared, facts)
        if not checked or not prepared.rule_ids:
            return []
        with _LOCK:
            hits = self._hits(prepared, _ad_hoc(prepared), checked)
        return [Firing(prepared.rule_ids[rule], checked[fact]["id"]) for rule, fact in sorted(hits)]

    def _hits(
        self, prepared: PreparedRuleset, compiled: _Compiled, facts: Sequence[Mapping[str, Any]]
    ) -> set[tuple[int, int]]:
        """(rule, fact) positions that fire; call with `_LOCK` held."""
        index_of = {fact["id"]: position for position, fact in enumerate(facts)}
        sentinel_id = "~sentinel"
        while sentinel_id in index_of:
            sentinel_id += "~"
        hits: set[tuple[int, int]] = set()
        for chunk in compiled.chunks:
            call = _Call(self, prepared, chunk, index_of, sentinel_id, hits)
            self._run(call, facts)
        return hits

    def _on_firing(self, call: _Call, rule: int, fact: int) -> None:
        """Record that rule `rule` holds for fact `fact` (positions); runs inside an action."""
        call.hits.add((rule, fact))

    def _run(self, call: _Call, facts: Sequence[Mapping[str, Any]]) -> None:
        """One session: each fact asserted and the actions it queued read, then the deletion.

        Straight to the C engine: `assert_fact` gives the session's state handle when a
        rule matched; `start_action_for_state` / `complete_and_start_action` hand over
        each queued action's message, {durable rule: {"m": fact}}, which is all a firing
        is. durable's own Python plumbing (closures, promises, JSON state round trips,
        `update_state`) is not needed: no action changes the session's state. The sentinel
        is asserted only when no fact matched. A batched `assert_facts` would be one
        call, but past a few facts of many fields it crashed the process here (in the C
        engine), so the envelope in which durable_rules was measured stays one fact per
        assert.
        """
        handle = call.chunk.handle
        sid = f"s{next(_SESSIONS)}"
        # Every fact is a JSON object: the session id goes in as its last member.
        tail = f', "sid": "{sid}"}}'
        try:
            for fact in facts:
                if "sid" in fact:  # a fact of `match` may name one; ours replaces it
                    fact = {**fact, "sid": sid}
                    self._assert(call, handle, _encode(fact))
                else:
                    self._assert(call, handle, _encode(fact)[:-1] + tail)
            if not call.stored:
                # A session of facts that matched nothing can be neither kept (1,024 live
                # sessions at most) nor deleted (that aborts the process): the sentinel
                # matches its own rule, so the session can be deleted.
                sentinel = {"id": call.sentinel_id, SENTINEL_FIELD: True}
                self._assert(call, handle, _encode(sentinel)[:-1] + tail)
        except RuntimeError:
            raise
        except Exception as error:
            raise RuntimeError(
                f"ruleset {call.prepared.name}: durable_rules failed: {error}"
            ) from error
        finally:
            if call.stored:
                _rules_engine.delete_state(handle, sid)
        call.check()

    def _assert(self, call: _Call, handle: Any, text: str) -> None:
        """Assert one fact (JSON text) and read every action it queued."""
        code, state = _rules_engine.assert_fact(handle, text)
        if code == _NOT_HANDLED:
            return  # no rule of this chunk matches the fact
        if code == _OBSERVED:
            raise RuntimeError(f"ruleset {call.prepared.name}: durable_rules saw a fact twice")
        call.stored = True
        started = _rules_engine.start_action_for_state(handle, state)
        message = started[1] if started else None
        while message:
            call.fired(_decode(message))
            message = _rules_engine.complete_and_start_action(handle, state)
