"""Faults (issue 12 item 8): kill -9 during audit and batch writes, a broken reload under
load, and tenant isolation, each counted.

    .venv/bin/python bench/faults.py [--kills 10] [--requests 2000] [--reloads 20]

- audit: a writer process valuing shipments into an audit log is killed with SIGKILL at a
  random moment, `--kills` times; counts the records it had reported committed that are
  missing (lost), and whether the chain verifies after each kill.
- batch: `tiv batch --workers 2` over 2,000 rows is killed (its process group) mid-run,
  `--kills` times, then resumed; counts rows lost or repeated against an uninterrupted run.
- reload: a real `tiv serve` on loopback answers `--requests` valuations from 4 threads
  while an admin reloads a broken rule folder `--reloads` times; counts 5xx answers and
  answers served on rules other than the good ones (the `Tiv-Rules-Id` header).
- tenants: every key asks for every pack it may not see (value, list, read, claim) and
  every audit record of another tenant; counts answers other than 404 (leaks).

The repeatable tests are tests/test_audit.py (kill -9 mid-batch), tests/test_batch.py
(resume after kill -9), tests/test_service.py (reload refuses broken rules; tenants).
Exit 1 when any count that must be 0 is not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.batch.runner import BatchOptions, run_batch  # noqa: E402
from engine.compliance.audit import AuditLog  # noqa: E402
from tests.test_audit import writer  # noqa: E402
from tests.test_batch import progress_path, read_jsonl, write_jsonl  # noqa: E402
from tests.test_service import (  # noqa: E402
    ACME,
    KEY_A,
    KEY_ADMIN,
    KEY_B,
    Server,
    make_repo,
    shipment,
)

TIV = (sys.executable, "-m", "engine.cli")


def audit_kills(base: Path, kills: int, rng: random.Random) -> tuple[int, int, int]:
    """(records reported committed, of them lost, runs whose chain did not verify)."""
    committed = lost = broken = 0
    for run in range(kills):
        path = base / f"audit-{run}.db"
        AuditLog(path, key=None)
        proc = writer(path, 100_000, run)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        ids = [proc.stdout.readline().strip() for _ in range(rng.randint(5, 200))]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log = AuditLog(path, key=None)
        committed += len(ids)
        present = {record.id for record in log}
        lost += sum(1 for record_id in ids if record_id not in present)
        broken += 0 if log.verify().ok else 1
        log.close()
    return committed, lost, broken


def batch_kills(base: Path, kills: int) -> tuple[int, int, int]:
    """(rows, rows lost or repeated after resume, runs whose output differs)."""
    source = base / "in.jsonl"
    total = 2000
    write_jsonl(source, total)
    reference = base / "reference.jsonl"
    run_batch(ROOT, BatchOptions(input=source, output=reference, policy="standard"))
    wrong = differ = 0
    for run in range(kills):
        out = base / f"out-{run}.jsonl"
        ledger = progress_path(out)
        command = ["batch", str(source), "--policy", "standard", "-o", str(out)]
        proc = subprocess.Popen(
            [*TIV, *command, "--workers", "2", "--quiet"], start_new_session=True, cwd=ROOT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads(ledger.read_text())["rows_done"] > run * 50:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run(
            [*TIV, *command, "--resume", "--quiet"], cwd=ROOT, capture_output=True, check=False
        )
        rows = [r["row"] for r in read_jsonl(out)]
        wrong += abs(len(rows) - total) + (len(rows) - len(set(rows)))
        differ += 0 if out.read_bytes() == reference.read_bytes() else 1
    return kills * total, wrong, differ


def reload_under_load(base: Path, requests: int, reloads: int) -> tuple[int, int, int, int]:
    """(answers, 5xx, served on rules other than the good ones, reloads refused)."""
    root = make_repo(base / "reload")
    keys = base / "keys.yaml"
    keys.write_text(
        f"keys:\n  - {{name: a, key: {KEY_A}, packs: [standard]}}\n"
        f"  - {{name: ops, key: {KEY_ADMIN}, packs: ['*'], roles: [admin, metrics]}}\n",
        encoding="utf-8",
    )
    server = Server(root, "--keys", str(keys))
    try:
        good = server.request("GET", "/readyz").json()["rules_id"]
        body = json.dumps(shipment()).encode()

        def one(_: int) -> tuple[int, str]:
            response = server.request(
                "POST", "/v1/valuations", KEY_A, params={"policy": "standard"}, content=body
            )
            return response.status_code, response.headers.get("Tiv-Rules-Id", "")

        broken = root / "policies/acme/1.1.0.yaml"
        refused = 0
        with ThreadPoolExecutor(4) as pool:
            answers = pool.map(one, range(requests))
            for _ in range(reloads):
                broken.write_text(
                    ACME.replace("version: 1.0.0", "version: 1.1.0").replace(
                        "tiv: round(", "tiv: round(nonsense + "
                    ),
                    encoding="utf-8",
                )
                status = server.request("POST", "/v1/admin/reload", KEY_ADMIN).status_code
                refused += status == 422
                broken.unlink()
                time.sleep(0.05)
            results = list(answers)
        errors = sum(1 for status, _ in results if status >= 500)
        elsewhere = sum(1 for status, rules in results if status == 200 and rules != good)
        return len(results), errors, elsewhere, refused
    finally:
        server.stop()


def tenant_leaks(base: Path) -> tuple[int, int]:
    """(questions asked of packs and records not the key's, answers other than 404)."""
    root = make_repo(base / "tenants")
    keys = base / "tenant-keys.yaml"
    keys.write_text(
        f"keys:\n  - {{name: a, key: {KEY_A}, packs: [standard]}}\n"
        f"  - {{name: b, key: {KEY_B}, packs: [acme]}}\n",
        encoding="utf-8",
    )
    server = Server(root, "--keys", str(keys), "--audit", str(base / "tenants.db"))
    try:
        body = json.dumps(shipment()).encode()
        own = {KEY_A: "standard", KEY_B: "acme"}
        records = {}
        for key, pack in own.items():
            answer = server.request(
                "POST", "/v1/valuations", key, params={"policy": pack}, content=body
            )
            records[key] = answer.json().get("audit_id")
        packs = [p.name for p in (root / "policies").iterdir()]
        asked = leaks = 0
        for key, mine in own.items():
            for pack in packs:
                if pack == mine:
                    continue
                for method, path, params, content in (
                    ("POST", "/v1/valuations", {"policy": pack}, body),
                    ("POST", "/v1/valuations/batch", {"policy": pack}, b"[" + body + b"]"),
                    ("GET", f"/v1/packs/{pack}", {}, None),
                    ("GET", f"/v1/packs/{pack}/1.0.0", {}, None),
                ):
                    response = server.request(method, path, key, params=params, content=content)
                    asked += 1
                    leaks += response.status_code != 404
            for other, record in records.items():
                if other != key and record:
                    asked += 1
                    leaks += server.request("GET", f"/v1/audit/{record}", key).status_code != 404
            listed = {p["id"] for p in server.request("GET", "/v1/packs", key).json()["packs"]}
            asked += 1
            leaks += listed != {mine}
        return asked, leaks
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    bad = 0
    with tempfile.TemporaryDirectory(prefix="tiv-faults-") as folder:
        base = Path(folder)
        committed, lost, broken = audit_kills(base, args.kills, rng)
        print(
            f"audit, kill -9 x{args.kills}: {committed:,} records reported committed, "
            f"{lost} lost; chain broken after {broken} kill(s)"
        )
        bad += lost + broken
        rows, wrong, differ = batch_kills(base, args.kills)
        print(
            f"batch, kill -9 x{args.kills} then --resume: {rows:,} rows, {wrong} lost or "
            f"repeated; {differ} output(s) differ from an uninterrupted run"
        )
        bad += wrong + differ
        answers, errors, elsewhere, refused = reload_under_load(base, args.requests, args.reloads)
        print(
            f"reload under load: {answers:,} answers during {args.reloads} broken reloads "
            f"({refused} refused): {errors} 5xx, {elsewhere} served on other rules"
        )
        bad += errors + elsewhere + (args.reloads - refused)
        asked, leaks = tenant_leaks(base)
        print(f"tenants: {asked} questions about another tenant's packs and records: {leaks} leaks")
        bad += leaks
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
