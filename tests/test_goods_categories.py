"""One goods-category vocabulary (rules/reference/goods_categories.yaml): read into the
rule set, used by facts (a synonym is read as its category, an unknown name is refused at
its path with "did you mean"), and written by the corpus generator."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import RulesError, RuleSet, load_rules
from engine import facts as facts_module
from engine.compliance.corpus import GOODS, generate
from engine.errors import FactsError
from engine.facts import FactsReference, Shipment, read_facts
from tests.conftest import REFERENCE, ROOT, line_of, mini, repo, shipment

CATEGORIES_FILE = "rules/reference/goods_categories.yaml"


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(ROOT)


def reference_of(rules: RuleSet) -> FactsReference:
    return FactsReference(rules.currencies, rules.countries, None, rules.goods_categories)


def with_goods(*categories: str) -> dict[str, Any]:
    goods = [
        {"description": f"line {i}", "value": "100.00", "category": c}
        for i, c in enumerate(categories)
    ]
    return shipment(goods=goods)


def test_the_vocabulary_is_loaded_with_its_synonyms(rules: RuleSet) -> None:
    categories = rules.goods_categories
    # every name blue-harbour rates is a category of its own
    for name in ("fine_art", "foodstuffs", "pharmaceuticals", "general_cargo", "live_animals"):
        assert categories[name] == name
    # the names the corpus generator used to write are synonyms
    assert categories["art"] == "fine_art"
    assert categories["food"] == "foodstuffs"
    assert categories["pharma"] == "pharmaceuticals"
    assert categories["jewelry"] == "jewellery"


def test_every_category_a_shipped_pack_names_is_in_the_vocabulary(rules: RuleSet) -> None:
    # The published packs never change, so the vocabulary has to hold what they name.
    named: set[str] = set()
    for versions in rules.packs.values():
        for pack in versions:
            for table in pack.tables.values():
                for column, key in table.keys:
                    if "category" in key:
                        index = [c for c, _ in table.keys].index(column)
                        named.update(str(row[index]) for row in table.table.rows)
            for name, value in pack.parameters.items():
                if "categories" in name:
                    named.update(value)
    assert named  # blue-harbour's table and parameters were found
    assert all(rules.goods_categories.get(name) == name for name in named), named


def test_a_synonym_is_read_as_its_category_on_every_road(rules: RuleSet) -> None:
    reference = reference_of(rules)
    data = with_goods("art", "food", "electronics")
    wanted = ("fine_art", "foodstuffs", "electronics")
    from_mapping = read_facts(copy.deepcopy(data), reference)
    from_json = read_facts(json.dumps(data), reference)
    from_yaml = read_facts(json.dumps(data), reference, name="facts.yaml")  # YAML reads JSON
    for found in (from_mapping, from_json, from_yaml):
        assert tuple(g.category for g in found.goods) == wanted
    assert from_mapping == from_json == from_yaml
    assert from_json.canonical()["goods"][0]["category"] == "fine_art"


def test_an_unknown_category_is_a_facts_error_at_its_path(rules: RuleSet) -> None:
    reference = reference_of(rules)
    text = "\n".join(
        [
            "id: T-1",
            "date: 2024-01-15",
            "currency: USD",
            "mode: ocean",
            "origin: {country: CN}",
            "destination: {country: US}",
            'invoice: {amount: "1000.00"}',
            "goods:",
            "  - {description: Paintings, category: electronics}",
            "  - {description: Oil painting, category: fine_arts}",
        ]
    )
    with pytest.raises(FactsError) as info:
        read_facts(text, reference, name="facts.yaml")
    (problem,) = info.value.problems
    assert problem.code == "facts.unknown_category"
    assert problem.location.path == "goods[1].category"
    assert problem.location.line == 10
    assert "did you mean 'fine_art'?" in problem.message
    assert "pharmaceuticals" in problem.message  # the categories are listed


def test_a_synonym_is_read_as_its_category_on_the_fast_road_and_an_unknown_name_is_not(
    rules: RuleSet,
) -> None:
    reference = reference_of(rules)
    for written, read in (("fine_art", "fine_art"), ("art", "fine_art")):
        data = with_goods(written)
        for fast in (
            facts_module._fast_from_mapping(copy.deepcopy(data), reference),
            facts_module._fast_from_json(json.dumps(data), reference),
        ):
            assert fast is not None and fast.goods[0].category == read
    unknown = with_goods("arts_and_crafts")  # the models' road refuses it, with a suggestion
    assert facts_module._fast_from_mapping(copy.deepcopy(unknown), reference) is None
    assert facts_module._fast_from_json(json.dumps(unknown), reference) is None
    # A reference's own compiled validators (made from its second read) map synonyms too.
    for _ in range(3):
        shipment_ = read_facts(copy.deepcopy(with_goods("art", "food")), reference)
    assert [g.category for g in shipment_.goods] == ["fine_art", "foodstuffs"]
    assert reference.compiled.python  # the own validators were made and used


NAMES = st.sampled_from(
    ["fine_art", "art", "food", "foodstuffs", "toys", "fine_arts", "pharm", "cash", "zzz"]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=4))
def test_the_fast_and_slow_roads_agree_on_categories(categories: list[str]) -> None:
    rules = load_rules_once()
    # One reference for every example: from its second read it checks codes with its own
    # compiled validators (engine/facts.py `_compiled_for`), which must agree too.
    reference = _REFERENCE_ONCE.setdefault("reference", reference_of(rules))
    data = with_goods(*categories)
    slow: Shipment | None
    try:
        slow = facts_module._validate_by_models(copy.deepcopy(data), reference, None, "")
    except FactsError:
        slow = None
    for source in (copy.deepcopy(data), json.dumps(data)) * 2:
        try:
            found: Shipment | None = read_facts(source, reference)
        except FactsError:
            found = None
        assert found == slow
        if found is not None:
            assert [g.category for g in found.goods] == [
                rules.goods_categories[c] for c in categories
            ]


_ONCE: list[RuleSet] = []
_REFERENCE_ONCE: dict[str, FactsReference] = {}


def load_rules_once() -> RuleSet:
    if not _ONCE:
        _ONCE.append(load_rules(ROOT))
    return _ONCE[0]


def test_the_corpus_writes_only_vocabulary_categories(rules: RuleSet) -> None:
    written = {entry[0] for entry in GOODS}
    assert all(rules.goods_categories.get(name) == name for name in written), written
    seen = {
        line["category"]
        for facts in generate(300, 7)
        for line in facts.get("goods", [])
        if "category" in line
    }
    assert seen <= written and {"fine_art", "foodstuffs", "pharmaceuticals"} & seen


def test_valuing_reads_a_synonym_as_its_category() -> None:
    # blue-harbour rates foodstuffs as class 3; `food` used to be a rating gap.
    from engine import value

    rules = load_rules_once()
    facts = shipment(
        date="2025-06-02",
        goods=[{"description": "Green coffee", "category": "food", "value": "1000.00"}],
    )
    result = value(rules, facts, policy="blue-harbour")
    assert all(r.rule != "tables.commodity_class" for r in result.reasons)
    assert result.figures["base_rate"] is not None


def test_a_synonym_that_is_also_a_category_is_a_load_error() -> None:
    text = REFERENCE[CATEGORIES_FILE].replace(
        "synonyms: [clothing, garments, footwear]", "synonyms: [clothing, textiles, footwear]"
    )
    assert text != REFERENCE[CATEGORIES_FILE]
    with pytest.raises(RulesError) as info:
        load_rules(files=repo(mini(), extra={CATEGORIES_FILE: text}))
    (problem,) = info.value.problems
    assert problem.code == "reference.synonym"
    assert problem.location.line == line_of(text, "[clothing, textiles, footwear]")
    assert "`textiles` of `apparel` is already a category" in problem.message


def test_the_vocabulary_file_is_validated_by_its_schema() -> None:
    text = REFERENCE[CATEGORIES_FILE].replace("synonyms: [timber, lumber]", "synonyms: [Timber]")
    with pytest.raises(RulesError) as info:
        load_rules(files=repo(mini(), extra={CATEGORIES_FILE: text}))
    (problem,) = info.value.problems
    assert problem.location.file == CATEGORIES_FILE
    assert problem.location.line == line_of(text, "[Timber]")
    assert "'Timber'" in problem.message
