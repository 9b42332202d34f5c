"""The `tiv` command: exit statuses, one-line errors, no tracebacks. Run in process through
`run_cli` (engine.cli.main), except the console script test, which launches it for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Ran, run_cli, shipment

SEED = "examples/shipments/seed-electronics.yaml"


def tiv(*args: str, cwd: Path = ROOT, stdin: str | None = None) -> Ran:
    return run_cli(*args, cwd=cwd, stdin=stdin)


def assert_one_line_error(proc: subprocess.CompletedProcess, status: int, *fragments: str):
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert proc.stdout == ""


def test_value_text_explains_the_figure() -> None:
    proc = tiv("value", SEED, "--policy", "standard")
    assert proc.returncode == 0, proc.stderr
    assert "Total insured value: 561,709.00 USD" in proc.stdout
    assert "margin_rate = 0.10" in proc.stdout and "policies/standard/1.0.0.yaml:" in proc.stdout


def test_value_json_contract() -> None:
    proc = tiv("value", SEED, "--policy", "standard@1.0.0", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout, parse_float=lambda s: pytest.fail(f"float {s} in output"))
    assert result["total_insured_value"] == "561709.00"
    assert result["components"]["freight"] == "9070.00"
    assert result["policy"]["source"] == "policies/standard/1.0.0.yaml"
    assert result["matcher"] == "compiled"  # the default matcher
    assert {"name", "expression", "inputs", "value", "source"} <= set(result["trace"][0])


def test_value_from_stdin_json() -> None:
    facts = shipment(id="J1", date="2024-02-02", mode="air", origin={"country": "DE"})
    facts["invoice"] = {"amount": 1000.10}  # a JSON number, not text
    proc = tiv("value", "-", "--policy", "standard", "--format", "json", stdin=json.dumps(facts))
    assert proc.returncode == 0, proc.stderr
    # 1,000.10 read exactly (not as a float): × 1.10 = 1,100.11
    assert json.loads(proc.stdout)["total_insured_value"] == "1100.11"


def test_bad_facts_exit_2_naming_the_field(tmp_path: Path) -> None:
    text = (ROOT / SEED).read_text().replace('amount: "650.00"', 'amount: "-650.00"')
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = tiv("value", str(bad), "--policy", "standard")
    assert_one_line_error(proc, 2, "charges[1].amount", "negative", "bad.yaml:")


def test_no_version_in_effect_exit_2() -> None:
    proc = tiv("value", SEED, "--policy", "standard", "--as-of", "2019-12-31")
    assert_one_line_error(
        proc, 2, "2019-12-31", "1.0.0 (published, 2020-01-01 until 2027-01-01 (exclusive))"
    )


def test_invalid_rules_exit_3(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "rules", repo / "rules")
    shutil.copytree(ROOT / "policies", repo / "policies")
    shutil.copytree(ROOT / "examples", repo / "examples")
    pack = repo / "policies/standard/1.0.0.yaml"
    pack.write_text(
        pack.read_text().replace(
            "margin: (invoice + freight) * margin_rate", "margin: (invoice + freight) * margin_rat"
        )
    )
    line = 1 + pack.read_text().splitlines().index("  margin: (invoice + freight) * margin_rat")
    where = f"policies/standard/1.0.0.yaml:{line}:"
    proc = tiv("--rules", str(repo), "value", str(ROOT / SEED), "--policy", "standard")
    assert_one_line_error(proc, 3, where, "margin_rat")
    proc = tiv("--rules", str(repo), "validate")
    assert proc.returncode == 3
    assert where in proc.stderr and "did you mean" in proc.stderr


def test_validate_and_test_pass_on_the_shipped_rules() -> None:
    proc = tiv("validate")
    assert proc.returncode == 0, proc.stderr
    proc = tiv("test", "standard")
    assert proc.returncode == 0, proc.stdout
    count = proc.stdout.count("PASS standard@")
    assert count >= 5 and f"examples: {count} passed, 0 failed" in proc.stdout


def test_unknown_pack_and_usage_errors() -> None:
    assert_one_line_error(tiv("value", SEED, "--policy", "nope"), 2, "no policy pack `nope`")
    assert_one_line_error(tiv("value", "missing.yaml"), 64, "no such file")
    assert tiv("value", SEED, "--as-of", "yesterday").returncode == 2  # argparse's own error


def test_output_file_is_written_whole(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = tiv("value", SEED, "--policy", "standard", "--format", "json", "-o", str(out))
    assert proc.returncode == 0 and proc.stdout == ""
    assert json.loads(out.read_text())["total_insured_value"] == "561709.00"
    out.write_text("previous")
    proc = tiv("value", SEED, "--policy", "standard", "--as-of", "2019-01-01", "-o", str(out))
    assert proc.returncode == 2
    assert out.read_text() == "previous"  # a failure leaves the old file untouched
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left


def test_outside_a_rule_repository(tmp_path: Path) -> None:
    proc = tiv("value", str(ROOT / SEED), cwd=tmp_path)
    assert_one_line_error(proc, 64, "no rule repository here")


def test_schema_and_version() -> None:
    proc = tiv("schema", "shipment")
    assert proc.returncode == 0 and json.loads(proc.stdout)["title"] == "Shipment"
    assert tiv("--version").stdout.startswith("tiv ")


def test_rules_list_shows_every_pack_and_country() -> None:
    proc = tiv("rules", "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    standard = next(row for row in rows if row["kind"] == "policy" and row["id"] == "standard")
    assert {
        k: v
        for k, v in standard.items()
        if k in ("kind", "id", "version", "status", "effective_from", "effective_to")
    } == {
        "kind": "policy",
        "id": "standard",
        "version": "1.0.0",
        "status": "published",
        "effective_from": "2020-01-01",
        "effective_to": "2027-01-01",
    }
    assert any(row["kind"] == "country" and row["id"] == "US" for row in rows)
    text = tiv("rules", "list").stdout
    us = [line.split() for line in text.splitlines() if line.startswith("country  US ")]
    # US 1.0.0 ends where 1.1.0 (fees to the cent) starts; 1.1.0 is open-ended
    assert [row[2:6] for row in us] == [
        ["1.0.0", "published", "2024-10-01", "2027-01-01"],
        ["1.1.0", "published", "2027-01-01", "-"],
    ]
    line = next(line for line in text.splitlines() if line.split()[1:3] == ["standard", "1.0.0"])
    assert line.split()[4:6] == ["2020-01-01", "2027-01-01"]


def test_claim_explains_and_is_recorded_in_the_audit_log(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    proc = tiv(
        "claim",
        SEED,
        "--policy",
        "blue-harbour",
        "--total",
        "--format",
        "json",
        "--audit",
        str(store),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # blue-harbour on the seed: TIV = 500,000 + 9,070 freight + 0 insurance + 50,907 margin
    # + 1,732 duties = 561,709.00; no sum_insured, so the insured amount is the TIV.
    # deductible = max(561,709 × 0.005 = 2,808.545, 250) -> 2,808.55 (half-up)
    # total loss: 561,709.00 − 2,808.55 = 558,900.45
    assert result["audit_id"] and result["loss"]["kind"] == "total"
    assert result["valuation"]["total_insured_value"] == "561709.00"
    assert result["components"]["deductible_applied"] == "2808.55"
    assert result["indemnity"] == "558900.45"
    verify = tiv("audit", "verify", str(store))
    assert verify.returncode == 0 and "1 record(s)" in verify.stdout
    assert tiv("claim", SEED, "--policy", "blue-harbour").returncode == 64  # no loss given


def test_the_console_script_runs_in_a_process_of_its_own() -> None:
    """The CLI tests run `engine.cli.main` in process; this one runs the installed `tiv`
    script for real: its entry point, its exit status, its streams."""
    script = Path(sys.executable).with_name("tiv")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]
    proc = subprocess.run(
        [*command, "value", SEED, "--policy", "standard", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # TIV = 500,000.00 + 9,070.00 + 50,907.00 + 1,732.00 = 561,709.00 (the seed example)
    assert json.loads(proc.stdout)["total_insured_value"] == "561709.00"
