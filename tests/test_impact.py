"""Impact analysis: counts and exact statistics checked against a hand-built corpus."""

from __future__ import annotations

import csv
import io
import json
import shutil
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from engine import Valuation, load_rules, value
from engine.api import value_versions
from engine.compliance.corpus import generate
from engine.compliance.impact import details_csv, impact, premium_of, render_impact, statistics
from engine.errors import TivError
from tests.conftest import ROOT, mini, repo, run_cli, shipment

BEFORE = mini()
AFTER = mini(
    "- id: big-invoice\n  when: invoice > 100000\n  decide: refer\n  reason: Large.\n",
    replace={
        "version: 1.0.0": "version: 1.1.0",
        "status: published": "status: draft",
        "  margin_rate: 0.10": "  margin_rate: 0.12",
        "  detention: {excluded: Detention is a penalty}": (
            "  detention: {group: main_carriage}\n  courier_fee: {group: main_carriage}"
        ),
    },
)
FILES = repo(BEFORE, AFTER)

# Under 1.0.0, TIV = (invoice + counted charges) × 1.10; under the 1.1.0 draft × 1.12,
# detention counts, courier_fee is a known charge type, and invoices over 100,000 refer.
CORPUS = [
    # 1: 1,000.00 × 1.10 = 1,100.00 → × 1.12 = 1,120.00: +20.00
    shipment(id="S1"),
    # 2: 2,500.00 × 1.10 = 2,750.00 → 2,800.00: +50.00
    shipment(id="S2", invoice={"amount": "2000.00"},
             charges=[{"type": "ocean_freight", "amount": "500.00"}]),
    # 3: detention left out, 1,100.00 → counted, 1,100.00 × 1.12 = 1,232.00: +132.00
    shipment(id="S3", charges=[{"type": "detention", "amount": "100.00"}]),
    # 4: 220,000.00 → 224,000.00: +4,000.00, and accept → refer
    shipment(id="S4", invoice={"amount": "200000.00"}),
    # 5: in yen, no decimals: 11,000 → 11,200: +200 JPY
    shipment(id="S5", currency="JPY", invoice={"amount": "10000"}),
    None,  # a blank line, skipped
    # 7: courier_fee is unknown to 1.0.0 (fails); 1,050.00 × 1.12 = 1,176.00 under 1.1.0
    shipment(id="S6", charges=[{"type": "courier_fee", "amount": "50.00"}]),
    "this line is not JSON",
    # 9: nothing to insure, 0.00 under both: unchanged
    shipment(id="S8", invoice={"amount": "0.00"}),
]  # fmt: skip


def write_corpus(path: Path, items: list) -> Path:
    lines = []
    for item in items:
        lines.append("" if item is None else item if isinstance(item, str) else json.dumps(item))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_counts_and_statistics_of_a_hand_built_corpus(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", CORPUS)
    report, details = impact(FILES, "mini@1.0.0", "mini@1.1.0", corpus)
    assert (report.shipments, report.valued, report.unreadable) == (7, 6, 1)
    assert (report.changed, report.unchanged, report.tiv_changed) == (6, 1, 5)
    assert report.failed_before_only == 1 and report.failed_after_only == 0
    assert report.failures[0].line == 7 and "courier_fee" in report.failures[0].error
    assert report.decision_flips == {"accept → refer": 1}
    assert report.premium_changed is None and report.premium_change is None

    usd = report.tiv_change["USD"]
    # changes 20.00, 50.00, 132.00, 4,000.00: total 4,202.00, mean 4,202.00 / 4 = 1,050.50,
    # median (50.00 + 132.00) / 2 = 91.00, p95 the value at rank ceil(0.95 × 4) = 4
    assert usd.count == 4
    assert Decimal(usd.total) == Decimal("4202.00") and Decimal(usd.mean) == Decimal("1050.50")
    assert Decimal(usd.median) == Decimal("91.00") and Decimal(usd.p95) == Decimal("4000.00")
    assert (usd.min, usd.max) == ("20.00", "4000.00")
    jpy = report.tiv_change["JPY"]
    assert (jpy.count, jpy.total, jpy.mean, jpy.max) == (1, "200", "200", "200")
    assert report.currency_minor_units == {"JPY": 0, "USD": 2}
    # relative: four shipments +1.8181...% (20/1,100, 50/2,750, 4,000/220,000, 200/11,000)
    # and one +12% (132/1,100)
    percent = report.tiv_change_percent
    assert percent is not None and percent.count == 5
    assert Decimal(percent.max) == 12 and percent.median.startswith("1.818181818")

    by_id = {d.shipment_id: d for d in details}
    assert [d.line for d in details] == [1, 2, 3, 4, 5, 7]
    assert (by_id["S4"].decision_before, by_id["S4"].decision_after) == ("accept", "refer")
    assert (by_id["S3"].tiv_before, by_id["S3"].tiv_after, by_id["S3"].tiv_change) == (
        "1100.00",
        "1232.00",
        "132.00",
    )
    assert by_id["S6"].tiv_before == "" and by_id["S6"].tiv_after == "1176.00"
    assert "unknown charge type" in by_id["S6"].error_before
    rows = list(csv.DictReader(io.StringIO(details_csv(details))))
    assert len(rows) == 6 and rows[3]["tiv_change"] == "4000.00"

    text = render_impact(report)
    assert "changed: 6 (85.7%); unchanged: 1" in text
    assert "accept → refer: 1" in text and "neither version computes a premium" in text


def test_several_processes_give_the_same_report_as_one(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", CORPUS)
    one = impact(FILES, "mini@1.0.0", "mini@1.1.0", corpus, workers=1)
    two = impact(FILES, "mini@1.0.0", "mini@1.1.0", corpus, workers=2, chunk=2)
    assert two[0].workers == 2
    assert one[0].model_dump(exclude={"workers"}) == two[0].model_dump(exclude={"workers"})
    assert one[1] == two[1]


def test_a_generated_corpus_against_the_shipped_pack_and_a_draft(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for folder in ("policies", "rules", "examples"):
        shutil.copytree(ROOT / folder, root / folder)
    pack = (root / "policies/standard/1.0.0.yaml").read_text()
    draft = pack.replace("version: 1.0.0", "version: 1.2.0").replace(
        "status: published", "status: draft"
    )
    assert "    value: 0.10\n" in draft
    (root / "policies/standard/1.2.0.yaml").write_text(
        draft.replace("    value: 0.10\n", "    value: 0.11\n")
    )
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(s) + "\n" for s in generate(120, 5)))
    seen = []
    single, rows = impact(root, "standard@1.0.0", "standard@1.2.0", corpus,
                          progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert seen[0] == (0, 120) and seen[-1] == (120, 120)
    # A higher margin raises every TIV that is not zero, and changes nothing else.
    assert single.valued == 120 and single.changed == single.tiv_changed == 120
    assert all(Decimal(r.tiv_change) > 0 for r in rows) and single.decision_flips == {}
    multi, rows_multi = impact(root, "standard@1.0.0", "standard@1.2.0", corpus, workers=2,
                               chunk=40)  # fmt: skip
    assert single.model_dump(exclude={"workers"}) == multi.model_dump(exclude={"workers"})
    assert rows == rows_multi


def test_impact_on_the_command_line(tmp_path: Path) -> None:
    for path, text in FILES.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    corpus = write_corpus(tmp_path / "corpus.jsonl", CORPUS)
    out = tmp_path / "changes.csv"
    proc = run_cli(
        "--rules", str(tmp_path), "impact", "mini@1.0.0", "mini@1.1.0", "--corpus",
        str(corpus), "--details", str(out), "--format", "json", "--workers", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
    assert json.loads(proc.stdout)["changed"] == 6
    assert len(out.read_text().splitlines()) == 7


def test_premium_is_read_when_a_result_has_one() -> None:
    assert premium_of(SimpleNamespace()) is None  # type: ignore[arg-type]
    assert premium_of(SimpleNamespace(premium="12.50")) == Decimal("12.50")  # type: ignore[arg-type]
    nested = SimpleNamespace(premium=SimpleNamespace(amount="7.125"))
    assert premium_of(nested) == Decimal("7.125")  # type: ignore[arg-type]


AMOUNTS = st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-(10**9),
                      max_value=10**9)  # fmt: skip


@given(st.lists(AMOUNTS, min_size=1, max_size=60))
def test_statistics_are_exact_and_ordered(values: list[Decimal]) -> None:
    stats = statistics(values)
    assert Decimal(stats.total) == sum(values, Decimal(0))
    assert Decimal(stats.min) <= Decimal(stats.median) <= Decimal(stats.max)
    assert Decimal(stats.p95) in values  # nearest rank: always a value that occurred
    ordered = sorted(values)
    # at least 95% of the values are at or below p95, and it is the smallest such value
    rank = sum(1 for v in ordered if v <= Decimal(stats.p95))
    assert rank * 100 >= 95 * len(values)
    assert sum(1 for v in ordered if v < Decimal(stats.p95)) * 100 < 95 * len(values)


def test_value_versions_reads_once_and_gives_what_value_gives_one_by_one() -> None:
    rules = load_rules(ROOT)
    policies = ["standard@1.0.0", "standard@1.1.0"]
    mixed = ["standard@1.1.0", "blue-harbour"]
    corpus = list(generate(60, 3))
    corpus.append({**corpus[0], "charges": [{"type": "unknown_fee", "amount": "1.00"}]})
    for facts in corpus:
        for refs in (policies, mixed):
            together = value_versions(rules, facts, refs, allow_draft=True, trace=True)
            for ref, got in zip(refs, together, strict=True):
                try:
                    alone = value(rules, facts, policy=ref, allow_draft=True)
                except TivError as error:
                    assert isinstance(got, TivError) and str(got) == str(error)
                    continue
                assert isinstance(got, Valuation), (ref, got)
                assert got.model_dump_json() == alone.model_dump_json()
