"""The straight-line evaluator (engine.evaluating.straightline) against the interpreted path.

Each pack's generated function must give the interpreted path's valuation exactly (every
figure, exclusion, reason, flag and trace step, as JSON), or bail so that the interpreted
path values the shipment. These tests value the same facts both ways, on every shipped
pack version, on a seeded corpus and on hypothesis-generated shipments, and check that
the fast path does run for most of them (a generator that always bailed would agree too).
"""

from __future__ import annotations

import datetime
import random
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import RuleSet, TivError, load_rules, value
from engine.api import _prepare
from engine.compiling.pack import CompiledPack
from engine.evaluating.straightline import straight_line
from engine.evaluating.valuation import _evaluate, _evaluate_straight
from engine.explaining.trace import NullTracer, RecordingTracer
from engine.matching.compiled import CompiledMatcher
from tests.conftest import ROOT, load_mini, shipment
from tests.test_differential import RULES as DIFFERENTIAL_RULES
from tests.test_differential import corpus as differential_corpus

MATCHER = CompiledMatcher()
SHIPPED = load_rules(ROOT)
PACKS = [pack for versions in SHIPPED.packs.values() for pack in versions]
COUNTRIES = ["US", "DE", "GB", "CN", "FR", "JP", "IR", "KP", "UA", "BR", "SG", "AU", "ZZ"]
CATEGORIES = ["general_cargo", "fine_art", "antiques", "jewellery", "live_animals", "cash"]
INCOTERMS = ["EXW", "FOB", "CIF", "CIP", "DAP", "DDP", "CFR", "FCA"]


def both(rules: RuleSet, facts: Any, policy: str, trace: bool) -> tuple[Any, Any]:
    """(straight-line result or None when it bailed, interpreted result), each as JSON data
    or the error's problems."""
    shipment_, pack, day = _prepare(rules, facts, policy, None, True)
    line = straight_line(pack)
    assert line is not None, pack.ref
    make = RecordingTracer if trace else NullTracer
    try:
        fast: Any = _evaluate_straight(line, rules, pack, shipment_, day, MATCHER, make())
        fast = fast.model_dump(mode="json")
    except Exception:  # the interpreted path decides
        fast = None
    try:
        slow: Any = _evaluate(rules, pack, shipment_, as_of=day, matcher=MATCHER, tracer=make())[
            0
        ].model_dump(mode="json")
    except TivError as exc:
        slow = [str(problem) for problem in exc.problems]
    return fast, slow


def _amount(rng: random.Random) -> str:
    cents = rng.choice([rng.randrange(0, 5_000_000_00), rng.randrange(0, 3_000_00), 0])
    return str(Decimal(cents).scaleb(-rng.choice([0, 2, 3])))


def facts_for(pack: CompiledPack, rng: random.Random, index: int) -> dict[str, Any]:
    """Shipment facts exercising what packs read: charges of every type, declared duties,
    Incoterms, sums insured, transit countries, goods categories, foreign currencies."""
    kinds = list(pack.charge_types)
    foreign = rng.random() < 0.1
    facts: dict[str, Any] = {
        "id": f"S{index}",
        "date": str(datetime.date(rng.choice([2024, 2025, 2026]), rng.randint(1, 12), 15)),
        "currency": rng.choice(["USD", "USD", "EUR"]),
        "mode": rng.choice(["ocean", "air", "road"]),
        "origin": {"country": rng.choice(COUNTRIES[:-1])},
        "destination": {"country": rng.choice(COUNTRIES[:-1])},
        "payment_method": rng.choice(["prepaid", "collect"]),
        "invoice": {"amount": _amount(rng)},
        "charges": [
            {"type": rng.choice(kinds), "amount": _amount(rng)} for _ in range(rng.randint(0, 6))
        ],
        "goods": [],
    }
    if foreign:
        facts["charges"].append({"type": kinds[0], "amount": "100", "currency": "GBP"})
        facts["fx"] = {"GBP": "1.25"}
    if rng.random() < 0.8:  # the other currency's rate (a pack may convert a USD figure)
        other = {"USD": ("EUR", "1.1"), "EUR": ("USD", "0.9")}[facts["currency"]]
        facts["fx"] = {**facts.get("fx", {}), other[0]: other[1]}
    for _ in range(rng.randint(0, 3)):
        line: dict[str, Any] = {"description": "item"}
        if rng.random() < 0.7:
            line["hs_code"] = rng.choice(["847130", "970110", "010121"])
        if rng.random() < 0.6:
            line["category"] = rng.choice(CATEGORIES)
        if rng.random() < 0.5:
            line["value"] = _amount(rng)
        facts["goods"].append(line)
    if rng.random() < 0.6:
        facts["incoterm"] = rng.choice(INCOTERMS)
    if rng.random() < 0.4:
        facts["sum_insured"] = _amount(rng)
    if rng.random() < 0.4:
        facts["transit_countries"] = rng.sample(COUNTRIES[:-1], rng.randint(0, 3))
    if rng.random() < 0.3:
        facts["expected_transit_days"] = rng.randint(1, 90)
    duties = rng.random()
    if duties < 0.3:
        facts["duties"] = []
    elif duties < 0.6:
        facts["duties"] = [
            {"type": rng.choice(["import_duty", "tax", "customs_fee"]), "amount": _amount(rng)}
            for _ in range(rng.randint(1, 3))
        ]
    return facts


def test_every_shipped_pack_version_has_a_straight_line() -> None:
    assert PACKS
    for pack in PACKS:
        assert straight_line(pack) is not None, pack.ref


def test_every_shipped_example_agrees_and_most_take_the_straight_line() -> None:
    taken = total = 0
    for pack in PACKS:
        for example in pack.examples:
            if not isinstance(example.facts, dict):
                continue
            policy = f"{pack.id}@{pack.version}"
            for trace in (True, False):
                fast, slow = both(SHIPPED, example.facts, policy, trace)
                total += 1
                if fast is not None:
                    taken += 1
                    assert fast == slow, (example.facts_name, trace)
    # 53 of the 66 examples were valued on the straight line when this was written; the
    # others convert currencies, read absent facts or fail on purpose.
    assert total and taken >= total * 2 // 3, (taken, total)


def test_a_seeded_corpus_agrees_on_every_shipped_pack_version() -> None:
    for pack in PACKS:
        rng = random.Random(f"{pack.id}@{pack.version}")
        taken = valued = 0
        for index in range(150):
            facts = facts_for(pack, rng, index)
            try:
                fast, slow = both(SHIPPED, facts, f"{pack.id}@{pack.version}", index % 2 == 0)
            except TivError:
                continue  # facts the contract refuses: neither path runs
            valued += 1
            if fast is not None:
                taken += 1
                assert fast == slow, (pack.ref, facts)
        assert valued >= 100, (pack.ref, valued)
        assert taken >= valued // 2, (pack.ref, taken, valued)


@settings(max_examples=120, deadline=None)
@given(
    pack=st.sampled_from(PACKS),
    seed=st.integers(min_value=0, max_value=2**32),
    trace=st.booleans(),
)
def test_generated_shipments_agree(pack: CompiledPack, seed: int, trace: bool) -> None:
    facts = facts_for(pack, random.Random(seed), seed)
    try:
        fast, slow = both(SHIPPED, facts, f"{pack.id}@{pack.version}", trace)
    except TivError:
        return
    if fast is not None:
        assert fast == slow


# A pack reaching the corners: a gap-referring table, constants equal in value but not in
# exponent, a literal that looks like code, an arithmetic condition, a reject rule.
CORNERS = load_mini(
    """\
    - id: odd-name
      when: shipment.id == "x\\"); __import__('os').system('false'); (\\""
      decide: decline
      reason: never
    - id: big-freight
      when: charges.main_carriage * 4 > invoice + 0.00
      flag: freight_heavy
      reason: Freight above a quarter of the invoice
    - id: odd-charge
      for: charge
      when: charge.amount == 13.13
      reject_charge: true
      reason: Unlucky
    """,
    replace={
        "  margin: (invoice + freight) * margin_rate\n": (
            "  margin: (invoice + freight) * margin_rate\n"
            "  one: invoice * 1.0\n"
            "  two: invoice * 1.00 + (2 - 1.000)\n"
            '  rate: lookup("rates")\n'
        ),
        "rounding:\n": (
            "tables:\n"
            "  rates:\n"
            "    match: first\n"
            "    on_gap: refer\n"
            "    gap_reason: No rate for the destination\n"
            "    keys: {country: shipment.destination.country}\n"
            "    rows:\n"
            "      - [US, 0.5]\n"
            "      - [DE, 0.25]\n"
            "rounding:\n"
        ),
    },
)


def test_the_generated_source_holds_no_rule_text_and_constants_keep_their_exponent() -> None:
    pack = CORNERS.packs["mini"][-1]
    line = straight_line(pack)
    assert line is not None
    assert "__import__" not in line.source and "system" not in line.source
    result = value(CORNERS, shipment(), policy="mini")
    steps = {step.name: step.value for step in result.trace}
    assert steps["one"] == "1000.000"  # 1000.00 * 1.0
    assert steps["two"] == "1001.0000"  # 1000.00 * 1.00 + (2 - 1.000) = 1000.0000 + 1.000


def test_corners_agree_with_the_interpreted_path() -> None:
    cases = [
        shipment(),
        shipment(destination={"country": "FR"}),  # table gap: referred, tiv still made
        shipment(charges=[{"type": "ocean_freight", "amount": "13.13"}]),  # rejected
        shipment(charges=[{"type": "ocean_freight", "amount": "400"}]),  # freight heavy
        shipment(id="x\"); __import__('os').system('false'); (\""),
    ]
    for facts in cases:
        for trace in (True, False):
            try:
                fast, slow = both(CORNERS, facts, "mini", trace)
            except TivError:
                continue
            assert fast is None or fast == slow, facts
    # The common case does run on the straight line.
    assert both(CORNERS, shipment(), "mini", True)[0] is not None
    # A gap and a rejected charge are left to the interpreted path.
    assert both(CORNERS, cases[1], "mini", True)[0] is None
    assert both(CORNERS, cases[2], "mini", True)[0] is None


def test_an_error_is_the_interpreted_paths_error() -> None:
    # No rate for the destination: the interpreted path refers; so does `value`.
    result = value(CORNERS, shipment(destination={"country": "FR"}), policy="mini")
    assert result.decision == "refer"
    assert [reason.rule for reason in result.reasons] == ["tables.rates"]


def test_the_differential_corpus_agrees() -> None:
    # test_differential's pack negates comparisons, compares two facts, computes in `when`
    # and fires every rule on this corpus.
    taken = valued = 0
    for index, facts in enumerate(differential_corpus(600)):
        try:
            fast, slow = both(DIFFERENTIAL_RULES, facts, "mini", index % 2 == 0)
        except TivError:
            continue
        valued += 1
        if fast is not None:
            taken += 1
            assert fast == slow, facts
    assert valued >= 550 and taken >= valued * 9 // 10, (taken, valued)


def test_amounts_in_other_currencies_are_converted_on_the_straight_line() -> None:
    # standard@1.0.0 (uplift 10%); valued in USD, every amount written in EUR at 1.10:
    #   invoice 10,000.00 EUR = 11,000.00 USD; ocean freight 1,000.00 EUR = 1,100.00 USD;
    #   a declared duty of 500.00 EUR = 550.00 USD; goods 10,000.00 EUR = 11,000.00 USD.
    # TIV = (11,000.00 + 1,100.00) × 1.10 + 550.00 = 13,310.00 + 550.00 = 13,860.00
    facts = shipment(
        fx={"EUR": "1.10"},
        invoice={"amount": "10000.00", "currency": "EUR"},
        goods=[{"description": "pumps", "value": "10000.00", "currency": "EUR"}],
        charges=[{"type": "ocean_freight", "amount": "1000.00", "currency": "EUR"}],
        duties=[{"type": "import_duty", "amount": "500.00", "currency": "EUR"}],
    )
    for trace in (True, False):
        fast, slow = both(SHIPPED, facts, "standard@1.0.0", trace)
        assert fast is not None  # taken by the straight line, not left to the other path
        assert fast == slow
        assert fast["total_insured_value"] == "13860.00"
        if trace:
            converted = [s["name"] for s in fast["trace"] if s["kind"] == "convert"]
            assert converted == [
                "invoice.amount",
                "duties[0].amount",
                "charges[0].amount",
                "goods[0].value",
            ]
