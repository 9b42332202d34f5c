"""`tiv batch`: order, error rows, the CSV mapping, workers, and resuming after kill -9."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.batch import BatchOptions, progress_path, run_batch
from engine.compliance import audit
from tests.conftest import ROOT, Ran, run_cli, shipment

TIV = (sys.executable, "-m", "engine.cli", "--rules", str(ROOT))


def facts(number: int) -> dict[str, Any]:
    """Shipment `number`: invoice 1000 + number, freight 100.05 (+ 1 per number mod 7)."""
    return shipment(
        id=f"B-{number}",
        date="2025-03-14",
        invoice={"amount": f"{1000 + number}.10"},
        charges=[{"type": "ocean_freight", "amount": f"{100 + number % 7}.05"}],
    )


def expected_tiv(number: int) -> str:
    """The standard pack's figure for `facts(number)`, computed here by hand's rules:
    margin = (invoice + freight) x 0.10; TIV = (invoice + freight) x 1.10, half up."""
    from decimal import ROUND_HALF_UP, Decimal

    base = Decimal(f"{1000 + number}.10") + Decimal(f"{100 + number % 7}.05")
    return str((base * Decimal("1.10")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_expected_tiv_matches_the_worked_figure() -> None:
    # invoice 1000.10, freight 100.05: margin 110.015; TIV 1210.165 -> 1210.17
    assert expected_tiv(0) == "1210.17"


def write_jsonl(path: Path, count: int, bad: dict[int, str] | None = None) -> None:
    """`count` rows; `bad` maps a row number to the raw text to put there instead."""
    lines = []
    for number in range(count):
        lines.append((bad or {}).get(number) or json.dumps(facts(number)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiv(*args: str) -> Ran:
    """`tiv batch` in process; one worker unless the test says otherwise (a process pool
    costs a second or two of start-up, and is tested where it is the point)."""
    if "--workers" not in args:
        args = (*args, "--workers", "1")
    return run_cli("--rules", ROOT, *args)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rows_in_input_order_with_error_rows(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [json.dumps(facts(n)) for n in range(250)]
    bad_amount = facts(3)
    bad_amount["invoice"]["amount"] = "-1"
    rows[3] = json.dumps(bad_amount)
    rows[10] = "not json at all"
    rows[11] = '{"id": "cut off'
    rows.insert(20, "")  # a blank line is not a row, but it counts as a line
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = tiv("batch", str(source), "--policy", "standard", "-o", str(out), "--workers", "1")
    assert proc.returncode == 2, proc.stderr
    assert "250 rows, 247 valued, 3 failed" in proc.stderr
    results = read_jsonl(out)
    assert [r["row"] for r in results] == list(range(1, 251))
    # Rows after the blank line (line 21) sit one line further down.
    assert results[19]["line"] == 20 and results[20]["line"] == 22
    errors = {r["row"]: r["error"] for r in results if "error" in r}
    assert set(errors) == {4, 11, 12}
    assert errors[4]["problems"][0]["path"] == "invoice.amount"
    assert errors[11]["problems"][0]["code"] == "facts.type"
    assert errors[12]["problems"][0]["code"] == "facts.syntax"
    for result in results:
        if "valuation" in result:
            number = int(result["valuation"]["shipment_id"][2:])
            assert result["valuation"]["total_insured_value"] == expected_tiv(number)
    # A finished run leaves a complete ledger; --resume then has nothing to do.
    ledger = json.loads(progress_path(out).read_text())
    assert ledger["complete"] and ledger["rows_done"] == 250 and ledger["failed"] == 3
    again = tiv("batch", str(source), "--policy", "standard", "-o", str(out), "--resume")
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_two_workers_write_exactly_what_one_does_and_share_the_audit_log(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 350, bad={5: '{"id": 1}', 320: "{}"})
    one, two = tmp_path / "out1.jsonl", tmp_path / "out2.jsonl"
    store = tmp_path / "audit.sqlite"
    summary = run_batch(ROOT, BatchOptions(input=source, output=one, policy="standard"))
    assert (summary.rows, summary.failed) == (350, 2)
    options = BatchOptions(  # chunks of 100, 100, 100, 50: both workers get some
        input=source, output=two, policy="standard", workers=2, audit=store, chunk=100
    )
    summary = run_batch(ROOT, options)
    assert (summary.rows, summary.failed) == (350, 2)
    # The same bytes but for the audit ids the second run recorded.
    uuid = rb'"audit_id": "[0-9a-f-]{36}"'
    assert re.sub(uuid, b'"audit_id": null', two.read_bytes()) == one.read_bytes()
    # Both processes wrote to one store: one record per valued row, one unbroken chain.
    ids = [r["valuation"]["audit_id"] for r in read_jsonl(two) if "valuation" in r]
    log = audit.AuditLog(store)
    assert len(ids) == len(set(ids)) == len(log) == 348
    assert log.verify().ok
    assert log.get(ids[0]).result["total_insured_value"] == expected_tiv(0)


def test_chunks_cut_anywhere_give_the_same_bytes(tmp_path: Path) -> None:
    # Blank lines and unreadable rows at and around chunk edges: the row and line numbers
    # a worker counts from its chunk's raw lines are those of the whole file.
    source = tmp_path / "in.jsonl"
    rows = [json.dumps(facts(n)) for n in range(23)]
    rows[0] = "\ufeff" + rows[0]  # a byte order mark on line 1 only
    rows[4], rows[6] = "[1, 2]", '{"id": "cut'
    for at in (21, 12, 7, 7, 3):
        rows.insert(at, "   ")
    source.write_text("\n".join(rows) + "\n\n", encoding="utf-8")
    outputs = []
    for size in (1, 2, 3, 1000):
        out = tmp_path / f"out{size}.jsonl"
        summary = run_batch(
            ROOT, BatchOptions(input=source, output=out, policy="standard", chunk=size)
        )
        assert (summary.rows, summary.failed) == (23, 2)
        outputs.append(out.read_bytes())
    assert len(set(outputs)) == 1
    written = read_jsonl(tmp_path / "out1.jsonl")
    # Rows 1-3 on lines 1-3, a blank line 4, rows 4-7 on lines 5-8, blank lines 9 and 10,
    # row 8 on line 11; ...; a blank line 26, rows 22 and 23 on lines 27 and 28.
    assert [(r["row"], r["line"]) for r in written[:8]] == [
        (1, 1), (2, 2), (3, 3), (4, 5), (5, 6), (6, 7), (7, 8), (8, 11),
    ]  # fmt: skip
    assert written[0]["valuation"]["shipment_id"] == "B-0"
    assert written[4]["error"]["problems"][0]["code"] == "facts.type"  # [1, 2]
    assert written[6]["error"]["error"] == "invalid_facts"  # cut off
    assert (written[22]["row"], written[22]["line"]) == (23, 28)


CSV_HEADER = [
    "id",
    "date",
    "currency",
    "mode",
    "origin.country",
    "destination.country",
    "invoice.amount",
    "invoice.currency",
    "charges[0].type",
    "charges[0].amount",
    "charges[1].type",
    "charges[1].amount",
    "charges[1].currency",
    "fx.EUR",
    "duties",
    "expected_transit_days",
]


def test_csv_columns_map_to_nested_fields(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        ",".join(CSV_HEADER) + "\n"
        # Two charges, the second in EUR at 1.10 USD per EUR; duties given as none.
        "C-1,2025-03-14,USD,ocean,CN,US,1000.00,,ocean_freight,100.00,"
        "origin_charges,50.00,EUR,1.10,none,21\n"
        # One charge: the charges[1] cells are blank, so there is no second element.
        "C-2,2025-03-14,USD,air,CN,US,500.00,,air_freight,20.00,,,,,none,\n"
        # A bad amount and a non-whole number of days: both reported.
        "C-3,2025-03-14,USD,ocean,CN,US,abc,,,,,,,,none,2.5\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.csv"
    proc = tiv("batch", str(source), "--policy", "standard", "-o", str(out), "--workers", "1")
    assert proc.returncode == 2, proc.stderr
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["row"] for r in rows] == ["1", "2", "3"]
    first, second, third = rows
    # freight = 100.00 + 50.00 EUR x 1.10 = 155.00; margin = 1155.00 x 0.10 = 115.50
    # TIV = 1000.00 + 155.00 + 115.50 + 0 (duties given as none) = 1270.50
    assert first["status"] == "ok" and first["components.freight"] == "155.00"
    assert first["total_insured_value"] == "1270.50"
    # freight 20.00; margin = 520.00 x 0.10 = 52.00; TIV = 500.00 + 20.00 + 52.00 = 572.00
    assert second["total_insured_value"] == "572.00"
    assert third["status"] == "error" and third["line"] == "4"
    assert third["error_path"] == "expected_transit_days"
    assert "invoice.amount: " in third["error_message"]


def test_csv_header_mapping_file(tmp_path: Path) -> None:
    source = tmp_path / "bordereau.csv"
    source.write_text(
        "Ref,Ship date,Ccy,Mode,From,To,Invoice value,Freight,Notes\n"
        "X-1,2025-03-14,USD,ocean,CN,US,1000.10,100.05,fragile\n",
        encoding="utf-8",
    )
    mapping = tmp_path / "columns.yaml"
    mapping.write_text(
        "Ref: id\nShip date: date\nCcy: currency\nMode: mode\nFrom: origin.country\n"
        "To: destination.country\nInvoice value: invoice.amount\n"
        "Freight: charges[0].amount\nNotes: ~\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    proc = tiv(
        "batch", str(source), "--policy", "standard", "-o", str(out), "--columns", str(mapping)
    )
    # charges[0] has an amount but no type: an error row naming the column it came from
    assert proc.returncode == 2, proc.stderr
    (row,) = read_jsonl(out)
    problem = row["error"]["problems"][0]
    assert problem["path"] == "charges[0].type" and problem["code"] == "facts.required"
    mapping.write_text(mapping.read_text().replace("Notes: ~", "Notes: notes"))
    proc = tiv(
        "batch", str(source), "--policy", "standard", "-o", str(out), "--columns", str(mapping)
    )
    assert proc.returncode == 2
    assert "column 'Notes' (notes) names no single field" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unfinished_run_needs_resume(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 3)
    out = tmp_path / "out.jsonl"
    progress_path(out).write_text(
        json.dumps({"rows_done": 1, "complete": False, "failed": 0, "output_bytes": 0})
    )
    proc = tiv("batch", str(source), "--policy", "standard", "-o", str(out))
    assert proc.returncode == 64
    assert "unfinished run" in proc.stderr and "--resume" in proc.stderr


def test_resume_after_kill_9_loses_and_repeats_nothing(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    total = 2000
    write_jsonl(source, total, bad={17: "{}", 1345: "[]"})
    reference = tmp_path / "reference.jsonl"
    run_batch(ROOT, BatchOptions(input=source, output=reference, policy="standard"))

    out = tmp_path / "out.jsonl"
    ledger = progress_path(out)
    command = ["batch", str(source), "--policy", "standard", "-o", str(out)]
    proc = subprocess.Popen([*TIV, *command, "--workers", "2", "--quiet"], start_new_session=True)
    done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = json.loads(ledger.read_text())["rows_done"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done > 0:  # the first checkpoint with rows in it: the run is mid-way
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the batch finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the batch and its worker processes, mid-run
    proc.wait()
    state = json.loads(ledger.read_text())
    assert not state["complete"] and 0 < state["rows_done"] < total
    # A write torn by the kill: a partial row after the last checkpoint.
    with out.open("ab") as handle:
        handle.write(b'{"row": 999999, "li')

    resumed = tiv(*command, "--resume", "--workers", "1")  # any worker count continues it
    assert resumed.returncode == 2, resumed.stderr  # the two bad rows
    assert f"resumed after row {state['rows_done']:,}" in resumed.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert [r["row"] for r in read_jsonl(out)] == list(range(1, total + 1))


def test_resume_refuses_a_changed_input(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 5)
    out = tmp_path / "out.jsonl"
    run_batch(ROOT, BatchOptions(input=source, output=out, policy="standard"))
    state = json.loads(progress_path(out).read_text())
    state["complete"] = False
    progress_path(out).write_text(json.dumps(state))
    write_jsonl(source, 6)
    proc = tiv("batch", str(source), "--policy", "standard", "-o", str(out), "--resume")
    assert proc.returncode == 64
    assert "input_size" in proc.stderr and "start over without --resume" in proc.stderr


@pytest.mark.parametrize("policy", ["nope", "standard@9.9.9"])
def test_unknown_policy_fails_before_any_row(tmp_path: Path, policy: str) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 2)
    out = tmp_path / "out.jsonl"
    proc = tiv("batch", str(source), "--policy", policy, "-o", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not out.exists()


# The blue-harbour pack's first example (policies/blue-harbour/1.0.0.yaml), and its
# jewellery example that refers.
FOB_ELECTRONICS = shipment(
    id="BH-FOB",
    date="2025-05-02",
    incoterm="FOB",
    destination={"country": "DE"},
    invoice={"amount": "200000.00"},
    goods=[
        {
            "description": "Laptop computers",
            "hs_code": "847130",
            "category": "electronics",
            "value": "200000.00",
        }
    ],
    charges=[
        {"type": "ocean_freight", "amount": "6000.00"},
        {"type": "origin_charges", "amount": "800.00"},
        {"type": "destination_charges", "amount": "700.00"},
    ],
    duties=[{"type": "import_duty", "amount": "4000.00"}],
)
JEWELLERY = shipment(
    id="BH-JEWEL",
    date="2025-07-01",
    incoterm="FOB",
    origin={"country": "IT"},
    invoice={"amount": "300000.00"},
    goods=[{"description": "Gold necklaces", "category": "jewellery", "value": "300000.00"}],
    charges=[{"type": "ocean_freight", "amount": "2000.00"}],
)


def test_csv_output_is_a_premium_bordereau(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(FOB_ELECTRONICS) + "\n" + json.dumps(JEWELLERY) + "\n")
    out = tmp_path / "out.csv"
    options = BatchOptions(input=source, output=out, policy="blue-harbour")
    summary = run_batch(ROOT, options)
    assert (summary.rows, summary.failed) == (2, 0)
    with out.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        fob, jewel = list(reader)
    assert header[7:12] == ["total_insured_value", "premium", "deductible", "decision", "reasons"]
    assert "figures.base_rate" in header and "figures.insured_amount" in header
    # TIV = 200,000.00 + 7,500.00 + 20,750.00 + 4,000.00 = 232,250.00
    # premium = 232,250.00 x 0.0035 = 812.875 -> 812.88
    # deductible = max(232,250.00 x 0.005, 250) = 1,161.25
    assert fob["total_insured_value"] == "232250.00"
    assert (fob["premium"], fob["deductible"]) == ("812.88", "1161.25")
    assert (fob["decision"], fob["reasons"]) == ("accept", "")
    assert fob["figures.base_rate"] == "0.0035"
    assert fob["figures.insured_amount"] == "232250.00"
    # TIV = (300,000.00 + 2,000.00) x 1.10 = 332,200.00; no base rate for class 4 by ocean
    assert (jewel["total_insured_value"], jewel["decision"]) == ("332200.00", "refer")
    rules = [reason.split(":")[0] for reason in jewel["reasons"].split(" | ")]
    assert sorted(rules) == ["professional-valuation", "tables.base_rate"]
    assert jewel["figures.base_rate"] == ""  # the table gap: no figure


def test_progress_starts_with_the_valuing_and_its_rate_is_the_summarys(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 250)
    out = tmp_path / "out.jsonl"
    calls: list[tuple[float, int, int]] = []

    def progress(done: int, failed: int) -> None:
        calls.append((time.monotonic(), done, failed))

    started = time.monotonic()
    options = BatchOptions(input=source, output=out, policy="standard", chunk=100)
    summary = run_batch(ROOT, options, progress)
    ended = time.monotonic()
    # The first call marks the start of valuing, before any row (so rule loading is not
    # counted in the bar's rate); then one call per chunk of 100 rows.
    assert [(done, failed) for _, done, failed in calls] == [(0, 0), (100, 0), (200, 0), (250, 0)]
    assert calls[0][0] - started < summary.seconds
    # The bar's clock runs from the first call to the last; the summary's rate is over
    # the same span, so the two agree (the summary's span ends after the last write).
    bar_seconds = calls[-1][0] - calls[0][0]
    # (0.01 s: the summary's clock starts a call before the bar's first update.)
    assert bar_seconds <= summary.valuing_seconds <= bar_seconds + (ended - calls[-1][0]) + 0.01
    assert summary.rate == pytest.approx(250 / summary.valuing_seconds)
    assert summary.valuing_seconds < summary.seconds
