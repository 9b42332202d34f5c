"""The condition matchers: the grammar's semantics on both backends, durable_rules' pitfalls,
and a differential test of the durable_rules backend against the Python oracle."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.matching.grammar import (
    MAX_ALTERNATIVES,
    MAX_CONJUNCTION,
    MAX_FACT_FIELDS,
    MAX_STRING_CHARS,
    Firing,
    MatchRuleset,
    property_hash,
)
from engine.matching.production import PythonMatcher
from engine.matching.registry import Matcher, available_matchers, default_matcher

REPO = Path(__file__).resolve().parents[1]
# The JSON backends: the compiled matcher never sees JSON (tests/test_differential.py
# compares it with these on whole valuations).
MATCHERS = [m for m in available_matchers() if hasattr(m, "match")]
_names = itertools.count()


def ruleset(*rules: tuple[str, Mapping[str, Any]]) -> MatchRuleset:
    """A ruleset under a name never used before (durable_rules never forgets a name)."""
    return MatchRuleset(f"test-matching-{next(_names)}", tuple(rules))


def fact(fact_id: str, kind: str = "line", **fields: Any) -> dict[str, Any]:
    return {"id": fact_id, "kind": kind, **fields}


def pairs(firings: list[Firing]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.fact_id) for f in firings]


@pytest.fixture(params=MATCHERS, ids=lambda m: m.name)
def matcher(request: pytest.FixtureRequest) -> Matcher:
    return request.param


@pytest.fixture
def durable() -> Matcher:
    pytest.importorskip("durable.engine")
    from engine.matching.durable_rules import DurableMatcher

    return DurableMatcher()


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- The grammar, on every backend ---


def test_equality_on_str_int_and_bool(matcher: Matcher) -> None:
    rules = ruleset(
        ("country", {"country": "DE"}),
        ("count", {"count": 3}),
        ("flag", {"insured": True}),
    )
    facts = [
        fact("a", country="DE", count=3, insured=True),
        fact("b", country="FR", count=-3, insured=False),
        fact("c"),
    ]
    assert pairs(matcher.match(rules, facts)) == [("country", "a"), ("count", "a"), ("flag", "a")]


def test_a_comparison_on_an_absent_field_is_false_even_neq(matcher: Matcher) -> None:
    rules = ruleset(
        ("neq", {"$neq": {"country": "DE"}}),
        ("lt", {"$lt": {"count": 10}}),
        ("neq_bool", {"$neq": {"insured": True}}),
    )
    facts = [fact("absent"), fact("present", country="FR", count=9, insured=False)]
    assert pairs(matcher.match(rules, facts)) == [
        ("neq", "present"),
        ("lt", "present"),
        ("neq_bool", "present"),
    ]


def test_ordering_of_ints_and_iso_dates(matcher: Matcher) -> None:
    rules = ruleset(
        ("lt", {"$lt": {"minor": 100}}),
        ("lte", {"$lte": {"minor": 100}}),
        ("gt", {"$gt": {"minor": 100}}),
        ("gte", {"$gte": {"minor": 100}}),
        ("before", {"$lt": {"date": "2024-03-01"}}),
    )
    facts = [
        fact("99", minor=99, date="2024-02-29"),
        fact("100", minor=100, date="2024-03-01"),
        fact("101", minor=101, date="2024-03-10"),
    ]
    assert pairs(matcher.match(rules, facts)) == [
        ("lt", "99"),
        ("lte", "99"),
        ("lte", "100"),
        ("gt", "101"),
        ("gte", "100"),
        ("gte", "101"),
        ("before", "99"),
    ]


def test_integers_near_two_to_the_53_compare_exactly(matcher: Matcher) -> None:
    # 2**53 - 1 and 2**53 - 2 are distinct doubles too, but one past them would not be.
    top = 2**53 - 1
    rules = ruleset(("eq", {"n": top}), ("lt", {"$lt": {"n": top}}), ("pair", {"n": {"$m": "m"}}))
    facts = [fact("top", n=top, m=top - 1), fact("below", n=top - 1, m=top - 1)]
    assert pairs(matcher.match(rules, facts)) == [("eq", "top"), ("lt", "below"), ("pair", "below")]


def test_field_to_field_comparisons(matcher: Matcher) -> None:
    rules = ruleset(
        ("same", {"origin": {"$m": "destination"}}),
        ("differ", {"$neq": {"origin": {"$m": "destination"}}}),
        ("within", {"$lte": {"paid": {"$m": "limit"}}}),
    )
    facts = [
        fact("domestic", origin="DE", destination="DE", paid=5, limit=5),
        fact("export", origin="DE", destination="US", paid=6, limit=5),
        fact("no_destination", origin="DE", paid=1),
        fact("no_origin", destination="DE", limit=1),
    ]
    assert pairs(matcher.match(rules, facts)) == [
        ("same", "domestic"),
        ("differ", "export"),
        ("within", "domestic"),
    ]


def test_field_to_field_with_an_absent_field_while_another_rule_matches(matcher: Matcher) -> None:
    # durable_rules fires a `$m` rule whose right-hand field is absent once the fact has
    # matched any other rule; the backend guards every `$m` field with `$ex`.
    rules = ruleset(
        ("line", {"kind": "line"}),
        ("same", {"x": {"$m": "y"}}),
        ("differ", {"$neq": {"x": {"$m": "y"}}}),
        ("either", {"$or": [{"x": {"$m": "y"}}, {"$neq": {"x": {"$m": "y"}}}]}),
    )
    facts = [fact("x_only", x=1), fact("both", x=1, y=2)]
    assert pairs(matcher.match(rules, facts)) == [
        ("line", "x_only"),
        ("line", "both"),
        ("differ", "both"),
        ("either", "both"),
    ]


def test_iany_finds_a_literal_in_a_list_field(matcher: Matcher) -> None:
    rules = ruleset(
        ("one", {"$iany": {"flags": {"$i": "hazmat"}}}),
        ("any_of", {"$iany": {"flags": {"$or": [{"$i": "cold"}, {"$i": "hazmat"}]}}}),
        ("int", {"$iany": {"codes": {"$i": 8471}}}),
    )
    facts = [
        fact("hazmat", flags=["fragile", "hazmat"], codes=[8471, 8517]),
        fact("cold", flags=["cold"], codes=[]),
        fact("empty", flags=[]),
        fact("absent"),
    ]
    assert pairs(matcher.match(rules, facts)) == [
        ("one", "hazmat"),
        ("any_of", "hazmat"),
        ("any_of", "cold"),
        ("int", "hazmat"),
    ]


def test_and_or_nesting_and_one_firing_per_pair(matcher: Matcher) -> None:
    # The fact "both" satisfies both branches of the $or: still one firing.
    rules = ruleset(
        (
            "rule",
            {
                "$and": [
                    {"kind": "line"},
                    {"$or": [{"country": "DE"}, {"$gte": {"minor": 1000}}]},
                ]
            },
        )
    )
    facts = [
        fact("both", country="DE", minor=5000),
        fact("de", country="DE", minor=1),
        fact("big", country="FR", minor=1000),
        fact("neither", country="FR", minor=999),
        fact("header", kind="header", country="DE"),
    ]
    assert pairs(matcher.match(rules, facts)) == [
        ("rule", "both"),
        ("rule", "de"),
        ("rule", "big"),
    ]


def test_firings_come_in_rule_order_then_fact_order(matcher: Matcher) -> None:
    rules = ruleset(("z", {"$gte": {"n": 0}}), ("a", {"$gte": {"n": 1}}))
    facts = [fact("3", n=3), fact("1", n=1), fact("0", n=0)]
    assert pairs(matcher.match(rules, facts)) == [
        ("z", "3"),
        ("z", "1"),
        ("z", "0"),
        ("a", "3"),
        ("a", "1"),
    ]


def test_no_facts_or_no_rules_match_nothing(matcher: Matcher) -> None:
    assert matcher.match(ruleset(("r", {"kind": "line"})), []) == []
    assert matcher.match(ruleset(), [fact("a")]) == []


def test_identical_facts_with_distinct_ids_both_fire(matcher: Matcher) -> None:
    # durable_rules raises MessageObservedException for two identical facts in a session.
    rules = ruleset(("r", {"country": "DE"}))
    facts = [fact("a", country="DE"), fact("b", country="DE")]
    assert pairs(matcher.match(rules, facts)) == [("r", "a"), ("r", "b")]


def test_every_matching_rule_fires_for_one_fact(matcher: Matcher) -> None:
    # With `post`, the first matching rule would consume the event.
    rules = ruleset(*((f"r{n}", {"$gte": {"n": n}}) for n in range(5)))
    assert pairs(matcher.match(rules, [fact("f", n=4)])) == [(f"r{n}", "f") for n in range(5)]


def test_many_rules_matching_one_fact(matcher: Matcher) -> None:
    # More than 64 alpha nodes pending for one fact is error 303 in a single durable
    # ruleset; the backend splits the rules into chunks.
    rules = ruleset(*((f"r{n}", {"$gte": {"n": -n}}) for n in range(200)))
    facts = [fact("f", n=0), fact("g", n=-150)]
    expected = [(f"r{n}", "f") for n in range(200)] + [(f"r{n}", "g") for n in range(150, 200)]
    assert sorted(pairs(matcher.match(rules, facts))) == sorted(expected)


# --- What the contract rejects, identically on every backend ---


@pytest.mark.parametrize(
    "condition",
    [
        {"$nex": {"country": 1}},
        {"$ex": {"country": 1}},
        {"$eq": {"country": "DE"}},
        {"$not": {"country": "DE"}},
        {"country": "DE", "kind": "line"},
        {},
        {"$and": []},
        {"$or": {"country": "DE"}},
        {"$lt": {"minor": 1, "major": 2}},
        {"country": {"$s": "x"}},
        {"$iany": {"flags": "hazmat"}},
        {"$iany": {"flags": {"$or": []}}},
        {"country.code": "DE"},
        {"sid": "x"},
        {"$lt": {"name": "ACME Corp"}},
        {"$gt": {"name": 'a"b'}},
        {"n": 2**53},
        {"n": -(2**53)},
        {"n": "x" * (MAX_STRING_CHARS + 1)},
    ],
)
def test_conditions_outside_the_grammar_are_value_errors(
    matcher: Matcher, condition: Mapping[str, Any]
) -> None:
    with pytest.raises(ValueError):
        matcher.match(ruleset(("r", condition)), [fact("a")])


@pytest.mark.parametrize(
    "condition",
    [
        {"amount": 0.3},
        {"$lt": {"insured": True}},
        {"$iany": {"flags": {"$i": True}}},
        {"$and": [{"n": 1}, {"n": "1"}]},
        {"$and": [{"flags": "x"}, {"$iany": {"flags": {"$i": "x"}}}]},
        {"n": None},
    ],
)
def test_ill_typed_conditions_are_type_errors(
    matcher: Matcher, condition: Mapping[str, Any]
) -> None:
    with pytest.raises(TypeError):
        matcher.match(ruleset(("r", condition)), [fact("a")])


@pytest.mark.parametrize(
    ("condition", "facts"),
    [
        ({"kind": "line"}, [fact("a", amount=0.1)]),
        ({"kind": "line"}, [fact("a", codes=[1.5])]),
        ({"n": 1}, [fact("a", n="1")]),
        ({"n": 1}, [fact("a", n=True)]),
        ({"x": {"$m": "y"}}, [fact("a", x=1, y="1")]),
        ({"x": {"$m": "y"}}, [fact("a", x=1), fact("b", y="1")]),
        ({"$gt": {"x": {"$m": "y"}}}, [fact("a", x=True, y=False)]),
        ({"$iany": {"flags": {"$i": "x"}}}, [fact("a", flags="x")]),
        ({"$iany": {"flags": {"$i": "x"}}}, [fact("a", flags=[1])]),
        ({"kind": "line"}, [fact("a", codes=["1", 1])]),
        ({"kind": "line"}, [fact("a", when=None)]),
        ({"kind": "line"}, ["not a mapping"]),
    ],
)
def test_ill_typed_facts_are_type_errors(
    matcher: Matcher, condition: Mapping[str, Any], facts: Sequence[Any]
) -> None:
    with pytest.raises(TypeError):
        matcher.match(ruleset(("r", condition)), facts)


@pytest.mark.parametrize(
    "facts",
    [
        [fact("a"), fact("a")],
        [{"id": "a"}],
        [{"kind": "line"}],
        [fact("")],
        [fact("a", sid="s1")],
        [fact("a", **{"bad-name": 1})],
        [fact("a", n=2**53)],
        [fact("a", codes=[-(2**53)])],
        [fact("a", name="x" * (MAX_STRING_CHARS + 1))],
        [fact("a", name="\ud800")],
        [fact("a", **{f"f{n}": n for n in range(MAX_FACT_FIELDS)})],
        [fact("a", date="2024-03-01 ")],  # ordered below: a space orders wrongly in durable
    ],
)
def test_invalid_facts_are_value_errors(matcher: Matcher, facts: Sequence[Any]) -> None:
    rules = ruleset(("r", {"kind": "line"}), ("d", {"$lt": {"date": "2025-01-01"}}))
    with pytest.raises(ValueError):
        matcher.match(rules, facts)


def test_rule_ids_must_be_unique(matcher: Matcher) -> None:
    with pytest.raises(ValueError, match="twice"):
        matcher.match(ruleset(("r", {"kind": "a"}), ("r", {"kind": "b"})), [fact("a")])


# durable_rules never forgets a ruleset name, so an ad-hoc ruleset's name must change with
# its content. (Packs keep their registration in their own plan: no name is looked up.)


def test_a_name_reused_for_other_rules_is_refused(durable: Matcher) -> None:
    first = ruleset(("r", {"kind": "line"}))
    same = MatchRuleset(first.name, (("r", {"kind": "line"}),))
    other = MatchRuleset(first.name, (("r", {"kind": "header"}),))
    assert pairs(durable.match(first, [fact("a")])) == [("r", "a")]
    assert pairs(durable.match(same, [fact("a")])) == [("r", "a")]
    with pytest.raises(ValueError, match="registered with other rules"):
        durable.match(other, [fact("a")])


def test_a_name_reused_with_true_for_1_is_refused(durable: Matcher) -> None:
    # True == 1 in Python: the check compares canonical JSON, where true is not 1.
    first = ruleset(("r", {"flag": True}))
    assert pairs(durable.match(first, [fact("a", flag=True)])) == [("r", "a")]
    with pytest.raises(ValueError, match="registered with other rules"):
        durable.match(MatchRuleset(first.name, (("r", {"flag": 1}),)), [fact("a", flag=1)])


def test_immutable_mappings_and_tuples_are_conditions_too(matcher: Matcher) -> None:
    frozen = MappingProxyType(
        {"$and": (MappingProxyType({"kind": "line"}), MappingProxyType({"$gt": {"n": 1}}))}
    )
    rules = ruleset(("r", frozen))
    assert pairs(matcher.match(rules, [fact("a", n=2), fact("b", n=1)])) == [("r", "a")]


def test_limits_on_alternatives_and_conjunctions(matcher: Matcher) -> None:
    # 9 * 9 * 9 = 729 alternatives once $and is distributed over the three $or.
    wide = {"$and": [{"$or": [{f"f{k}": n} for n in range(9)]} for k in range(3)]}
    assert MAX_ALTERNATIVES < 9**3
    with pytest.raises(ValueError, match="alternatives"):
        matcher.match(ruleset(("r", wide)), [fact("a")])
    long = {"$and": [{f"f{k}": 1} for k in range(MAX_CONJUNCTION + 1)]}
    with pytest.raises(ValueError, match="comparisons"):
        matcher.match(ruleset(("r", long)), [fact("a")])


def test_property_hash_is_durable_rules_hash_and_collisions_are_refused(matcher: Matcher) -> None:
    # The constants are HASH_ID and HASH_SID in durable_rules' C sources.
    assert property_hash("id") == 926444256
    assert property_hash("sid") == 3593476751
    assert property_hash("f3498b") == property_hash("f778b8")  # found by a birthday search
    with pytest.raises(ValueError, match="hash"):
        matcher.match(ruleset(("r", {"f3498b": 1})), [fact("a", f778b8=1)])


# --- durable_rules pitfalls, one test each ---


def test_import_guard_leaves_the_other_matchers() -> None:
    # As on Python 3.13+, where durable_rules' C extension does not load.
    result = run_python(
        """
        import sys
        sys.modules["durable"] = None  # makes `import durable...` raise ImportError
        from engine.matching import durable_rules
        from engine.matching.registry import available_matchers, default_matcher
        assert not durable_rules.AVAILABLE
        assert default_matcher().name == "compiled"
        assert [m.name for m in available_matchers()] == ["compiled", "python"]
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_default_matcher_is_compiled_and_durable_rules_is_available_where_it_imports() -> None:
    pytest.importorskip("durable.engine")
    assert default_matcher().name == "compiled"
    assert [m.name for m in available_matchers()] == ["compiled", "durable_rules", "python"]


def test_one_host_per_process_and_a_ruleset_registered_once(durable: Matcher) -> None:
    from engine.matching import durable_rules as durable_backend

    rules = ruleset(("r", {"kind": "line"}))
    other = durable_backend.DurableMatcher()
    assert pairs(durable.match(rules, [fact("a")])) == [("r", "a")]
    assert pairs(other.match(rules, [fact("b")])) == [("r", "b")]
    host = durable_backend._host()
    assert durable_backend._host() is host
    # durable_rules itself refuses a second registration of a name.
    engine_name = durable_backend._AD_HOC[rules.name].chunks[0].engine_name
    with pytest.raises(Exception, match="already registered"):
        host.set_rulesets({engine_name: {"r": {"all": [{"m": {"kind": "x"}}], "run": "t0"}}})


def test_sessions_are_deleted_after_3000_matches(durable: Matcher) -> None:
    # More than 1,024 live sessions raise MemoryError.
    rules = ruleset(("r", {"kind": "line"}))
    for n in range(3000):
        assert pairs(durable.match(rules, [fact(f"f{n}")])) == [("r", f"f{n}")]


def test_sessions_where_no_fact_matches_are_deleted_without_crashing() -> None:
    # Deleting a session that never stored a fact is a segmentation fault: the backend
    # asserts a sentinel first. Run apart, so that a crash fails this test only.
    pytest.importorskip("durable.engine")
    result = run_python(
        """
        from engine.matching.durable_rules import DurableMatcher
        from engine.matching.grammar import MatchRuleset
        rules = MatchRuleset("nothing-matches", (("r", {"kind": "line"}),))
        matcher = DurableMatcher()
        for n in range(1500):
            assert matcher.match(rules, [{"id": f"f{n}", "kind": "header"}]) == []
        print("ok")
        """
    )
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.strip() == "ok"


def _failing_matcher() -> Matcher:
    from engine.matching.durable_rules import DurableMatcher

    class FailingMatcher(DurableMatcher):
        """Fails inside durable_rules' action, as a broken action would."""

        def _on_firing(self, call: Any, rule: int, fact: int) -> None:
            raise LookupError("injected failure")

    return FailingMatcher()


def test_an_exception_inside_an_action_is_raised_naming_ruleset_and_rule(
    durable: Matcher,
) -> None:
    # durable_rules does not raise it from assert_fact: it returns it in the state.
    rules = ruleset(("quiet", {"kind": "header"}), ("loud", {"kind": "line"}))
    with pytest.raises(RuntimeError) as raised:
        _failing_matcher().match(rules, [fact("a")])
    message = str(raised.value)
    assert rules.name in message
    assert "rule loud" in message
    assert "injected failure" in message


def test_sessions_are_deleted_when_every_other_match_fails_inside(durable: Matcher) -> None:
    failing = _failing_matcher()
    rules = ruleset(("r", {"kind": "line"}))
    for n in range(3000):
        facts = [fact(f"f{n}")]
        if n % 2:
            with pytest.raises(RuntimeError, match="injected failure"):
                failing.match(rules, facts)
        else:
            assert pairs(durable.match(rules, facts)) == [("r", f"f{n}")]


def test_no_timer_thread_is_started(durable: Matcher) -> None:
    # durable_rules' Host.__init__ starts two dispatch Timer threads; ours starts none.
    from engine.matching import durable_rules as durable_backend

    durable_backend._host()
    durable.match(ruleset(("r", {"kind": "line"})), [fact("a")])
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    assert timers == []
    assert not any("dispatch" in t.name for t in threading.enumerate())


def test_concurrent_matches_give_the_sequential_firings(durable: Matcher) -> None:
    rulesets = [
        ruleset(("low", {"$lt": {"n": k}}), ("high", {"$gte": {"n": k}}), ("k", {"kind": "k"}))
        for k in range(4)
    ]
    facts = [fact(f"f{n}", kind="k" if n % 3 else "line", n=n) for n in range(6)]
    expected = [durable.match(rules, facts) for rules in rulesets]
    results: dict[int, list[list[Firing]]] = {k: [] for k in range(4)}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(200):
                results[k].append(durable.match(rulesets[k], facts))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for k in range(4):
        assert results[k] == [expected[k]] * 200


def test_hundreds_of_siblings_do_not_hang() -> None:
    # 511 alpha nodes under one parent hang durable_rules; chunks keep far below.
    pytest.importorskip("durable.engine")
    result = run_python(
        """
        from engine.matching.durable_rules import DurableMatcher
        from engine.matching.grammar import MatchRuleset
        rules = MatchRuleset("siblings", tuple(
            (f"r{k}", {"$or": [{"n": 200 * k + i} for i in range(200)]}) for k in range(3)
        ))
        facts = [{"id": f"f{n}", "kind": "line", "n": n} for n in range(0, 700, 7)]
        got = [(f.rule_id, f.fact_id) for f in DurableMatcher().match(rules, facts)]
        expected = sorted(
            ((f"r{n // 200}", f"f{n}") for n in range(0, 600, 7)),
            key=lambda p: (int(p[0][1:]), int(p[1][1:])),
        )
        assert got == expected, got
        print("ok")
        """,
        timeout=60,
    )
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.strip() == "ok"


# --- The differential oracle ---

_INT = st.one_of(
    st.integers(-2, 2),
    st.integers(-2, 2),
    st.sampled_from([2**53 - 1, 2**53 - 2, -(2**53 - 1), 2**31, -(2**31)]),
)
# Orderable text, mostly from a few values so that equalities hold now and then, and
# now and then a string durable_rules cannot order: both backends must refuse it alike.
_WORDS = ["", "A", "a", "aa", "ab", "b", "é", "😀", "2024-01-02", "2024-1-3", "1", "10", "9"]
_TEXT = st.one_of(
    st.sampled_from(_WORDS),
    st.sampled_from(_WORDS),
    st.text(alphabet="#09AZaz-~é€😀", max_size=3),
    st.sampled_from(["a b", "a!", 'a"', "a\\", "a\n"]),
)
_SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "a": _INT,
    "b": _INT,
    "s": _TEXT,
    "t": _TEXT,
    "f": st.booleans(),
    "g": st.booleans(),
}
_LISTS: dict[str, st.SearchStrategy[Any]] = {"ls": _TEXT, "li": _INT}
_PAIRS = [("a", "b"), ("b", "a"), ("a", "a"), ("s", "t"), ("t", "s"), ("f", "g")]
_EQUALITY = ["$neq", "="]
_ORDERING = ["$lt", "$lte", "$gt", "$gte"]


def _comparison(field: str, op: str, operand: Any) -> dict[str, Any]:
    return {field: operand} if op == "=" else {op: {field: operand}}


@st.composite
def _literal_leaf(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(_SCALARS)))
    ops = _EQUALITY if field in ("f", "g") else _EQUALITY + _ORDERING
    return _comparison(field, draw(st.sampled_from(ops)), draw(_SCALARS[field]))


@st.composite
def _pair_leaf(draw: st.DrawFn) -> dict[str, Any]:
    left, right = draw(st.sampled_from(_PAIRS))
    ops = _EQUALITY if left == "f" else _EQUALITY + _ORDERING
    return _comparison(left, draw(st.sampled_from(ops)), {"$m": right})


@st.composite
def _iany_leaf(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(_LISTS)))
    values = draw(st.lists(_LISTS[field], min_size=1, max_size=3))
    if len(values) == 1 and draw(st.booleans()):
        return {"$iany": {field: {"$i": values[0]}}}
    return {"$iany": {field: {"$or": [{"$i": value} for value in values]}}}


_LEAF = st.one_of(
    _literal_leaf(),
    _pair_leaf(),
    _iany_leaf(),
    st.builds(lambda kind: {"kind": kind}, st.sampled_from(["x", "y"])),
)
_CONDITION = st.recursive(
    _LEAF,
    lambda children: st.one_of(
        st.builds(lambda parts: {"$and": parts}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda parts: {"$or": parts}, st.lists(children, min_size=1, max_size=3)),
    ),
    max_leaves=8,
)


@st.composite
def _facts(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 6))
    facts = []
    for n in range(count):
        item: dict[str, Any] = {"id": f"f{n}", "kind": draw(st.sampled_from(["x", "y"]))}
        # Each field is present two times in three: absent fields matter as much.
        for name, values in _SCALARS.items():
            if draw(st.integers(0, 2)):
                item[name] = draw(values)
        for name, values in _LISTS.items():
            if draw(st.integers(0, 2)):
                item[name] = draw(st.lists(values, max_size=3))
        facts.append(item)
    return facts


def _outcome(matcher: Matcher, rules: MatchRuleset, facts: list[dict[str, Any]]) -> Any:
    try:
        return ("firings", pairs(matcher.match(rules, facts)))
    except (ValueError, TypeError) as error:
        return ("refused", type(error).__name__, str(error))


@settings(max_examples=300, deadline=None)
@given(conditions=st.lists(_CONDITION, min_size=1, max_size=4), facts=_facts())
def test_durable_rules_agrees_with_the_oracle(
    conditions: list[dict[str, Any]], facts: list[dict[str, Any]]
) -> None:
    pytest.importorskip("durable.engine")
    from engine.matching.durable_rules import DurableMatcher

    rules = ruleset(*((f"r{n}", cond) for n, cond in enumerate(conditions)))
    assert _outcome(DurableMatcher(), rules, facts) == _outcome(PythonMatcher(), rules, facts)
