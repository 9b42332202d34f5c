"""The audit log on a real SQLite file: records, every tamper class, crashes, concurrency, replay.

Tampering is done the way a person with the file would do it: sqlite3, dropping the
append-only triggers first. Writers that crash or race are real processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine import RuleSet, load_rules, value
from engine.compliance.audit import (
    GENESIS,
    MASK_MARKER,
    AuditError,
    AuditKey,
    AuditLog,
    canonical_json,
    generate_key,
    replay,
)
from engine.compliance.corpus import generate
from tests.conftest import ROOT, Ran, run_cli, shipment

SEED = ROOT / "examples/shipments/seed-electronics.yaml"
PACK = "policies/standard/1.0.0.yaml"


def fill(log: AuditLog, rules: RuleSet, count: int) -> list[str]:
    ids = []
    for facts in generate(count, 11):
        ids.append(value(rules, facts, policy="standard", audit=log).audit_id or "")
    return ids


def tamper(path: Path, *statements: str, params: tuple[Any, ...] = ()) -> None:
    """Change the file as someone with sqlite3 would: drop the guards, then edit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS records_no_update")
    conn.execute("DROP TRIGGER IF EXISTS records_no_delete")
    for statement in statements:
        conn.execute(statement, params if "?" in statement else ())
    conn.close()


def tiv(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Ran:
    return run_cli(*args, cwd=cwd, env=env)


@pytest.fixture()
def store(tmp_path: Path, shipped: RuleSet) -> tuple[AuditLog, list[str]]:
    log = AuditLog(tmp_path / "audit.db")
    return log, fill(log, shipped, 5)


# --- what a record holds ------------------------------------------------------------


def test_a_record_holds_facts_result_rules_and_its_place_in_the_chain(
    tmp_path: Path, shipped: RuleSet
) -> None:
    log = AuditLog(tmp_path / "audit.db")
    first = value(shipped, SEED, policy="standard", audit=log)
    second = value(shipped, SEED, policy="standard", audit=log, trace=False)
    assert first.audit_id and second.audit_id and first.audit_id != second.audit_id
    assert second.trace == []  # the caller asked for no trace ...
    record = log.get(second.audit_id)
    assert record.result["trace"]  # ... but the record always keeps it

    assert record.seq == 2 and record.kind == "valuation"
    assert record.recorded_at.endswith("Z")
    assert record.facts["id"] == "SEED-0001" and record.facts["invoice"]["amount"] == "500000.00"
    assert record.result["total_insured_value"] == "561709.00"
    assert "audit_id" not in record.result  # its own id cannot be inside what it hashes
    assert record.engine_version == first.engine_version and record.matcher == first.matcher
    assert record.functions == [] and record.masked == []
    policy = record.rule_files[0]
    assert (policy.role, policy.id, policy.version, policy.path) == (
        "policy",
        "standard",
        "1.0.0",
        PACK,
    )
    assert policy.sha256 == hashlib.sha256((ROOT / PACK).read_bytes()).hexdigest()
    paths = [f.path for f in record.rule_files]
    assert "rules/reference/currencies.yaml" in paths
    # The chain: the first follows 64 zeros, each hash is the sha256 of the canonical
    # JSON of everything else, and the next record names it.
    one = log.get(first.audit_id)
    assert one.prev_hash == GENESIS and record.prev_hash == one.hash
    body = canonical_json(record.content())
    assert record.hash == hashlib.sha256(body.encode()).hexdigest()
    assert [r.id for r in log] == [first.audit_id, second.audit_id] and len(log) == 2
    # A prefix and `last` find records; the model is JSON for the HTTP service.
    assert log.get(first.audit_id[:8]).id == first.audit_id
    assert log.get("last").id == second.audit_id
    assert log.get("1").id == first.audit_id  # by seq, as `tiv audit list` shows it
    assert json.loads(record.model_dump_json())["seq"] == 2
    with pytest.raises(AuditError) as missing:
        log.get("ffffffff")
    assert missing.value.exit_code == 2


def test_the_store_is_one_wal_file_and_refuses_updates_and_deletes(
    store: tuple[AuditLog, list[str]],
) -> None:
    log, _ = store
    conn = sqlite3.connect(log.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE records SET kind = 'claim' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM records WHERE seq = 1")
    conn.close()
    assert log.verify().ok


def test_floats_are_refused_by_the_canonical_form() -> None:
    with pytest.raises(TypeError, match="binary float"):
        canonical_json({"amount": 0.1})


# --- tampering ----------------------------------------------------------------------


def test_an_intact_chain_verifies_and_gives_its_head(store: tuple[AuditLog, list[str]]) -> None:
    log, ids = store
    report = log.verify()
    assert report.ok and report.records == 5 and report.first_bad is None
    assert report.head == f"5:{log.get(ids[-1]).hash}"
    assert log.verify(anchor=report.head).ok


def test_an_updated_figure_is_found(store: tuple[AuditLog, list[str]]) -> None:
    log, ids = store
    tiv_text = log.get(ids[2]).result["total_insured_value"]
    tamper(
        log.path,
        "UPDATE records SET body = replace(body, ?, ?) WHERE seq = 3",
        params=(f'"total_insured_value":"{tiv_text}"', '"total_insured_value":"1.00"'),
    )
    bad = log.verify().first_bad
    assert bad is not None and (bad.kind, bad.seq, bad.id) == ("altered", 3, ids[2])
    assert "does not match its hash" in bad.message


def test_an_updated_figure_with_its_hash_recomputed_is_found(
    store: tuple[AuditLog, list[str]],
) -> None:
    log, ids = store
    record = log.get(ids[1])
    content = record.content()
    content["result"]["total_insured_value"] = "1.00"
    body = canonical_json(content)
    tamper(
        log.path,
        "UPDATE records SET body = ?, hash = ? WHERE seq = 2",
        params=(body, hashlib.sha256(body.encode()).hexdigest()),
    )
    bad = log.verify().first_bad
    # Record 2 is consistent with itself now; record 3 no longer follows it.
    assert bad is not None and (bad.kind, bad.seq, bad.id) == ("altered", 2, ids[1])


def test_a_deleted_row_is_found(store: tuple[AuditLog, list[str]]) -> None:
    log, ids = store
    tamper(log.path, "DELETE FROM records WHERE seq = 2")
    bad = log.verify().first_bad
    assert bad is not None and (bad.kind, bad.seq) == ("deleted", 2)
    assert f"missing before record seq 3 (id {ids[2]})" in bad.message


def test_a_deleted_newest_row_is_found(store: tuple[AuditLog, list[str]]) -> None:
    log, _ = store
    tamper(log.path, "DELETE FROM records WHERE seq = 5")
    bad = log.verify().first_bad
    assert bad is not None and (bad.kind, bad.seq) == ("truncated", 5)


def test_two_swapped_rows_are_found(store: tuple[AuditLog, list[str]]) -> None:
    log, ids = store
    tamper(
        log.path,
        "UPDATE records SET seq = -seq WHERE seq IN (2, 3)",
        "UPDATE records SET seq = 3 WHERE seq = -2",
        "UPDATE records SET seq = 2 WHERE seq = -3",
    )
    bad = log.verify().first_bad
    # Position 2 now holds record 3, which follows a record that comes after it.
    assert bad is not None and (bad.kind, bad.seq, bad.id) == ("reordered", 2, ids[2])


def test_an_inserted_row_is_found(store: tuple[AuditLog, list[str]]) -> None:
    log, ids = store
    # A careful forger: room is made at seq 3 and a record is written there that follows
    # record 2 with a correct hash of its own.
    forged = log.get(ids[2]).content()
    forged.update(id="forged-0000", seq=3, prev_hash=log.get(ids[1]).hash)
    forged["result"]["total_insured_value"] = "1.00"
    body = canonical_json(forged)
    tamper(
        log.path,
        "UPDATE records SET seq = seq + 100 WHERE seq >= 3",
        "UPDATE records SET seq = seq - 99 WHERE seq >= 100",
        "INSERT INTO records (seq, id, recorded_at, kind, body, hash) VALUES (3, ?, ?, ?, ?, ?)",
        params=(
            "forged-0000",
            forged["recorded_at"],
            "valuation",
            body,
            hashlib.sha256(body.encode()).hexdigest(),
        ),
    )
    bad = log.verify().first_bad
    assert bad is not None and (bad.kind, bad.seq, bad.id) == ("inserted", 3, "forged-0000")


def test_a_copied_row_appended_is_found(store: tuple[AuditLog, list[str]]) -> None:
    log, _ = store
    tamper(
        log.path,
        "INSERT INTO records (id, recorded_at, kind, body, hash) "
        "SELECT 'copy', recorded_at, kind, body, hash FROM records WHERE seq = 2",
    )
    bad = log.verify().first_bad
    assert bad is not None and bad.kind == "altered" and bad.seq == 6


def test_a_rewritten_chain_is_caught_by_an_anchor(store: tuple[AuditLog, list[str]]) -> None:
    log, ids = store
    head = log.verify().head
    assert head is not None
    # Rewrite record 2 and every hash after it: the chain is consistent again ...
    conn_rows = [log.get(i).content() for i in ids]
    conn_rows[1]["result"]["total_insured_value"] = "1.00"
    statements, previous = [], conn_rows[0]["prev_hash"]
    for content in conn_rows:
        content["prev_hash"] = previous
        body = canonical_json(content)
        previous = hashlib.sha256(body.encode()).hexdigest()
        statements.append((content["seq"], body, previous))
    conn = sqlite3.connect(log.path, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    for seq, body, hashed in statements:
        conn.execute("UPDATE records SET body = ?, hash = ? WHERE seq = ?", (body, hashed, seq))
    conn.close()
    assert log.verify().ok  # ... so only something kept outside the file can tell
    bad = log.verify(anchor=head).first_bad
    assert bad is not None and bad.kind == "anchor" and bad.seq == 5


def test_verify_on_the_command_line_names_the_first_bad_record(
    store: tuple[AuditLog, list[str]],
) -> None:
    log, ids = store
    proc = tiv("audit", "verify", str(log.path))
    assert proc.returncode == 0 and "ok: 5 record(s)" in proc.stdout and "head: 5:" in proc.stdout
    tamper(log.path, "UPDATE records SET kind = 'claim' WHERE seq = 4")
    proc = tiv("audit", "verify", str(log.path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"broken (altered): record seq 4 (id {ids[3]})" in proc.stderr
    proc = tiv("audit", "verify", str(log.path), "--format", "json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["first_bad"]["seq"] == 4


# --- signed records (issue 12, item 7) ------------------------------------------------


def key_file(folder: Path, name: str = "audit.key") -> AuditKey:
    return generate_key(folder / name)


def append_forged(log: AuditLog, figure: str = "1.00") -> str:
    """What the chain alone cannot catch: a record appended after the head, following it
    with a correct hash of its own, written by someone with the file and sqlite3."""
    head = log.get("last")
    forged = head.content()
    forged.update(id="forged-end", seq=head.seq + 1, prev_hash=head.hash)
    forged["result"]["total_insured_value"] = figure
    body = canonical_json(forged)
    tamper(
        log.path,
        "INSERT INTO records (seq, id, recorded_at, kind, body, hash) VALUES (?, ?, ?, ?, ?, ?)",
        params=(
            head.seq + 1,
            "forged-end",
            forged["recorded_at"],
            "valuation",
            body,
            hashlib.sha256(body.encode()).hexdigest(),
        ),
    )
    return hashlib.sha256(body.encode()).hexdigest()


@pytest.fixture()
def signed(tmp_path: Path, shipped: RuleSet) -> tuple[AuditLog, AuditKey, list[str]]:
    key = key_file(tmp_path)
    log = AuditLog(tmp_path / "signed.db", key=key)
    return log, key, fill(log, shipped, 5)


def test_signed_records_verify_with_their_key(
    signed: tuple[AuditLog, AuditKey, list[str]],
) -> None:
    log, key, _ = signed
    report = log.verify(keys=[key])
    assert report.ok and report.records == report.signed == 5
    assert report.keys_checked == [key.key_id] and len(key.key_id) == 16


def test_a_record_forged_at_the_end_is_caught_only_by_the_key(
    signed: tuple[AuditLog, AuditKey, list[str]],
) -> None:
    log, key, _ = signed
    append_forged(log)
    assert log.verify().ok  # the chain alone cannot tell: the hash is right
    bad = log.verify(keys=[key]).first_bad
    assert bad is not None and (bad.kind, bad.seq, bad.id) == ("unsigned", 6, "forged-end")


def test_a_forged_signature_at_the_end_is_caught(
    signed: tuple[AuditLog, AuditKey, list[str]], tmp_path: Path
) -> None:
    log, key, _ = signed
    hashed = append_forged(log)
    # The forger signs with a key of their own, and claims the real key's id.
    theirs = key_file(tmp_path, "theirs.key")
    conn = sqlite3.connect(log.path, isolation_level=None)
    conn.execute("INSERT INTO signatures VALUES (6, ?, ?)", (key.key_id, theirs.sign(hashed)))
    conn.close()
    bad = log.verify(keys=[key]).first_bad
    assert bad is not None and (bad.kind, bad.seq) == ("forged", 6)


def test_a_rewritten_middle_is_caught_by_the_key_without_an_anchor(
    signed: tuple[AuditLog, AuditKey, list[str]],
) -> None:
    log, key, ids = signed
    # Record 3 changed, and every hash from it on recomputed: a consistent chain.
    contents = [log.get(i).content() for i in ids]
    contents[2]["result"]["total_insured_value"] = "1.00"
    previous = contents[1]["prev_hash"]
    conn = sqlite3.connect(log.path, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    previous = log.get(ids[1]).hash
    for content in contents[2:]:
        content["prev_hash"] = previous
        body = canonical_json(content)
        previous = hashlib.sha256(body.encode()).hexdigest()
        conn.execute(
            "UPDATE records SET body = ?, hash = ? WHERE seq = ?", (body, previous, content["seq"])
        )
    conn.close()
    assert log.verify().ok
    bad = log.verify(keys=[key]).first_bad
    assert bad is not None and (bad.kind, bad.seq, bad.id) == ("forged", 3, ids[2])


def test_the_wrong_key_is_named(
    signed: tuple[AuditLog, AuditKey, list[str]], tmp_path: Path
) -> None:
    log, key, ids = signed
    other = key_file(tmp_path, "other.key")
    bad = log.verify(keys=[other]).first_bad
    assert bad is not None and (bad.kind, bad.seq, bad.id) == ("unknown_key", 1, ids[0])
    assert key.key_id in bad.message


def test_an_unsigned_record_in_a_signed_log_is_caught(
    signed: tuple[AuditLog, AuditKey, list[str]], shipped: RuleSet
) -> None:
    log, key, _ = signed
    # A writer without the key (a misconfigured process, or a forger using tiv itself).
    unsigned = AuditLog(log.path, key=None)
    (forged,) = fill(unsigned, shipped, 1)
    fill(log, shipped, 1)
    report = log.verify(keys=[key])
    assert report.first_bad is not None
    assert (report.first_bad.kind, report.first_bad.seq, report.first_bad.id) == (
        "unsigned",
        6,
        forged,
    )
    assert report.signed == 6


def test_rotated_keys_verify_together(tmp_path: Path, shipped: RuleSet) -> None:
    old, new = key_file(tmp_path, "old.key"), key_file(tmp_path, "new.key")
    fill(AuditLog(tmp_path / "a.db", key=old), shipped, 2)
    log = AuditLog(tmp_path / "a.db", key=new)
    fill(log, shipped, 2)
    assert log.verify(keys=[old, new]).ok
    bad = log.verify(keys=[old]).first_bad
    assert bad is not None and (bad.kind, bad.seq) == ("unknown_key", 3)


def test_keys_that_cannot_sign_are_one_line_errors(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"too short\n")
    with pytest.raises(AuditError, match="32 bytes or more"):
        AuditKey.from_file(short)
    with pytest.raises(AuditError, match="cannot read"):
        AuditKey.from_file(tmp_path / "absent.key")
    key_file(tmp_path)
    with pytest.raises(AuditError, match="never overwritten"):
        key_file(tmp_path)


def test_signing_and_verifying_on_the_command_line(tmp_path: Path) -> None:
    key, store = tmp_path / "k", tmp_path / "audit.db"
    made = tiv("audit", "keygen", str(key))
    assert made.returncode == 0 and "key id" in made.stdout
    assert (key.stat().st_mode & 0o777) == 0o600
    for _ in range(2):
        ran = tiv(
            "value",
            str(SEED),
            "--policy",
            "standard",
            "--audit",
            str(store),
            "--audit-key",
            str(key),
        )
        assert ran.returncode == 0, ran.stderr
    ok = tiv("audit", "verify", str(store), "--key", str(key))
    assert ok.returncode == 0 and "every record signed by key" in ok.stdout, ok.stdout
    # The environment variable is the same option.
    ran = tiv(
        "value",
        str(SEED),
        "--policy",
        "standard",
        "--audit",
        str(store),
        env={"TIV_AUDIT_KEY_FILE": str(key)},
    )
    assert ran.returncode == 0, ran.stderr
    assert tiv("audit", "verify", str(store), "--key", str(key)).returncode == 0
    append_forged(AuditLog(store, key=None))
    unchecked = tiv("audit", "verify", str(store))
    assert unchecked.returncode == 0 and "signed, not checked" in unchecked.stdout
    caught = tiv("audit", "verify", str(store), "--key", str(key))
    assert caught.returncode == 1 and "Traceback" not in caught.stderr
    assert len(caught.stderr.strip().splitlines()) == 1
    assert "broken (unsigned): record seq 4 (id forged-end)" in caught.stderr


# --- crashes and concurrency --------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from engine import load_rules, value
    from engine.compliance.audit import AuditLog
    from engine.compliance.corpus import generate

    rules = load_rules(sys.argv[1])
    log = AuditLog(sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()  # wait for go, so concurrent writers start together
    for facts in generate(int(sys.argv[3]), int(sys.argv[4])):
        print(value(rules, facts, policy="standard", audit=log).audit_id, flush=True)
    """
)


def writer(path: Path, count: int, seed: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ROOT), str(path), str(count), str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_writer_killed_mid_batch_leaves_every_committed_record_intact(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditLog(path)
    proc = writer(path, 100_000, 3)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    committed = [proc.stdout.readline().strip() for _ in range(40)]
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no rollback: mid-write, most likely
    proc.wait(timeout=30)
    log = AuditLog(path)
    report = log.verify()
    assert report.ok, report.first_bad
    assert report.records >= 40
    for record_id in committed:
        record = log.get(record_id)
        assert record.hash == hashlib.sha256(canonical_json(record.content()).encode()).hexdigest()
    # The chain goes on where the killed writer stopped.
    fill(log, load_rules(ROOT), 1)
    assert log.verify().ok and log.verify().records == report.records + 1


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditLog(path)
    procs = [writer(path, 30, seed) for seed in range(2)]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    written = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        written += out.split()
    log = AuditLog(path)
    report = log.verify()
    assert report.ok, report.first_bad
    assert report.records == 60 and len(set(written)) == 60
    assert [r.seq for r in log] == list(range(1, 61))
    assert {r.id for r in log} == set(written)


# --- show and replay ----------------------------------------------------------------


def test_replay_after_reload_is_identical_and_show_prints_the_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    proc = tiv("value", str(SEED), "--policy", "standard", "--audit", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "Audit record: " in proc.stdout
    record_id = proc.stdout.rsplit("Audit record: ", 1)[1].strip()

    proc = tiv("audit", "replay", record_id[:8], "--audit", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IDENTICAL" in proc.stdout and f"{PACK}  sha256" in proc.stdout

    # TIV_AUDIT is the configured default, for value and for the audit verbs.
    proc = tiv("value", str(SEED), "--policy", "standard", env={"TIV_AUDIT": str(path)})
    assert proc.returncode == 0 and "Audit record: " in proc.stdout
    proc = tiv("audit", "show", "last", env={"TIV_AUDIT": str(path)})
    assert proc.returncode == 0, proc.stderr
    assert "(seq 2)" in proc.stdout and "Total insured value: 561,709.00 USD" in proc.stdout
    assert f"standard@1.0.0         {PACK}" in proc.stdout
    proc = tiv("audit", "list", "--audit", str(path), "--format", "json")
    assert [r["seq"] for r in json.loads(proc.stdout)] == [1, 2]

    report = replay(AuditLog(path).get(record_id), ROOT)
    assert report.identical and report.differences == []


def repo_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("policies", "rules", "examples"):
        shutil.copytree(ROOT / folder, root / folder)
    return root


def test_replay_refuses_changed_rules_or_reports_what_they_change(tmp_path: Path) -> None:
    root = repo_copy(tmp_path)
    log = AuditLog(tmp_path / "audit.db")
    record_id = value(load_rules(root), SEED, policy="standard", audit=log).audit_id
    assert record_id
    pack = root / PACK
    pack.write_text(pack.read_text().replace("value: 0.10", "value: 0.11"))

    record = log.get(record_id)
    with pytest.raises(AuditError) as refused:
        replay(record, root)
    assert refused.value.exit_code == 3 and PACK in str(refused.value)
    proc = tiv("--rules", str(root), "audit", "replay", record_id, "--audit", str(log.path))
    assert proc.returncode == 3 and PACK in proc.stderr and "has changed" in proc.stderr

    report = replay(record, root, current=True)
    assert not report.identical
    changed = {d.path: (d.recorded, d.replayed) for d in report.differences}
    # margin = (500,000.00 + 9,070.00) × 0.11 = 55,997.70, was 50,907.00 at 0.10
    assert changed["components.margin"] == ("50907.00", "55997.70")
    assert changed["total_insured_value"][0] == "561709.00"
    proc = tiv(
        "--rules", str(root), "audit", "replay", record_id, "--audit", str(log.path),
        "--current-rules",
    )  # fmt: skip
    assert proc.returncode == 1 and "DIFFERENT" in proc.stdout
    assert "components.margin: 50907.00 → 55997.70" in proc.stdout


def test_a_record_made_before_the_category_vocabulary_replays_without_it(tmp_path: Path) -> None:
    # A repository from before rules/reference/goods_categories.yaml existed: categories
    # are not checked, so `art` stays `art`, which blue-harbour's table does not rate (a
    # gap: refer). Adding the vocabulary later reads `art` as `fine_art`; a replay of the
    # old record must still use exactly the reference files it names.
    root = repo_copy(tmp_path)
    vocabulary = root / "rules/reference/goods_categories.yaml"
    kept = vocabulary.read_bytes()
    vocabulary.unlink()
    log = AuditLog(tmp_path / "audit.db")
    facts = shipment(goods=[{"description": "a painting", "value": "40000.00", "category": "art"}])
    old = value(load_rules(root), facts, policy="blue-harbour", audit=log)
    assert old.audit_id
    vocabulary.write_bytes(kept)
    now = value(load_rules(root), facts, policy="blue-harbour")
    assert now.model_dump(exclude={"trace", "audit_id"}) != old.model_dump(
        exclude={"trace", "audit_id"}
    )  # the vocabulary changes how the same facts value today
    report = replay(log.get(old.audit_id), root)
    assert report.identical, report.differences
    assert "rules/reference/goods_categories.yaml" not in {f.path for f in report.files}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_replay_reads_the_recorded_bytes_from_git_history(tmp_path: Path) -> None:
    root = repo_copy(tmp_path)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "rules"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env, capture_output=True)
    log = AuditLog(tmp_path / "audit.db")
    record_id = value(load_rules(root), SEED, policy="standard", audit=log).audit_id
    assert record_id
    pack = root / PACK
    pack.write_text(pack.read_text().replace("value: 0.10", "value: 0.11"))
    report = replay(log.get(record_id), root)
    assert report.identical
    assert next(f.found for f in report.files if f.path == PACK).startswith("git ")


# --- masking ------------------------------------------------------------------------


def test_masked_fields_are_not_stored_and_replay_says_so(tmp_path: Path, shipped: RuleSet) -> None:
    path = tmp_path / "audit.db"
    AuditLog(path, mask=["id", "goods[*].description", "origin.port"])
    log = AuditLog(path)  # the store remembers its mask
    assert log.mask == ("id", "goods[*].description", "origin.port")
    result = value(shipped, SEED, policy="standard", audit=log)
    assert result.shipment_id == "SEED-0001"  # the caller still gets the real result
    record = log.get(result.audit_id or "")
    assert record.masked == ["goods[0].description", "id", "origin.port"]
    assert record.facts["id"] == MASK_MARKER and record.facts["origin"]["port"] == MASK_MARKER
    assert record.facts["goods"][0]["description"] == MASK_MARKER
    assert record.facts["goods"][0]["hs_code"] == "847130"  # the rest is kept
    # The result repeats the id; it is masked there too.
    assert record.result["shipment_id"] == MASK_MARKER
    body = sqlite3.connect(path).execute("SELECT body FROM records").fetchone()[0]
    assert "SEED-0001" not in body and "Laptop computers" not in body and "CNSZX" not in body

    report = replay(record, ROOT)
    assert report.identical
    assert any("goods[0].description, id, origin.port" in note for note in report.notes)


def test_a_replay_that_needs_a_masked_figure_refuses_naming_it(
    tmp_path: Path, shipped: RuleSet
) -> None:
    log = AuditLog(tmp_path / "audit.db", mask=["invoice.amount"])
    result = value(shipped, SEED, policy="standard", audit=log)
    with pytest.raises(AuditError, match=r"needs the masked field\(s\) invoice.amount"):
        replay(log.get(result.audit_id or ""), ROOT)


def test_bad_mask_paths_and_missing_stores_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="not a mask path"):
        AuditLog(tmp_path / "a.db", mask=["goods[*"])
    with pytest.raises(AuditError, match="no audit store"):
        AuditLog(tmp_path / "missing.db", create=False)
    proc = tiv("audit", "verify", str(tmp_path / "missing.db"))
    assert proc.returncode == 64 and proc.stderr.count("\n") == 1
    (tmp_path / "junk.db").write_text("not sqlite")
    proc = tiv("value", str(SEED), "--audit", str(tmp_path / "junk.db"))
    assert proc.returncode == 64 and "Traceback" not in proc.stderr and proc.stdout == ""


CLAIMS = """\
claims:
  formulas:
    damage: 1 if loss.kind == "total" else loss.damage_percent / 100
    indemnity: round(tiv * damage)
  result:
    indemnity: indemnity
    components: [damage]
"""


def test_claims_are_recorded_masked_and_replayed(tmp_path: Path) -> None:
    from engine import claim
    from tests.conftest import mini, repo

    root = tmp_path / "repo"
    for path, text in repo(mini() + CLAIMS).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    rules = load_rules(root)
    log = AuditLog(tmp_path / "audit.db", mask=["id"])
    facts = shipment(id="C-1")
    settled = claim(rules, facts, {"kind": "partial", "damage_percent": "25"}, policy="mini",
                    audit=log)  # fmt: skip
    # TIV 1,000.00 × 1.10 = 1,100.00; 25% of it = 275.00
    assert settled.indemnity == Decimal("275.00")
    record = log.get(settled.audit_id or "")
    assert record.kind == "claim" and record.masked == ["shipment.id"]
    assert record.facts["shipment"]["id"] == MASK_MARKER
    assert record.facts["loss"]["damage_percent"] == "25"
    assert record.rule_files[0].path == "policies/mini/1.0.0.yaml"
    assert "275.00" in record.explained()
    report = replay(record, root)
    assert report.identical, report.differences
    proc = tiv("--rules", str(root), "audit", "list", "--audit", str(log.path))
    assert "claim: indemnity 275.00 USD" in proc.stdout


# --- show verifies; list by time ------------------------------------------------------


def test_show_verifies_the_record_it_prints(store: tuple[AuditLog, list[str]]) -> None:
    log, ids = store
    shown = run_cli("audit", "show", ids[1], "--audit", log.path)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    # Record 2's TIV changed and its hash recomputed: consistent alone, but record 3
    # no longer follows it. Show prints it, warns, and exits 1.
    content = log.get(ids[1]).content()
    content["result"]["total_insured_value"] = "1.00"
    body = canonical_json(content)
    tamper(
        log.path,
        "UPDATE records SET body = ?, hash = ? WHERE seq = 2",
        params=(body, hashlib.sha256(body.encode()).hexdigest()),
    )
    for form in ("text", "json"):
        shown = run_cli("audit", "show", ids[1], "--audit", log.path, "--format", form)
        assert shown.returncode == 1, shown.stderr
        assert "1.00" in shown.stdout  # the record is still shown, as stored
        (warning,) = shown.stderr.splitlines()
        assert warning.startswith("tiv: warning: this record fails its check (altered)")
        assert f"record seq 2 (id {ids[1]})" in warning
    # A figure edited without re-hashing: the record's own hash says so.
    tiv_text = log.get(ids[3]).result["total_insured_value"]
    tamper(
        log.path,
        "UPDATE records SET body = replace(body, ?, ?) WHERE seq = 4",
        params=(f'"total_insured_value":"{tiv_text}"', '"total_insured_value":"2.00"'),
    )
    assert "does not match its hash" in run_cli("audit", "show", ids[3], "--audit", log.path).stderr
    # The records around it are intact and show clean.
    assert run_cli("audit", "show", ids[0], "--audit", log.path).returncode == 0
    assert log.check(log.get(ids[4])) is None


def test_list_since_and_until(store: tuple[AuditLog, list[str]]) -> None:
    log, _ = store
    stamps = {
        1: "2025-03-01T23:59:59.999999Z",
        2: "2025-03-02T00:00:00.000000Z",
        3: "2025-03-31T12:00:00.000000Z",
        4: "2025-04-01T00:00:00.000000Z",
        5: "2025-04-02T08:30:00.000000Z",
    }
    # recorded_at sits in the column and in the hashed body: set both, as a clock would.
    for seq, stamp in stamps.items():
        content = log.get(str(seq)).content()
        content["recorded_at"] = stamp
        body = canonical_json(content)
        digest = hashlib.sha256(body.encode()).hexdigest()
        tamper(log.path, f"UPDATE records SET recorded_at = '{stamp}' WHERE seq = {seq}")
        tamper(
            log.path,
            f"UPDATE records SET body = ?, hash = ? WHERE seq = {seq}",
            params=(body, digest),
        )

    def listed(*args: str) -> list[int]:
        ran = run_cli("audit", "list", "--audit", log.path, "--format", "json", *args)
        assert ran.returncode == 0, ran.stderr
        return [row["seq"] for row in json.loads(ran.stdout)]

    assert listed() == [1, 2, 3, 4, 5]
    # A date is its whole day, UTC: March is 2 and 3 (1 is a microsecond before it).
    assert listed("--since", "2025-03-02", "--until", "2025-03-31") == [2, 3]
    assert listed("--since", "2025-04-01") == [4, 5]
    assert listed("--until", "2025-03-01") == [1]
    # A time is a moment: from 12:00 on 31 March up to (not including) 08:30 on 2 April.
    assert listed("--since", "2025-03-31T12:00", "--until", "2025-04-02T08:30") == [3, 4]
    assert listed("--since", "2025-04-01", "--limit", "1") == [5]
    bad = run_cli("audit", "list", "--audit", log.path, "--since", "March")
    assert bad.returncode == 2 and "'March' is not a date" in bad.stderr
