"""Rate tables (issue 11 item 4): named columns checked against keys, comparison and range
cells, text results, percent literals, rows in a CSV file beside the pack (located, locked,
hashed), and the warnings `tiv validate` prints. Figures computed by hand in comments."""

from __future__ import annotations

import hashlib
import itertools
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import RulesError, load_rules, run_examples, value
from engine.compiling.tables import CompiledTable
from engine.compliance.lock import LOCK_FILE, check_lock, write_lock
from engine.errors import Location, Problem
from tests.conftest import line_of, repo, run_cli, shipment

HERE = Path(__file__).parent / "packs" / "tabled"
PACK_TEXT = (HERE / "1.0.0.yaml").read_text()
CSV_TEXT = (HERE / "base_rate.csv").read_text()
PACK = "policies/tabled/1.0.0.yaml"
CSV = "policies/tabled/base_rate.csv"


def files(pack: str = PACK_TEXT, csv: str | None = CSV_TEXT) -> dict[str, str]:
    extra = {PACK: pack}
    if csv is not None:
        extra[CSV] = csv
    return repo(extra=extra)


def problems_of(pack: str = PACK_TEXT, csv: str | None = CSV_TEXT) -> list[Problem]:
    with pytest.raises(RulesError) as caught:
        load_rules(files=files(pack, csv))
    return list(caught.value.problems)


@pytest.fixture(scope="module")
def tabled():
    return load_rules(files=files())


def table(rules, name: str) -> CompiledTable:
    return rules.packs["tabled"][0].tables[name]


def test_the_test_pack_examples_hold(tabled) -> None:
    outcomes = run_examples(tabled, ["tabled@1.0.0"])
    assert len(outcomes) == 4
    assert [o.mismatches for o in outcomes if not o.passed] == []


def test_comparisons_and_ranges_at_their_ends(tabled) -> None:
    rates = table(tabled, "base_rate")

    def rate(kind: str, amount: str) -> Decimal | str | None:
        return rates.lookup({"class": kind, "value": Decimal(amount)})

    # `<= 100000` holds 100,000 itself (0.35% = 0.0035)
    assert rate("sea", "100000") == Decimal("0.0035")
    # `(100000, 1000000]`: 100,000.01 in, 1,000,000 in (0.30%), 1,000,000.01 out (> 1000000)
    assert rate("sea", "100000.01") == Decimal("0.0030")
    assert rate("sea", "1000000") == Decimal("0.0030")
    assert rate("sea", "1000000.01") == Decimal("0.0025")
    # `[0, 50000)` leaves 50,000 out; `[50000, 500000]` takes it: 0.45%
    assert rate("fast", "49999.99") == Decimal("0.0050")
    assert rate("fast", "50000") == Decimal("0.0045")
    assert rate("fast", "500000") == Decimal("0.0045")
    assert rate("fast", "500000.01") is None  # above every fast row: a gap
    assert rate("fast", "-1") is None  # below [0, 50000)
    # a comparison never matches text
    assert rates.lookup({"class": "sea", "value": "80000"}) is None
    assert rates.result_type == "number" and table(tabled, "mode_class").result_type == "text"
    assert table(tabled, "mode_class").lookup({"mode": "courier"}) == "fast"


def test_text_results_are_compared_in_conditions(tabled) -> None:
    # air: mode_class = "fast", so the `express` rule's `mode_class == "fast"` fires
    facts = shipment(mode="air", invoice={"amount": "20000.00"})
    result = value(tabled, facts, policy="tabled")
    assert [f.name for f in result.flags] == ["express"]
    # 20,000.00 in [0, 50000): 0.50%; tiv = 22,000.00; premium = 22,000.00 × 0.005 = 110.00
    assert Decimal(result.premium or "0") == Decimal("110.00")
    ocean = value(tabled, shipment(), policy="tabled")
    assert ocean.flags == []


def test_every_cell_keeps_its_place_in_traces(tabled) -> None:
    facts = shipment(invoice={"amount": "80000.00"})
    result = value(tabled, facts, policy="tabled")
    steps = [s for s in result.trace if s.kind == "table"]
    assert [s.name for s in steps] == ["mode_class", "base_rate"]
    mode, rate = steps
    # mode_class: the header is line 29 of the pack, `[ocean, sea]` the next line
    assert mode.source == f"{PACK}:{line_of(PACK_TEXT, '- [ocean, sea]')}"
    assert mode.value == "sea" and mode.inputs == {"mode": "ocean"}
    # base_rate: the CSV's second line (row 1); the rate is its third column
    assert rate.source == f"{CSV}:2"
    assert rate.inputs == {"class": "sea", "value": "80000.00"}
    assert rate.value == "0.0035"
    assert f"(cell {CSV}:2:3)" in rate.expression
    assert "value <= 100000" in rate.expression


def test_the_header_is_checked_against_keys() -> None:
    typo = PACK_TEXT.replace("- [mode, class]", "- [mood, class]")
    (found,) = problems_of(typo)
    assert found.code == "table.header"
    assert "did you mean `mode`" in found.message
    line = line_of(typo, "- [mood, class]")
    assert (found.location.file, found.location.line) == (PACK, line)
    assert found.location.col == typo.splitlines()[line - 1].index("mood") + 1

    (found,) = problems_of(csv=CSV_TEXT.replace("value,class,rate", "value,klass,rate"))
    assert found.code == "table.header" and "did you mean `class`" in found.message
    assert str(found.location) == f"{CSV}:1:2"

    (found,) = problems_of(csv=CSV_TEXT.replace("value,class,rate", "value,class,rate,note"))
    assert "`note` is not a key column" in found.message
    (found,) = problems_of(csv=CSV_TEXT.replace("value,class,rate", "value,rate"))
    assert "no column `class`" in found.message


def test_bad_cells_are_located_at_file_row_column() -> None:
    csv = CSV_TEXT.replace("> 1000000,sea,0.25%", "> a million,sea,0.25%")
    (found,) = problems_of(csv=csv)
    assert found.code == "table.cell" and str(found.location) == f"{CSV}:4:1"
    assert "not a valid cell" in found.message
    csv = CSV_TEXT.replace('"[50000, 500000]",fast,0.45%', '"[500000, 50000]",fast,0.45%')
    (found,) = problems_of(csv=csv)
    assert "holds no value" in found.message and str(found.location) == f"{CSV}:6:1"
    csv = CSV_TEXT.replace("*,land,0.40%", "*,land")
    (found,) = problems_of(csv=csv)
    assert found.code == "table.row" and found.location.line == 7
    csv = CSV_TEXT.replace("*,land,0.40%", "*,land,ask")
    (found,) = problems_of(csv=csv)
    assert found.code == "table.result_type" and str(found.location) == f"{CSV}:7:3"
    assert "mixes numbers" in found.message


def test_a_missing_csv_and_a_csv_outside_the_folder_are_refused() -> None:
    (found,) = problems_of(csv=None)
    assert found.location.file == PACK
    assert found.location.line == line_of(PACK_TEXT, "rows_from:")
    outside = PACK_TEXT.replace("rows_from: base_rate.csv", "rows_from: ../base_rate.csv")
    (found,) = problems_of(outside)
    assert found.location.path == "tables.base_rate.rows_from"


def test_the_csv_is_part_of_the_packs_hash() -> None:
    before = load_rules(files=files()).packs["tabled"][0]
    # the same rows, one rate changed: 0.35% -> 0.36%
    after = load_rules(files=files(csv=CSV_TEXT.replace("0.35%", "0.36%"))).packs["tabled"][0]
    assert before.sha256 != after.sha256
    assert before.files == after.files  # the YAML file itself is the same


def write_repo(root: Path, csv: str = CSV_TEXT) -> None:
    for path, text in files(csv=csv).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def test_a_published_packs_csv_is_locked(tmp_path: Path) -> None:
    write_repo(tmp_path)
    changes = write_lock(tmp_path, load_rules(tmp_path))
    assert CSV in changes.added and PACK in changes.added
    assert f"  {CSV}\n" in (tmp_path / LOCK_FILE).read_text()
    # a changed CSV of a published pack is caught like a changed pack
    (tmp_path / CSV).write_text(CSV_TEXT.replace("0.35%", "0.36%"))
    (problem,) = check_lock(tmp_path, load_rules(tmp_path))
    assert problem.code == "lock.immutable" and problem.location.file == CSV
    assert run_cli("--rules", tmp_path, "validate", cwd=tmp_path).returncode == 3


OVERLAPPING = """\
    match: first
    on_gap: refer
    gap_reason: no rate
    keys: {mode: shipment.mode, value: invoice}
    result: rate
    rows:
      - [mode, value, rate]
      - [ocean, "[0, 1000)", 1%]
      - [ocean, "[500, 2000)", 2%]
      - [ocean, "[3000, 4000]", 3%]
      - [ocean, "[3000, 3500]", 4%]
      - [air, "< 100", 5%]
      - [air, "> 100", 6%]
      - [road, "*", 7%]
"""


def warned_pack() -> str:
    block = "  base_rate:\n" + textwrap.indent(OVERLAPPING, "  ")
    start = PACK_TEXT.index("  base_rate:\n")
    end = PACK_TEXT.index("formulas:\n")
    without_examples = PACK_TEXT[: PACK_TEXT.index("examples:\n")]
    return PACK_TEXT[:start] + block + without_examples[end:]


def test_validate_warns_about_overlaps_unreachable_rows_and_gaps(tmp_path: Path) -> None:
    pack = warned_pack()
    rules = load_rules(files=repo(extra={PACK: pack.replace("rows_from", "#")}))
    warnings = rules.packs["tabled"][0].warnings()
    by_code = {(w.code, w.location.line) for w in warnings}
    assert all(w.severity == "warning" and w.location.file == PACK for w in warnings)
    # [0, 1000) and [500, 2000) share 500..1000 with different rates: an overlap, row 2
    assert ("table.overlap", line_of(pack, '"[500, 2000)"')) in by_code
    # [3000, 3500] lies inside the earlier [3000, 4000]: never chosen (match: first)
    assert ("table.unreachable", line_of(pack, '"[3000, 3500]"')) in by_code
    # ocean leaves 2000 up to 3000 unmatched (between [500, 2000) and [3000, 4000])
    gap = next(w for w in warnings if w.code == "table.gap" and "ocean" in w.message)
    assert "from 2000 below 3000" in gap.message
    assert gap.location.line == line_of(pack, '"[3000, 4000]"')
    # air: `< 100` and `> 100` both miss exactly 100
    air = next(w for w in warnings if w.code == "table.gap" and "air" in w.message)
    assert "= 100" in air.message
    assert len(warnings) == 4
    text = str(next(w for w in warnings if w.code == "table.unreachable"))
    assert text.startswith(f"{PACK}:{line_of(pack, '[3000, 3500]')}: warning: ")

    # tiv validate prints them as file:line: warning: ..., and still succeeds
    root = tmp_path / "repo"
    for path, content in repo(extra={PACK: pack.replace("rows_from", "#")}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    write_lock(root, load_rules(root))
    ran = run_cli("--rules", root, "validate", cwd=root)
    assert ran.returncode == 0, ran.stderr
    assert f"{PACK}:{line_of(pack, '[3000, 3500]')}: warning: table `base_rate`" in ran.stderr
    assert "4 warning(s)" in ran.stdout


def test_shipped_packs_have_no_table_warnings(shipped) -> None:
    assert [w for versions in shipped.packs.values() for p in versions for w in p.warnings()] == []


def test_warning_severity_prints_and_serialises() -> None:
    warning = Problem("table.gap", "no row", Location("p.yaml", 3), severity="warning")
    assert str(warning) == "p.yaml:3: warning: no row"
    assert warning.to_dict()["severity"] == "warning"
    assert "severity" not in Problem("x", "y").to_dict()


def test_the_positional_form_still_matches_as_before() -> None:
    pack = PACK_TEXT.replace(
        """    keys: {mode: shipment.mode}
    result: class
    rows:
      - [mode, class]
      - [ocean, sea]
      - [air, fast]
      - [courier, fast]
      - ["*", land]""",
        """    keys: {mode: shipment.mode}
    rows:
      - [ocean, 1]
      - ["*", 2.5%]""",
    )
    pack = pack.replace('when: mode_class == "fast"', "when: mode_class == 2")
    pack = pack.replace("keys: {class: mode_class, value: invoice}", "keys: {value: invoice}")
    csv = CSV_TEXT.replace("value,class,rate", "value,rate").replace(",sea,", ",")
    csv = "\n".join(line for line in csv.splitlines() if "fast" not in line and "land" not in line)
    rules = load_rules(files=files(pack, csv))
    mode_class = table(rules, "mode_class")
    assert mode_class.lookup({"mode": "ocean"}) == Decimal(1)
    assert mode_class.lookup({"mode": "air"}) == Decimal("0.025")  # 2.5% = 0.025
    assert mode_class.index is None  # a wildcard: rows are scanned


def test_an_audit_record_names_the_csv_and_replays_it(tmp_path: Path) -> None:
    from engine.compliance.audit import AuditError, AuditLog, replay

    write_repo(tmp_path)
    log = AuditLog(tmp_path / "audit.db")
    facts = shipment(invoice={"amount": "80000.00"})
    result = value(load_rules(tmp_path), facts, policy="tabled", audit=log)
    record = log.get(result.audit_id or "")
    used = {f.path: f for f in record.rule_files}
    # the trace cites the CSV row, so the record holds the CSV's bytes' sha256
    assert CSV in used and used[CSV].sha256 == hashlib.sha256(CSV_TEXT.encode()).hexdigest()
    report = replay(record, tmp_path)
    assert report.identical
    # a changed CSV (and no git history to read the recorded one from) stops the replay
    (tmp_path / CSV).write_text(CSV_TEXT.replace("0.35%", "0.36%"))
    with pytest.raises(AuditError, match=r"base_rate\.csv has changed"):
        replay(record, tmp_path)


def _range_table(bounds: list[Decimal], skip: int | None = None) -> CompiledTable:
    """A table of half-open ranges [b0, b1), [b1, b2), ... giving the row's index; the
    range `skip` left out."""
    from engine.compiling.tables import compile_table
    from engine.loading.yamlfile import load_yaml
    from engine.schema.models import Table

    rows = "".join(
        f'  - ["[{low}, {high})", {index}]\n'
        for index, (low, high) in enumerate(itertools.pairwise(bounds))
        if index != skip
    )
    text = (
        "match: first\non_gap: error\nkeys: {value: invoice}\nresult: band\n"
        "rows:\n  - [value, band]\n" + rows
    )
    loaded = load_yaml(text, "t.yaml")
    compiled, problems = compile_table("t", Table.model_validate(loaded.data), loaded, {})
    assert problems == []
    return compiled


@given(
    st.lists(
        st.decimals(min_value=-(10**6), max_value=10**6, places=2, allow_nan=False),
        min_size=3,
        max_size=12,
        unique=True,
    ),
    st.data(),
)
@settings(max_examples=60, deadline=None)
def test_half_open_ranges_pick_the_one_band_that_holds_a_value(bounds, data) -> None:
    bounds = sorted(bounds)
    table = _range_table(bounds)
    assert table.warnings() == []  # contiguous, disjoint: nothing to warn about
    probe = data.draw(st.decimals(min_value=bounds[0], max_value=bounds[-1], places=3))
    # the band is the number of bounds at or below the value, less one (bisect by hand)
    expected = sum(1 for b in bounds if b <= probe) - 1
    found = table.lookup({"value": probe})
    if probe == bounds[-1]:
        assert found is None  # the last range excludes its high end
    else:
        assert found == Decimal(expected)
    # leaving out a middle range is exactly one gap warning, at the row after it
    skip = (
        data.draw(st.integers(min_value=1, max_value=len(bounds) - 3)) if len(bounds) > 3 else None
    )
    if skip is not None:
        (gap,) = _range_table(bounds, skip).warnings()
        assert gap.code == "table.gap"
        assert f"from {bounds[skip]} below {bounds[skip + 1]}" in gap.message


def test_percent_literals_in_parameters() -> None:
    pack = PACK_TEXT.replace(
        "  margin_rate: 10%\n",
        "  margin_rate: {value: 12.5%, description: d}\n  bands: [1%, 0.25%]\n  label: 5% off\n",
    )
    parameters = load_rules(files=files(pack)).packs["tabled"][0].parameters
    # 12.5% = 0.125; [1%, 0.25%] = [0.01, 0.0025]; text that is not only a percent stays text
    assert parameters["margin_rate"] == Decimal("0.125")
    assert parameters["bands"] == (Decimal("0.01"), Decimal("0.0025"))
    assert parameters["label"] == "5% off"
