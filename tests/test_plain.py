"""The plain road: facts read into plain dicts (engine.facts.read_plain) and valued by the
pack's plain straight line (engine.evaluating.valuation.evaluate_plain), with no model built.

Two promises, each checked on seeded corpora, hypothesis input and hand-made corners:
- `read_plain` accepts only facts the models accept, and what it gives reads as the same
  `Shipment` (so every deferred field, the trace included, is the Shipment road's);
- the plain road's valuation is the Shipment road's exactly (every field, as JSON), or
  None, so that `value` takes that road. Counts check that it does run: a road that
  always declined would agree too.
"""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import FactsError, RuleSet, TivError, value
from engine.api import _PlainRoad, _value_plain
from engine.compiling.pack import CompiledPack
from engine.evaluating.straightline import plain_line, straight_line
from engine.facts import FactsReference, read_facts, read_plain
from tests.conftest import load_mini, shipment
from tests.test_differential import RULES as DIFFERENTIAL_RULES
from tests.test_differential import corpus as differential_corpus
from tests.test_straightline import CORNERS, PACKS, SHIPPED, both, facts_for

PLAIN_PACKS = [pack for pack in PACKS if plain_line(pack) is not None]


def _warm(reference: FactsReference, currency: str = "USD") -> None:
    """A reference gets validators of its own on its second read: read it twice."""
    for _ in range(2):
        read_facts(shipment(currency=currency, invoice={"amount": "1"}), reference)


def _single_currency(facts: dict[str, Any]) -> dict[str, Any]:
    """`facts` with no rates and every amount in the valuation currency: the plain road's."""
    facts = copy.deepcopy(facts)
    facts.pop("fx", None)
    for group in ("charges", "goods", "duties"):
        for item in facts.get(group) or ():
            item.pop("currency", None)
    facts["invoice"].pop("currency", None)
    return facts


def roads(rules: RuleSet, facts: dict[str, Any], policy: str, trace: bool) -> tuple[Any, Any]:
    """(the plain road's valuation, or None when it declined; the Shipment road's, from the
    facts as JSON text, or its error's problems), each as JSON data."""
    got = _value_plain(rules, copy.deepcopy(facts), policy, None, True, None, trace, None, 0)
    plain = None if got is None else got.model_dump(mode="json")
    try:
        text = json.dumps(facts)
        other: Any = value(rules, text, policy=policy, allow_draft=True, trace=trace)
        other = other.model_dump(mode="json")
    except TivError as error:
        other = [str(problem) for problem in error.problems]
    return plain, other


def test_every_shipped_version_has_a_plain_line_in_the_straight_lines_slots() -> None:
    assert PLAIN_PACKS == PACKS
    for pack in PLAIN_PACKS:
        line, plain = straight_line(pack), plain_line(pack)
        assert line is not None and plain is not None
        assert plain.slots == line.slots  # one renderer serves both
    # A pack with no straight line (duties estimated in a condition) has no plain road:
    # value() does not read its facts plain first.
    dutiable = load_mini(
        """\
        - id: dutiable
          when: estimate_duties(invoice, 0) > 0
          decide: refer
          reason: Duties due
        """
    )
    assert plain_line(dutiable.packs["mini"][-1]) is None
    assert _PlainRoad.of(dutiable, "mini") is False
    assert _PlainRoad.of(SHIPPED, "standard") is not False


def test_a_seeded_corpus_agrees_on_every_plain_pack_version() -> None:
    # The plain road declines exactly the shipments the Shipment road's straight line
    # leaves to the interpreted path (blue-harbour's table gaps, mostly); the packs that
    # estimate duties do so on it, and make a Shipment only then.
    for pack in PLAIN_PACKS:
        policy = f"{pack.id}@{pack.version}"
        _warm(SHIPPED.pack_facts_reference(pack.id))
        _warm(SHIPPED.pack_facts_reference(pack.id), "EUR")
        rng = random.Random(policy)
        taken = valued = 0
        for index in range(200):
            facts = _single_currency(facts_for(pack, rng, index))
            trace = index % 2 == 0
            plain, other = roads(SHIPPED, facts, policy, trace)
            if isinstance(other, list):
                assert plain is None, (policy, facts)  # refused facts never take it
                continue
            valued += 1
            straight = both(SHIPPED, facts, policy, trace)[0]
            assert (plain is None) == (straight is None), (policy, facts)
            if plain is not None:
                taken += 1
                assert plain == other, (policy, facts)
        assert valued >= 80, (policy, valued)
        assert taken >= valued // 3, (policy, taken, valued)


@settings(max_examples=100, deadline=None)
@given(
    pack=st.sampled_from(PLAIN_PACKS),
    seed=st.integers(min_value=0, max_value=2**32),
    trace=st.booleans(),
)
def test_generated_shipments_agree(pack: CompiledPack, seed: int, trace: bool) -> None:
    _warm(SHIPPED.pack_facts_reference(pack.id))
    facts = facts_for(pack, random.Random(seed), seed)
    if random.Random(seed).random() < 0.8:
        facts = _single_currency(facts)
    plain, other = roads(SHIPPED, facts, f"{pack.id}@{pack.version}", trace)
    if plain is not None:
        assert plain == other


def test_corners_and_the_differential_corpus_agree() -> None:
    # CORNERS: a table gap (referred on the other path), a rejected charge, a rule text
    # that looks like code; the differential pack fires every rule on its corpus.
    cases: list[tuple[RuleSet, dict[str, Any]]] = [
        (CORNERS, shipment()),
        (CORNERS, shipment(destination={"country": "FR"})),
        (CORNERS, shipment(charges=[{"type": "ocean_freight", "amount": "13.13"}])),
        (CORNERS, shipment(charges=[{"type": "ocean_freight", "amount": "400"}])),
        (CORNERS, shipment(id="x\"); __import__('os').system('false'); (\"")),
    ]
    cases += [(DIFFERENTIAL_RULES, facts) for facts in differential_corpus(400)]
    for rules in (CORNERS, DIFFERENTIAL_RULES):
        _warm(rules.pack_facts_reference("mini"))
    taken = 0
    for index, (rules, facts) in enumerate(cases):
        plain, other = roads(rules, facts, "mini", index % 2 == 0)
        if plain is not None:
            taken += 1
            assert plain == other, facts
    assert taken >= len(cases) * 3 // 4, taken
    # The gap and the rejected charge are left to the other road, which decides them.
    assert roads(CORNERS, cases[1][1], "mini", True)[0] is None
    assert roads(CORNERS, cases[2][1], "mini", True)[0] is None
    line = plain_line(CORNERS.packs["mini"][-1])
    assert line is not None and "__import__" not in line.source


def test_value_takes_the_plain_road_and_its_result_keeps_the_facts_it_was_given() -> None:
    # cif-premium-inclusive@1.0.0; the result's deferred fields (the trace, the excluded
    # charges) are made from the facts when first read, after the caller changed them.
    reference = SHIPPED.pack_facts_reference("cif-premium-inclusive")
    _warm(reference)
    facts = shipment(
        date="2025-03-01",
        incoterm="CIF",
        charges=[
            {"type": "ocean_freight", "amount": "250.00"},
            {"type": "demurrage", "amount": "75.00"},
        ],
    )
    assert _value_plain(SHIPPED, facts, "cif-premium-inclusive", None, False, None, True, None, 0)
    expected = value(SHIPPED, json.dumps(facts), policy="cif-premium-inclusive")
    result = value(SHIPPED, facts, policy="cif-premium-inclusive")
    facts["charges"][0]["amount"] = "999999.00"
    facts["charges"].append({"type": "ocean_freight", "amount": "1.00"})
    facts["id"] = "changed"
    assert result.model_dump(mode="json") == expected.model_dump(mode="json")
    # A CIF invoice already holds the ocean freight; demurrage is never insured.
    assert [(c.type, str(c.amount)) for c in result.excluded_charges] == [
        ("ocean_freight", "250.00"),
        ("demurrage", "75.00"),
    ]
    assert result.shipment_id == "T-1"
    assert [step.name for step in result.trace][:1] == [expected.trace[0].name]


def _junk() -> st.SearchStrategy[Any]:
    return st.sampled_from(
        [
            None,
            "",
            " ",
            "\x1c",
            "1e5",
            "-1",
            " 12",
            "012",
            "1" * 21,
            "0." + "1" * 11,
            "abc",
            "USD",
            "EUR",
            "ZZ",
            "US",
            "art",
            "fine_art",
            "ocean_freight",
            "2024-02-30",
            "2024-01-15",
            1.5,
            -1,
            0,
            7,
            10**20,
            True,
            Decimal("1.5"),
            Decimal("NaN"),
            [],
            {},
            [{}],
            {"country": "US"},
        ]
    )


_PATHS = [
    ("id",),
    ("date",),
    ("currency",),
    ("mode",),
    ("incoterm",),
    ("payment_method",),
    ("expected_transit_days",),
    ("origin",),
    ("origin", "country"),
    ("destination", "country"),
    ("destination", "port"),
    ("invoice",),
    ("invoice", "amount"),
    ("invoice", "currency"),
    ("charges",),
    ("charges", 0),
    ("charges", 0, "type"),
    ("charges", 0, "amount"),
    ("charges", 0, "currency"),
    ("charges", 0, "extra"),
    ("goods", 0, "category"),
    ("goods", 0, "value"),
    ("goods", 0, "hs_code"),
    ("goods", 0, "description"),
    ("duties",),
    ("duties", 0, "type"),
    ("fx",),
    ("sum_insured",),
    ("transit_countries",),
    ("unknown",),
]


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    path=st.sampled_from(_PATHS),
    junk=_junk(),
)
def test_read_plain_accepts_only_what_the_models_accept(
    seed: int, path: tuple[Any, ...], junk: Any
) -> None:
    pack = PLAIN_PACKS[seed % len(PLAIN_PACKS)]
    reference = SHIPPED.pack_facts_reference(pack.id)
    _warm(reference)
    facts = _single_currency(facts_for(pack, random.Random(seed), seed))
    facts.setdefault("charges", []).append({"type": next(iter(pack.charge_types)), "amount": "1"})
    facts.setdefault("goods", []).append({"description": "item"})
    facts["duties"] = [{"type": "tax", "amount": "2"}]
    try:
        read_facts(copy.deepcopy(facts), reference)
    except FactsError:
        pass
    else:  # clean facts valued in one currency: the plain road reads them
        assert read_plain(copy.deepcopy(facts), reference) is not None
    target: Any = facts
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = junk
    try:
        expected = read_facts(copy.deepcopy(facts), reference)
    except FactsError:
        assert read_plain(copy.deepcopy(facts), reference) is None
        return
    plain = read_plain(copy.deepcopy(facts), reference)
    if plain is not None:
        assert read_facts(plain, reference) == expected
