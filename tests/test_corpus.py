"""The synthetic corpus: reproducible, varied, and valid against the shipped rules."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from pathlib import Path

import pytest

from engine import RuleSet, read_facts, value
from engine.compliance.corpus import generate, shipment
from engine.facts import INCOTERMS, MODES, FactsReference
from tests.conftest import run_cli

N = 250


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return list(generate(N, 2024))


def test_the_same_seed_gives_the_same_shipments_and_any_prefix_alone() -> None:
    assert list(generate(30, 9)) == list(generate(30, 9))
    assert list(generate(10, 9)) == list(generate(30, 9))[:10]
    assert shipment(9, 17) == list(generate(18, 9))[17]
    assert list(generate(10, 9)) != list(generate(10, 10))
    assert list(generate(0, 9)) == []


def test_amounts_are_decimal_text_never_numbers(corpus: list[dict]) -> None:
    def floats(text: str) -> float:
        raise AssertionError(f"a JSON number with a fraction: {text}")

    for facts in corpus:
        json.loads(json.dumps(facts), parse_float=floats)
        assert isinstance(facts["invoice"]["amount"], str)
        assert all(isinstance(c["amount"], str) for c in facts["charges"])


def test_every_shipment_is_valid_and_values_under_the_shipped_standard_pack(
    corpus: list[dict], shipped: RuleSet
) -> None:
    pack = shipped.select("standard", datetime.date(2025, 1, 1))
    reference = FactsReference(shipped.currencies, shipped.countries, frozenset(pack.charge_types))
    basis: Counter[str] = Counter()
    for facts in corpus:
        read_facts(facts, reference)  # raises FactsError with the path if not
        basis[value(shipped, facts, policy="standard", trace=False).duties_basis] += 1
    # Duties declared, and left out to be estimated from country rules.
    assert basis["declared"] and basis["estimated"]


def test_the_corpus_covers_what_valuations_vary_on(corpus: list[dict], shipped: RuleSet) -> None:
    modes = Counter(f["mode"] for f in corpus)
    assert set(modes) == set(MODES)
    assert len({f.get("incoterm") for f in corpus} - {None}) == len(INCOTERMS)
    assert any("incoterm" not in f for f in corpus)
    currencies = {f["currency"] for f in corpus}
    places = {shipped.currencies[c] for c in currencies}
    assert places == {0, 2, 3}  # yen-like and dinar-like currencies too
    assert any("currency" in f["invoice"] and f["fx"] for f in corpus)  # foreign invoices
    kinds = Counter(c["type"] for f in corpus for c in f["charges"])
    assert kinds["detention"] and kinds["demurrage"] and kinds["ocean_freight"]
    assert kinds["air_freight"] and kinds["rail_freight"] and kinds["road_freight"]
    lanes = {(f["origin"]["country"], f["destination"]["country"]) for f in corpus}
    assert len(lanes) > 20
    goods = [g for f in corpus for g in f["goods"]]
    assert any("hs_code" not in g for g in goods) and any("category" not in g for g in goods)
    assert len({g.get("category") for g in goods}) >= 10
    assert any(f.get("duties") == [] for f in corpus)
    assert any("sum_insured" in f for f in corpus)
    # Duties left out only where country rules can estimate them.
    assert {f["destination"]["country"] for f in corpus if "duties" not in f} == {"US"}


def test_duties_estimated_towards_every_country_with_rules_value(shipped: RuleSet) -> None:
    days = (datetime.date(2025, 1, 1), datetime.date(2025, 12, 31))
    countries = [
        c for c in shipped.duty_rules if all(shipped.duty_rules_for(c, d)[0] for d in days)
    ]
    assert "US" in countries
    estimated = 0
    for facts in generate(150, 8, estimate_in=countries):
        result = value(shipped, facts, policy="standard", trace=False)
        estimated += result.duties_basis == "estimated"
    assert estimated > 25


def test_estimated_duties_go_only_to_the_countries_named() -> None:
    shipments = list(generate(200, 1, estimate_in=()))
    assert all("duties" in f for f in shipments)


def test_corpus_generate_on_the_command_line(tmp_path: Path) -> None:
    run = ("corpus", "generate", "--n", "25", "--seed", "4")
    first = run_cli(*run)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 25 and json.loads(lines[0])["id"] == "SYN-4-0000001"
    out = tmp_path / "c.jsonl"
    second = run_cli(*run, "-o", str(out))
    assert second.returncode == 0 and second.stdout == "" and second.stderr == ""
    assert out.read_text() == first.stdout
