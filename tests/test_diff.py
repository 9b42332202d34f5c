"""Semantic diffs of two pack versions: every kind of change, with file:line on both sides."""

from __future__ import annotations

import json
from pathlib import Path

from engine import MemorySource, load_rules
from engine.compliance.diff import Change, diff_documents, diff_packs, render_diff
from engine.loading.yamlfile import load_yaml
from tests.conftest import line_of, mini, repo, run_cli

RULES_A = """\
- id: big-invoice
  when: invoice > 100000
  decide: refer
  reason: Large.
- id: costly-freight
  when: freight > 1000
  flag: costly_freight
  reason: Freight is high.
- id: sanctioned
  when: shipment.destination.country == "KP"
  decide: decline
  reason: Sanctioned.
"""
RULES_B = """\
- id: big-invoice
  when: invoice > 200000
  decide: refer
  reason: Large.
- id: costly-freight
  when: freight>1000
  decide: refer
  reason: Freight is high.
- id: courier
  when: shipment.mode == "courier"
  flag: courier
  reason: Sent by courier.
"""

A = mini(RULES_A)
B = mini(
    RULES_B,
    replace={
        "version: 1.0.0": "version: 1.1.0",
        "status: published": "status: draft",
        "effective_from: 2020-01-01": "effective_from: 2021-01-01",
        "changelog: c": "changelog: margin 12% and detention counted",
        "  margin_rate: 0.10\n": "  margin_rate: 0.12\n  minimum: 100\n",
        "  air_freight: {group: main_carriage}\n": "  rail_freight: {group: main_carriage}\n",
        "  detention: {excluded: Detention is a penalty}": "  detention: {group: main_carriage}",
        "mode: half_up": "mode: half_even",
        "  margin: (invoice + freight) * margin_rate\n": (
            "  margin: (invoice+freight)*margin_rate\n"
        ),
        "  duties: declared_duties.total if exists(declared_duties.total) else 0\n": (
            "  surcharge: freight * 0\n"
        ),
        "tiv: round(invoice + freight + margin + duties)": (
            "tiv: round(invoice + freight + margin + surcharge)"
        ),
        "components: [invoice, freight, margin, duties]": (
            "components: [invoice, freight, margin, surcharge]"
        ),
    },
)
FILE_A = "policies/mini/1.0.0.yaml"
FILE_B = "policies/mini/1.1.0.yaml"


def at(file: str, text: str, fragment: str) -> str:
    return f"{file}:{line_of(text, fragment)}"


def both(fragment_a: str, fragment_b: str) -> tuple[str, str]:
    return at(FILE_A, A, fragment_a), at(FILE_B, B, fragment_b)


def test_a_diff_with_changes_of_every_kind() -> None:
    files = repo(A, B)
    rules = load_rules(files=files)
    diff = diff_packs(rules, MemorySource(files), "mini@1.0.0", "mini@1.1.0")
    found = {(c.section, c.name): c for c in diff.changes}

    def check(section: str, name: str, kind: str, before, after, where: tuple[str, str]) -> None:
        change = found.pop((section, name))
        assert (change.kind, change.before, change.after) == (kind, before, after), change
        assert (change.before_at, change.after_at) == where, change

    check("version", "status", "changed", "published", "draft",
          both("status:", "status:"))  # fmt: skip
    check("version", "effective_from", "changed", "2020-01-01", "2021-01-01",
          both("effective_from", "effective_from"))  # fmt: skip
    check("provenance", "changelog", "changed", "c", "margin 12% and detention counted",
          both("provenance:", "provenance:"))  # fmt: skip
    # Parameters: a figure changed, one added (no line on the left).
    check("parameters", "margin_rate", "changed", "0.10", "0.12",
          both("margin_rate:", "margin_rate:"))  # fmt: skip
    check("parameters", "minimum", "added", None, "100", ("", at(FILE_B, B, "minimum")))
    # Charge treatment: a type counted instead of excluded, one removed, one added.
    check("charge_types", "detention", "changed", "excluded: Detention is a penalty",
          "counted in main_carriage", both("  detention:", "  detention:"))  # fmt: skip
    check("charge_types", "air_freight", "removed", "counted in main_carriage", None,
          (at(FILE_A, A, "air_freight"), ""))  # fmt: skip
    check("charge_types", "rail_freight", "added", None, "counted in main_carriage",
          ("", at(FILE_B, B, "rail_freight")))  # fmt: skip
    check("rounding", "mode", "changed", "half_up", "half_even", both("mode:", "mode:"))
    # Formulas: one removed, one added, one changed; `margin` only reformatted: no change.
    check("formulas", "duties", "removed",
          "declared_duties.total if exists(declared_duties.total) else 0", None,
          (at(FILE_A, A, "  duties:"), ""))  # fmt: skip
    check("formulas", "surcharge", "added", None, "freight * 0",
          ("", at(FILE_B, B, "surcharge:")))  # fmt: skip
    check("formulas", "tiv", "changed", "round(invoice + freight + margin + duties)",
          "round(invoice + freight + margin + surcharge)",
          both("tiv: round", "tiv: round"))  # fmt: skip
    check("result", "components", "changed", ["invoice", "freight", "margin", "duties"],
          ["invoice", "freight", "margin", "surcharge"],
          both("components:", "components:"))  # fmt: skip
    # Rules: a condition changed, an effect changed (the reformatted condition is not a
    # change), one removed, one added.
    check("rules", "big-invoice.when", "changed", "invoice > 100000", "invoice > 200000",
          both("invoice > 100000", "invoice > 200000"))  # fmt: skip
    # (the effect's line: the one after the condition, in both files)
    check("rules", "costly-freight.effect", "changed", "flag costly_freight", "decide refer",
          (at(FILE_A, A, "flag: costly_freight"),
           f"{FILE_B}:{line_of(B, 'freight>1000') + 1}"))  # fmt: skip
    removed = found.pop(("rules", "sanctioned"))
    assert removed.kind == "removed" and removed.before["effect"] == "decide decline"
    assert removed.before_at == at(FILE_A, A, "id: sanctioned")
    added = found.pop(("rules", "courier"))
    assert added.kind == "added" and added.after["when"] == 'shipment.mode == "courier"'
    assert added.after_at == at(FILE_B, B, "id: courier")
    assert found == {}, found  # nothing else: `margin` and `freight>1000` are the same

    text = render_diff(diff)
    assert "mini@1.0.0 → mini@1.1.0" in text
    assert "  ~ margin_rate: 0.10 → 0.12" in text
    assert f"      {at(FILE_A, A, 'margin_rate:')} → {at(FILE_B, B, 'margin_rate:')}" in text
    assert "  - air_freight: counted in main_carriage (removed)" in text
    assert "changelog of mini@1.1.0: margin 12% and detention counted" in text
    assert text.rstrip().endswith("17 change(s): 4 added, 3 removed, 10 changed")
    data = json.loads(json.dumps(diff.to_dict()))
    assert data["summary"] == {"added": 4, "removed": 3, "changed": 10}


def test_the_same_meaning_written_differently_is_no_change() -> None:
    other = mini(
        replace={
            "version: 1.0.0": "version: 1.0.1",
            "effective_from: 2020-01-01": "effective_from: 2020-01-01\neffective_to: 2030-01-01",
            "  margin_rate: 0.10\n": "  margin_rate: {value: 0.1}\n",
            "  margin: (invoice + freight) * margin_rate": (
                "  margin: ((invoice + freight)) * margin_rate"
            ),
        }
    ).replace("effective_to: 2030-01-01\n", "")
    files = repo(mini(), other.replace("status: published", "status: draft"))
    diff = diff_packs(load_rules(files=files), MemorySource(files), "mini@1.0.0", "mini@1.0.1")
    assert [(c.section, c.name) for c in diff.changes] == [("version", "status")]


def test_sections_the_engine_does_not_know_yet_diff_row_by_row() -> None:
    # Rate tables and premiums are coming; the diff keys rows by id, name or text fields.
    before = """\
premium:
  minimum: 50.00
  rates:
    - {category: electronics, mode: ocean, rate: 0.0035}
    - {category: apparel, mode: ocean, rate: 0.0020}
    - {category: art, mode: air, rate: 0.0100}
"""
    after = """\
premium:
  minimum: 50
  rates:
    - {category: apparel, mode: ocean, rate: 0.0025}
    - {category: electronics, mode: ocean, rate: 0.0035}
    - {category: toys, mode: ocean, rate: 0.0030}
  taxes: [{name: ipt, rate: 0.12}]
"""
    changes = diff_documents(load_yaml(before, "a.yaml"), load_yaml(after, "b.yaml"))
    summary = [(c.kind, c.name, c.before, c.after, c.before_at, c.after_at) for c in changes]
    assert summary == [
        ("changed", "rates[category=apparel, mode=ocean].rate", "0.0020", "0.0025",
         "a.yaml:5", "b.yaml:4"),
        ("removed", "rates[category=art, mode=air]",
         {"category": "art", "mode": "air", "rate": "0.0100"}, None, "a.yaml:6", ""),
        ("added", "rates[category=toys, mode=ocean]", None,
         {"category": "toys", "mode": "ocean", "rate": "0.0030"}, "", "b.yaml:6"),
        ("added", "taxes", None, [{"name": "ipt", "rate": "0.12"}], "", "b.yaml:7"),
    ]  # fmt: skip
    assert all(isinstance(c, Change) and c.section == "premium" for c in changes)


def test_diff_on_the_command_line(tmp_path: Path) -> None:
    for path, text in repo(A, B).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    run = ("--rules", str(tmp_path), "diff")
    proc = run_cli(*run, "mini@1.0.0", "mini@1.1.0", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["changed"] == 10
    proc = run_cli(*run, "mini", "mini@1.1.0")
    assert proc.returncode == 64 and "PACK@VERSION" in proc.stderr
    proc = run_cli(*run, "mini@1.0.0", "mini@9.9.9")
    assert proc.returncode == 2 and "no version 9.9.9" in proc.stderr


def test_rate_table_rows_written_as_lists_are_keyed_by_their_text_cells() -> None:
    table = """\
tables:
  base_rate:
    keys: {mode: shipment.mode, route: route}
    rows:
      - [ocean, "*", 0.0030]
      - [ocean, north_america, 0.0025]
      - [air, europe, 0.0020]
"""
    moved = table.replace("0.0025]", "0.0028]").replace("[air, europe,", "[air, asia,")
    changes = diff_documents(load_yaml(table, "a.yaml"), load_yaml(moved, "b.yaml"))
    assert [(c.kind, c.name, c.before, c.after, c.after_at) for c in changes] == [
        ("changed", "base_rate.rows[ocean, north_america]", ["ocean", "north_america", "0.0025"],
         ["ocean", "north_america", "0.0028"], "b.yaml:6"),
        ("removed", "base_rate.rows[air, europe]", ["air", "europe", "0.0020"], None, ""),
        ("added", "base_rate.rows[air, asia]", None, ["air", "asia", "0.0020"], "b.yaml:7"),
    ]  # fmt: skip
    assert {c.section for c in changes} == {"tables"}
