"""Loading a rule repository: every problem reported, each at file:line:col."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import pytest

from engine import MemorySource, RulesError, SelectionError, load_rules, value
from engine.schema import generated_schema, schema_path
from engine.schema.models import FILE_KINDS
from tests.conftest import ROOT, line_of, mini, repo, shipment

PACK = "policies/mini/1.0.0.yaml"


def problems_of(*packs: str, extra: dict[str, str] | None = None) -> list[tuple[str, int, str]]:
    with pytest.raises(RulesError) as info:
        load_rules(files=repo(*packs, extra=extra))
    return [(p.location.file, p.location.line, p.message) for p in info.value.problems]


def test_shipped_repository_loads(shipped) -> None:
    assert "standard" in shipped.packs
    assert shipped.currencies["JPY"] == 0 and shipped.currencies["KWD"] == 3
    assert "NO" in shipped.countries


def test_committed_schemas_match_the_models() -> None:
    for kind in FILE_KINDS:
        committed = json.loads(schema_path(kind).read_text())
        assert committed == generated_schema(kind), f"run `tiv schema --write` ({kind})"


def test_rule_files_point_editors_at_their_schema() -> None:
    for path in (ROOT / "policies").rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../../engine/schema/policy.schema.json"


def test_duplicate_key_is_an_error_at_its_line() -> None:
    line = "  margin: (invoice + freight) * margin_rate\n"
    text = mini(replace={line: line + "  margin: invoice\n"})
    found = problems_of(text)
    assert len(found) == 1
    assert found[0][:2] == (PACK, line_of(text, "  margin: invoice")) and "duplicate" in found[0][2]


def test_structure_errors_all_reported_with_lines() -> None:
    text = mini(
        replace={
            "status: published": "status: final",
            "  air_freight: {group: main_carriage}": "  air_freight: {grop: main_carriage}",
        }
    )
    found = problems_of(text)
    lines = {line for _, line, _ in found}
    assert line_of(text, "status: final") in lines
    assert line_of(text, "grop") in lines
    assert any("grop" in message for _, _, message in found)


def test_meaning_errors_all_reported_with_lines() -> None:
    text = mini(
        replace={
            "  freight: charges.main_carriage": "  freight: charges.main_carrige",
            "(invoice + freight) * margin_rate": "(invoice + fraight) * margin_rate",
        },
        rules="""\
        - id: bad-cond
          when: tiv * 2 > shipment.mode
          decide: refer
          reason: x
        """,
    )
    found = problems_of(text)
    by_line = {line: message for _, line, message in found}
    freight, margin = line_of(text, "main_carrige"), line_of(text, "fraight")
    assert "unknown name `charges.main_carrige`" in by_line[freight]
    assert "did you mean `charges.main_carriage`" in by_line[freight]
    assert "unknown name `fraight`" in by_line[margin]
    assert "cannot compare number with text" in by_line[line_of(text, "tiv * 2 > shipment.mode")]


def test_formula_used_before_defined() -> None:
    text = mini(
        replace={
            "  invoice: shipment.invoice.amount": "  invoice: shipment.invoice.amount + freight"
        }
    )
    ((_, line, message),) = problems_of(text)
    assert line == line_of(text, "  invoice:") and "uses `freight` before it is" in message


def test_type_error_in_formula() -> None:
    text = mini(
        replace={
            "invoice: shipment.invoice.amount": "invoice: shipment.invoice.amount + shipment.mode"
        }
    )
    ((_, line, message),) = problems_of(text)
    assert line == line_of(text, "  invoice:") and "`+` needs a number, got a text" in message


def test_exclude_charge_rule_may_not_read_formulas() -> None:
    text = mini(
        rules="""\
        - id: late
          for: charge
          when: tiv > 5
          exclude_charge: true
          reason: x
        """
    )
    ((_, line, message),) = problems_of(text)
    assert line == line_of(text, "when: tiv > 5") and "computed after charges are" in message


def test_overlapping_published_versions() -> None:
    first = mini()
    second = mini(
        replace={
            "version: 1.0.0": "version: 1.1.0",
            "effective_from: 2020-01-01": "effective_from: 2022-01-01",
        }
    )
    found = problems_of(first, second)
    assert len(found) == 1 and "overlaps mini@1.0.0" in found[0][2]
    assert found[0][0] == "policies/mini/1.1.0.yaml"


def test_versions_switch_on_effective_dates() -> None:
    first = mini(
        replace={
            "effective_from: 2020-01-01": "effective_from: 2020-01-01\neffective_to: 2022-01-01"
        }
    )
    second = mini(
        replace={
            "version: 1.0.0": "version: 1.1.0",
            "effective_from: 2020-01-01": "effective_from: 2022-01-01",
            "margin_rate: 0.10": "margin_rate: 0.20",
        }
    )
    rules = load_rules(files=repo(first, second))
    assert rules.select("mini", datetime.date(2021, 12, 31)).version == "1.0.0"
    assert rules.select("mini", datetime.date(2022, 1, 1)).version == "1.1.0"
    assert rules.select("mini@1.0.0", datetime.date(2030, 1, 1)).version == "1.0.0"


def test_drafts_are_not_selected_unless_asked() -> None:
    draft = mini(
        replace={
            "version: 1.0.0": "version: 2.0.0",
            "status: published": "status: draft",
            "effective_from: 2020-01-01": "effective_from: 2024-01-01",
        }
    )
    rules = load_rules(files=repo(mini(), draft))
    day = datetime.date(2025, 1, 1)
    assert rules.select("mini", day).version == "1.0.0"
    assert rules.select("mini", day, allow_draft=True).version == "2.0.0"
    with pytest.raises(SelectionError, match="draft"):
        rules.select("mini@2.0.0", day)


def test_selection_remembered_per_policy_day_and_draft_flag_gives_the_same_answers() -> None:
    # select() remembers its picks: asked again, in any order, each answer is unchanged,
    # the draft flag is part of the question, and a draft still needs it.
    draft = mini(
        replace={
            "version: 1.0.0": "version: 2.0.0",
            "status: published": "status: draft",
            "effective_from: 2020-01-01": "effective_from: 2024-01-01",
        }
    )
    rules = load_rules(files=repo(mini(), draft))
    day = datetime.date(2025, 1, 1)
    for _ in range(3):
        assert rules.select("mini", day, allow_draft=True).version == "2.0.0"
        assert rules.select("mini", day).version == "1.0.0"
        assert rules.select("mini", datetime.date(2023, 1, 1), allow_draft=True).version == "1.0.0"
        with pytest.raises(SelectionError, match="draft"):
            rules.select("mini@2.0.0", day)
        with pytest.raises(SelectionError, match="no published version"):
            rules.select("mini", datetime.date(2019, 12, 31))


def test_file_name_must_match_version() -> None:
    files = repo()
    files["policies/mini/1.0.1.yaml"] = mini()
    with pytest.raises(RulesError, match=r"does not match the file name 1\.0\.1\.yaml"):
        load_rules(files=files)


def test_python_tag_is_rejected() -> None:
    text = mini(replace={"title: Mini": "title: !!python/object/apply:os.system [echo]"})
    ((_, line, _),) = problems_of(text)
    assert line == line_of(text, "title:")


def test_example_expectation_that_fails_is_reported() -> None:
    from engine import run_examples

    text = (
        mini()
        + """\
examples:
  - name: wrong on purpose
    shipment:
      id: X
      date: 2024-01-01
      currency: USD
      mode: air
      origin: {country: CN}
      destination: {country: US}
      invoice: {amount: "100.00"}
      charges: []
      duties: []
    expect:
      total_insured_value: "111.00"
"""
    )
    rules = load_rules(files=repo(text))
    (outcome,) = run_examples(rules)
    # 100.00 × 1.10 = 110.00, not 111.00
    assert outcome.mismatches == ("total_insured_value: expected 111.00, got 110.00",)
    assert outcome.where.line == line_of(text, "- name: wrong on purpose")


class CountingSource(MemorySource):
    """A RuleSource that counts reads: valuing must not read rule files again."""

    def __init__(self, files: dict[str, str]) -> None:
        super().__init__(files)
        self.reads = 0

    def read(self, path: str) -> bytes:
        self.reads += 1
        return super().read(path)


def test_load_is_done_once() -> None:
    source = CountingSource(repo(mini()))
    rules = load_rules(source)
    after_load = source.reads
    assert after_load == 5  # four reference files and the pack
    for _ in range(3):
        # 1,000.00 × 1.10 = 1,100.00
        assert value(rules, shipment(), policy="mini").total_insured_value == Decimal("1100.00")
    assert source.reads == after_load
