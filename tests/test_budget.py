"""Bounded work (issue 12 items 1 and 4): each valuation's time budget in the library,
the CLI, batch and the service; a batch row over the size limit is an error row.

The budget is enforced for real: a budget of 1 ns on a real valuation, and a shipment of
45,000 charges (55 to 150 ms to read and value on the development machine, more under
load) against a budget of 20 ms, next to a plain shipment that takes well under one.
"""

from __future__ import annotations

import csv
import json
import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import firstuse, load_rules
from engine.api import claim, deadline_of, default_time_budget, value, value_many
from engine.errors import EvaluationError
from engine.result import Valuation
from tests.conftest import ROOT, run_cli, shipment
from tests.test_service import Server, make_repo

OVER = "valuation.time_budget"


def light(number: int = 1) -> dict[str, Any]:
    """A plain shipment: invoice 1000.10, freight 100.05; TIV (1100.15 x 1.10) 1210.17."""
    return shipment(
        id=f"L-{number}",
        date="2025-03-14",
        invoice={"amount": "1000.10"},
        charges=[{"type": "ocean_freight", "amount": "100.05"}],
    )


def heavy() -> dict[str, Any]:
    """45,000 freight charges (about 1.9 MB of JSON, under the service's 2 MiB limit): more
    work than 20 ms allows."""
    return shipment(
        id="H-1",
        date="2025-03-14",
        invoice={"amount": "1000.10"},
        charges=[{"type": "ocean_freight", "amount": "1.05"}] * 45_000,
    )


@pytest.fixture(scope="module")
def rules() -> Any:
    return load_rules(ROOT)


def _over(error: EvaluationError) -> None:
    (problem,) = error.problems
    assert problem.code == OVER
    assert problem.location.file == "policies/standard/1.0.0.yaml" and problem.location.line
    assert "time budget" in problem.message and "--time-budget" in problem.message


def test_a_valuation_over_a_budget_of_one_nanosecond_is_an_evaluation_error(rules: Any) -> None:
    with pytest.raises(EvaluationError) as caught:
        value(rules, light(), policy="standard", budget=1e-9)
    _over(caught.value)
    with pytest.raises(EvaluationError) as caught:
        claim(rules, light(), {"kind": "total"}, policy="blue-harbour", budget=1e-9)
    assert caught.value.problems[0].code == OVER
    # A deadline already past, given directly, holds the same way.
    with pytest.raises(EvaluationError):
        value(rules, light(), policy="standard", deadline=time.monotonic_ns() - 1)
    # The default budget (2 s) and no budget at all both value it: 1100.15 x 1.10 = 1210.165.
    assert value(rules, light(), policy="standard").total_insured_value == Decimal("1210.17")
    result = value(rules, light(), policy="standard", budget=math.inf)
    assert result.total_insured_value == Decimal("1210.17")


def test_the_heavy_shipment_runs_over_a_tenth_of_a_second_and_the_light_one_does_not(
    rules: Any,
) -> None:
    with pytest.raises(EvaluationError) as caught:
        value(rules, heavy(), policy="standard", budget=0.02)
    _over(caught.value)
    assert value(rules, light(), policy="standard", budget=0.02).total_insured_value == Decimal(
        "1210.17"
    )


def test_value_many_yields_the_error_in_place_and_goes_on(rules: Any) -> None:
    items = list(value_many(rules, [light(1), heavy(), light(2)], policy="standard", budget=0.02))
    assert [type(item).__name__ for item in items] == ["Valuation", "EvaluationError", "Valuation"]
    assert isinstance(items[1], EvaluationError) and items[1].problems[0].code == OVER
    assert isinstance(items[2], Valuation) and items[2].shipment_id == "L-2"


def test_the_default_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIV_TIME_BUDGET", raising=False)
    assert default_time_budget() == 2.0
    monkeypatch.setenv("TIV_TIME_BUDGET", "0.5")
    assert default_time_budget() == 0.5
    monkeypatch.setenv("TIV_TIME_BUDGET", "none")
    assert deadline_of(None) is None
    for wrong in ("soon", "0", "-1", "nan", "-inf"):
        monkeypatch.setenv("TIV_TIME_BUDGET", wrong)
        for _ in range(2):  # a wrong value is refused every time, not once
            with pytest.raises(EvaluationError) as caught:
                default_time_budget()
            assert "TIV_TIME_BUDGET" in str(caught.value)
    monkeypatch.setenv("TIV_TIME_BUDGET", "3")  # read afresh after every change
    assert default_time_budget() == 3.0
    monkeypatch.delenv("TIV_TIME_BUDGET")
    assert default_time_budget() == 2.0


def test_a_budget_given_in_the_library_must_be_above_zero() -> None:
    assert deadline_of(math.inf) is None
    for wrong in (0.0, -1.0, -math.inf, math.nan):
        with pytest.raises(ValueError, match="more than 0 seconds"):
            deadline_of(wrong)


def test_tiv_value_with_a_tiny_budget_exits_4_naming_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(light()), encoding="utf-8")
    ran = run_cli("--rules", ROOT, "value", path, "--policy", "standard", "--time-budget", "1e-9")
    assert ran.returncode == 4, ran.stderr
    assert OVER in ran.stderr or "time budget" in ran.stderr
    assert "Traceback" not in ran.stderr
    ran = run_cli("--rules", ROOT, "value", path, "--policy", "standard", "--time-budget", "0")
    assert ran.returncode == 2  # argparse's usage error
    assert "--time-budget: '0' must be more than 0 seconds" in ran.stderr


def test_batch_row_over_the_budget_is_an_error_row_and_the_batch_goes_on(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [light(1), heavy(), light(2)]
    source.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    ran = run_cli(
        "--rules",
        ROOT,
        "batch",
        source,
        "--policy",
        "standard",
        "-o",
        out,
        "--workers",
        "1",
        "--time-budget",
        "0.02",
    )
    assert "3 rows, 2 valued, 1 failed" in ran.stderr, ran.stderr
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["row"] for row in written] == [1, 2, 3]
    assert written[0]["valuation"]["total_insured_value"] == "1210.17"
    assert written[1]["error"]["problems"][0]["code"] == OVER
    assert written[2]["valuation"]["shipment_id"] == "L-2"


def batch_with_a_100000_byte_limit(source: Path, out: Path) -> list[dict[str, Any]]:
    """`tiv batch` of three rows, the second over a 100,000-byte input limit: the rows
    written, after checking the summary counts it as the one failure."""
    ran = run_cli(
        "--rules", ROOT, "--max-input", "100000", "batch", source, "--policy", "standard",
        "-o", out, "--workers", "1",
    )  # fmt: skip
    assert "3 rows, 2 valued, 1 failed" in ran.stderr, ran.stderr
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_a_jsonl_row_over_the_size_limit_is_an_error_row(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    big = json.dumps(light(2) | {"goods": [{"description": "x" * 150_000}]})
    lines = [json.dumps(light(1)), big, "", json.dumps(light(3))]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written = batch_with_a_100000_byte_limit(source, tmp_path / "out.jsonl")
    assert [(row["row"], row["line"]) for row in written] == [(1, 1), (2, 2), (3, 4)]
    (problem,) = written[1]["error"]["problems"]
    assert problem["code"] == "input.too_large"
    assert f"the row is {len(big):,} bytes, over the limit of 100,000" in problem["message"]
    assert written[2]["valuation"]["shipment_id"] == "L-3"


def test_a_csv_row_over_the_size_limit_is_an_error_row(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    header = ["id", "date", "currency", "mode", "origin.country", "destination.country"]
    header += ["invoice.amount", "charges[0].type", "charges[0].amount", "duties"]
    header += ["goods[0].description"]
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for number, description in ((1, "cups"), (2, "x" * 150_000), (3, "plates")):
            shipment_cells = [f"C-{number}", "2025-03-14", "USD", "ocean", "CN", "US"]
            writer.writerow(
                [*shipment_cells, "1000.10", "ocean_freight", "100.05", "[]", description]
            )
    written = batch_with_a_100000_byte_limit(source, tmp_path / "out.jsonl")
    assert written[1]["error"]["problems"][0]["code"] == "input.too_large"
    # As `light`: (1000.10 + 100.05) x 1.10 = 1210.165 -> 1210.17
    assert written[2]["valuation"]["total_insured_value"] == "1210.17"


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`tiv serve` on loopback with one valuation thread and a budget of 20 ms per
    valuation; bodies up to 4 MB (the heavy shipment is 1.9 MB)."""
    root = make_repo(tmp_path_factory.mktemp("budget"))
    server = Server(
        root,
        "--threads",
        "1",
        "--valuation-budget",
        "0.02",
        "--max-body",
        "4000000",
    )
    yield server
    server.stop()


def test_the_service_answers_503_over_budget_and_serves_the_next_request(budgeted: Any) -> None:
    started = time.monotonic()
    response = budgeted.value(heavy(), key=None)
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert body["error"] == "evaluation_failed"
    assert body["problems"][0]["code"] == OVER
    assert "the service's --valuation-budget" in body["problems"][0]["message"]
    # The one valuation thread is free again: the next request is valued, well within the
    # request's own budget (10 s).
    response = budgeted.value(light(), key=None)
    assert response.status_code == 200, response.text
    assert response.json()["total_insured_value"] == "1210.17"
    assert time.monotonic() - started < 9
    # In a batch request, the shipment over budget is that item's error; the others valued.
    response = budgeted.request(
        "POST",
        "/v1/valuations/batch",
        params={"policy": "standard"},
        content=json.dumps([light(1), heavy(), light(2)]).encode(),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[1]["error"]["problems"][0]["code"] == OVER
    assert results[0]["valuation"]["total_insured_value"] == "1210.17"
    assert results[2]["valuation"]["shipment_id"] == "L-2"
    assert httpx.get(budgeted.url + "/healthz", timeout=5).status_code == 200


def test_time_spent_making_first_use_state_is_given_back_to_the_budget() -> None:
    # A deadline moves later by the first-use making done since `since`: with 7 µs made
    # since, a deadline at 1,000,000 ns becomes 1,000,000 + 7,000 = 1,007,000 ns. (The
    # service test above is the end-to-end case: its first batch reads facts plain for the
    # first time, making a validator and lines, within a 20 ms budget.)
    assert firstuse.credited(1_000_000, firstuse.spent_ns - 7_000) == 1_007_000
    assert firstuse.credited(None, 0) is None
    # A builder that started 5 ms ago adds those 5 ms (and the moment since) to the total.
    before = firstuse.spent_ns
    firstuse.made(time.monotonic_ns() - 5_000_000)
    assert 5_000_000 <= firstuse.spent_ns - before < 5_000_000 + 10**9
