"""Spark on a real local[2] session: the same bytes as local `tiv batch`, bad rows as error
rows, rules compiled once per executor process, Parquet facts made on the JVM as facts_of
reads them, impact as `tiv impact` reports it, and a segmented audit log that verifies and
catches a tampered segment; and a real Spark Connect server (PySpark's own
start-connect-server.sh, on loopback) driven by `tiv batch/impact --spark sc://...`.

Without Java or PySpark these tests skip on a workstation and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.batch import BatchOptions, run_batch
from engine.batch.parquet import write_shipments
from engine.compliance.corpus import generate

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parent.parent


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Spark tests cannot run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    java = shutil.which("java") or (
        os.path.join(os.environ["JAVA_HOME"], "bin", "java") if "JAVA_HOME" in os.environ else None
    )
    if java is None:
        _unavailable("no Java: install OpenJDK 17 or set JAVA_HOME")
    try:
        from engine.batch.spark import session
    except ImportError as error:
        _unavailable(f"PySpark is not installed ({error}): pip install -e '.[spark]'")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only, as every test server
    spark = session(
        "local[2]",
        "tiv-tests",
        {
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.shuffle.partitions": "2",
        },
    )
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()


def _jsonl(path: Path, shipments: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in shipments), encoding="utf-8")
    return path


def _local_batch(source: Path, out: Path, **options: Any) -> bytes:
    run_batch(ROOT, BatchOptions(input=source, output=out, policy="standard", **options))
    return out.read_bytes()


def test_a_10000_row_corpus_gives_the_bytes_of_local_batch(spark: Any, tmp_path: Path) -> None:
    from engine.batch.spark import read_input, value_dataframe, write_output

    shipments = list(generate(10_000, seed=13))
    jsonl = _jsonl(tmp_path / "book.jsonl", shipments)
    parquet = tmp_path / "book.parquet"
    write_shipments(shipments, parquet, rows_per_group=1_000)
    expected = _local_batch(jsonl, tmp_path / "local.jsonl", workers=2)
    assert expected.count(b"\n") == 10_000
    # Spark reads the Parquet copy and still writes the bytes batch wrote from the JSON
    # Lines (JSON Lines on Spark is checked byte for byte in the bad-row test).
    result = value_dataframe(read_input(spark, str(parquet)), ROOT, "standard")
    assert result.rdd.getNumPartitions() >= 2  # the work was really spread
    out = tmp_path / "spark.jsonl"
    assert write_output(result, str(out)) == 10_000
    assert out.read_bytes() == expected


def test_spark_makes_the_facts_facts_of_reads_from_parquet(spark: Any, tmp_path: Path) -> None:
    """Spark writes a Parquet record's facts as JSON text on the JVM: the same facts, to
    the written digit, as `facts_of` reads from the record in Python."""
    from engine.batch.parquet import facts_of
    from engine.batch.spark import FACTS
    from engine.batch.spark.facts_json import facts_as_json

    minor = {"JPY": 0, "USD": 2, "KWD": 3, "CLF": 4}
    edges = [
        # USD 2 places: 12.3000 -> "12.30", 12.3456 keeps 4, 12.3450 -> "12.345".
        {"id": "A", "currency": "USD", "invoice": {"amount": "12.3000"},
         "charges": [{"type": "t", "amount": "12.3456"}, {"type": "u", "amount": "12.3450"}],
         "sum_insured": "-0.5000"},
        # Goods inherit the invoice's currency (JPY: 5.0000 -> "5"), charges the
        # valuation currency's unless their own (KWD 1.2340 -> "1.234").
        {"id": "B", "currency": "USD", "invoice": {"amount": "1", "currency": "JPY"},
         "goods": [{"description": "x", "value": "5"},
                   {"description": "y", "value": "5.5", "currency": "CLF"}],
         "charges": [{"type": "t", "amount": "7.5"}, {"type": "k", "amount": "1.234",
                                                      "currency": "KWD"}],
         "duties": [], "date": "2025-03-01", "fx": {"JPY": "0.0067"}},
        # An unknown currency and none: the amount as written, all four places.
        {"id": "C", "currency": "usd", "invoice": {"amount": "1200"}},
        {"id": "D", "invoice": {"amount": "1200"}, "expected_transit_days": 3},
    ]  # fmt: skip
    shipments = [*edges, *generate(300, seed=17)]
    path = tmp_path / "book.parquet"
    write_shipments(shipments, path, rows_per_group=100)
    made = facts_as_json(spark.read.parquet(str(path)), minor)
    assert made is not None and made.columns == [FACTS]
    got = [json.loads(r[0]) for r in made.collect()]
    records = spark.read.parquet(str(path)).collect()
    assert len(got) == len(records) == 304
    # facts_of gives Decimal and date objects; JSON text gives their written form.
    expected = [
        json.loads(json.dumps(facts_of(r.asDict(recursive=True), minor), default=str))
        for r in records
    ]
    assert got == expected
    assert got[0]["invoice"]["amount"] == "12.30"
    assert [c["amount"] for c in got[0]["charges"]] == ["12.3456", "12.345"]
    assert got[0]["sum_insured"] == "-0.50"
    assert [g["value"] for g in got[1]["goods"]] == ["5", "5.5000"]
    assert [c["amount"] for c in got[1]["charges"]] == ["7.50", "1.234"]
    assert got[1]["duties"] == [] and "duties" not in got[0]  # given as none / not given
    assert got[2]["invoice"]["amount"] == got[3]["invoice"]["amount"] == "1200.0000"
    # Any other schema is read in Python, as facts_of reads it.
    table = spark.read.parquet(str(path))
    assert facts_as_json(table.select("id", "currency"), minor) is not None  # a subset
    with_month = table.selectExpr("*", "'2025-03' AS month")
    assert facts_as_json(with_month, minor) is None  # month is no fact: read in Python
    keyed = facts_as_json(with_month, minor, ("id", "month"))  # a key, not a fact
    assert keyed is not None and keyed.columns == ["id", "month", FACTS]
    assert [json.loads(r[FACTS]) for r in keyed.collect()] == got
    assert facts_as_json(spark.createDataFrame([(1.5,)], "sum_insured double"), minor) is None


def test_a_bad_row_is_an_error_row_and_the_job_goes_on(spark: Any, tmp_path: Path) -> None:
    from engine.batch.spark import read_input, value_dataframe, write_output

    good = next(iter(generate(1, seed=2)))
    bad_currency = {**good, "id": "BAD-CUR", "currency": "usd"}
    bad_charge = {**good, "id": "BAD-AMT", "charges": [{"type": "air_freight", "amount": "x"}]}
    source = tmp_path / "mixed.jsonl"
    source.write_text(
        json.dumps(good)
        + "\n\n"  # a blank line: skipped, but counted as a line
        + "[1, 2]\n"
        + json.dumps(bad_currency)
        + "\n"
        + json.dumps(bad_charge)
        + "\n",
        encoding="utf-8",
    )
    rows = value_dataframe(read_input(spark, str(source)), ROOT, "standard").collect()
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error"]
    assert [(r["row"], r["line"]) for r in rows] == [(1, 1), (2, 3), (3, 4), (4, 5)]
    assert rows[1]["error"]["kind"] == "invalid_facts" and rows[1]["error"]["path"] is None
    assert rows[2]["error"]["path"] == "currency"
    assert rows[3]["error"]["path"] == "charges[0].amount"
    assert "charges[0].amount: " in rows[3]["error"]["message"]
    assert rows[0]["total_insured_value"] and rows[0]["policy_id"] == "standard"
    assert rows[3]["total_insured_value"] is None
    # Every row, good or bad, is the line tiv batch writes for it.
    local = _local_batch(source, tmp_path / "local.jsonl").decode("utf-8").splitlines()
    assert [r["result"] for r in rows] == local
    # The narrow form (what writing JSON Lines needs) says the same.
    narrow = value_dataframe(read_input(spark, str(source)), ROOT, "standard", lines_only=True)
    assert [tuple(r) for r in narrow.collect()] == [
        (r["row"], r["line"], r["status"], r["result"]) for r in rows
    ]
    # Lines written by the tasks themselves, joined: tiv batch's file, byte for byte.
    parts, out = tmp_path / "parts", tmp_path / "spark.jsonl"
    written = value_dataframe(read_input(spark, str(source)), ROOT, "standard", lines_to=parts)
    assert write_output(written, str(out), parts=parts) == 4
    assert out.read_text(encoding="utf-8").splitlines() == local and not parts.exists()


def test_rules_compile_once_per_executor_process(spark: Any, tmp_path: Path) -> None:
    from engine.batch.spark import compiles, value_dataframe

    # Rules no executor of this session has seen (their own rules id): the executors'
    # Python workers outlive a job, and keep rules they compiled for earlier tests.
    repo = tmp_path / "repo"
    for folder in ("policies", "rules", "examples"):  # packs' examples name shipments
        shutil.copytree(ROOT / folder, repo / folder)
    pack = repo / "policies/standard/1.0.0.yaml"
    pack.write_bytes(pack.read_bytes() + b"# a copy for the compile count\n")
    shipments = list(generate(400, seed=4))
    rows = [(json.dumps(s),) for s in shipments]
    df = spark.createDataFrame(rows, "facts string").repartition(8)  # 8 tasks, 2 cores
    log = tmp_path / "compiles.log"
    result = value_dataframe(df, repo, "standard", compile_log=log)
    assert result.where("status = 'ok'").count() == 400
    found = compiles(log)
    pids = [pid for pid, _ in found]
    # Counted, not assumed: each Python worker compiled once (no pid twice), and no more
    # workers than cores compiled although 8 tasks ran.
    assert len(pids) == len(set(pids)), f"a process compiled twice: {found}"
    assert 1 <= len(pids) <= 2, found
    assert {rid for _, rid in found} == {result.first()["rules_id"]}


def test_impact_on_spark_reports_what_tiv_impact_reports(spark: Any, tmp_path: Path) -> None:
    from engine.batch.spark import impact_dataframe, impact_summary, read_input
    from engine.compliance.impact import impact

    corpus = _jsonl(tmp_path / "book.jsonl", list(generate(300, seed=21)))
    old, new = "forwarder-all-risks@1.0.0", "forwarder-all-risks@2.0.0"
    expected, expected_details = impact(ROOT, old, new, corpus)
    df = read_input(spark, str(corpus))
    report, details = impact_summary(
        impact_dataframe(df, ROOT, old, new), old, new, corpus=str(corpus), workers=1
    )
    assert report == expected
    assert details == expected_details
    assert expected.shipments == 300


def _audited_run(spark: Any, tmp_path: Path) -> Path:
    from engine.batch.spark import seal_audit, value_dataframe

    shipments = list(generate(40, seed=8))
    df = spark.createDataFrame([(json.dumps(s),) for s in shipments], "facts string")
    folder = tmp_path / "audit"
    result = value_dataframe(df.repartition(4), ROOT, "standard", audit=folder)
    ids = [r["audit_id"] for r in result.collect()]
    assert len(ids) == 40 and all(ids)
    seal_audit(folder)
    return folder


def _verify(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "audit", "verify", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_segmented_audit_verifies_and_catches_tampering(spark: Any, tmp_path: Path) -> None:
    from engine.compliance.audit.segments import verify

    folder = _audited_run(spark, tmp_path)
    report = verify(folder)
    assert report.ok, report.problems
    assert (report.segments, report.records) == (4, 40)
    done = _verify(folder)
    assert done.returncode == 0, done.stderr
    assert "4 segment(s), 40 record(s)" in done.stdout

    segments = sorted(folder.glob("segment-*.db"))
    # Missing: one segment deleted.
    missing = Path(shutil.copytree(folder, tmp_path / "missing"))
    (missing / segments[1].name).unlink()
    assert f"{segments[1].name}: missing" in " ".join(verify(missing).problems)
    # Reordered: two segments' files swapped.
    swapped = Path(shutil.copytree(folder, tmp_path / "swapped"))
    a, b = swapped / segments[0].name, swapped / segments[2].name
    a.rename(swapped / "tmp.db")
    b.rename(a)
    (swapped / "tmp.db").rename(b)
    problems = " ".join(verify(swapped).problems)
    assert "swapped or reordered" in problems, problems
    # Altered: a record's figure rewritten inside one segment (the append-only trigger
    # dropped first, as a tamperer would).
    altered = Path(shutil.copytree(folder, tmp_path / "altered"))
    with sqlite3.connect(altered / segments[3].name) as conn:
        conn.execute("DROP TRIGGER records_no_update")
        body = conn.execute("SELECT body FROM records WHERE seq = 1").fetchone()[0]
        tiv = json.loads(body)["result"]["total_insured_value"]
        conn.execute("UPDATE records SET body = ? WHERE seq = 1", (body.replace(tiv, "1", 1),))
    found = verify(altered)
    assert not found.ok and found.problems[0].startswith(f"{segments[3].name}: ")
    assert "altered" in found.problems[0]
    done = _verify(altered)
    assert done.returncode == 1 and "BROKEN" in done.stdout


def test_the_cli_values_parquet_on_spark_and_impact_prints_tiv_impacts_report(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    shipments = list(generate(60, seed=31))
    shipments[7] = {**shipments[7], "currency": "usd"}  # a bad row: exit 2, job goes on
    parquet = tmp_path / "book.parquet"
    write_shipments(shipments, parquet, rows_per_group=20)
    out = tmp_path / "results"
    code = main(
        ["--rules", str(ROOT), "batch", str(parquet), "--policy", "standard",
         "--spark", "local[2]", "-o", str(out), "--key", "id"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "60 rows, 59 valued, 1 failed" in err and "on Spark local[2]" in err
    rows = {r["row"]: r for r in spark.read.parquet(str(out)).collect()}
    assert len(rows) == 60 and rows[8]["status"] == "error" and rows[8]["id"] == shipments[7]["id"]
    assert rows[8]["error"]["path"] == "currency"
    local = _local_batch(parquet, tmp_path / "local.jsonl").decode("utf-8").splitlines()
    assert [rows[n]["result"] for n in range(1, 61)] == local

    corpus = _jsonl(tmp_path / "c.jsonl", shipments)
    args = ["impact", "forwarder-all-risks@1.0.0", "forwarder-all-risks@2.0.0"]
    args += ["--corpus", str(corpus), "--no-progress"]
    assert main(["--rules", str(ROOT), *args, "--workers", "1"]) == 0
    expected = capsys.readouterr().out
    assert main(["--rules", str(ROOT), *args, "--spark", "local[2]"]) == 0
    # The same report; only the worker count line may differ.
    got = capsys.readouterr().out
    assert [x for x in got.splitlines() if "worker" not in x] == [
        x for x in expected.splitlines() if "worker" not in x
    ]
    assert main(["--rules", str(ROOT), "batch", str(corpus), "--policy", "standard",
                 "--spark", "local[2]", "-o", str(tmp_path / "x.csv")]) == 64  # fmt: skip


def test_a_csv_bordereau_on_spark_writes_the_jsonl_of_local_batch(
    spark: Any, tmp_path: Path
) -> None:
    from engine.batch.spark import run_spark_batch

    source = tmp_path / "in.csv"
    source.write_text(
        "id,date,currency,mode,origin.country,destination.country,invoice.amount,"
        "charges[0].type,charges[0].amount,duties\n"
        # freight 100.00; margin = 1100.00 x 0.10 = 110.00; TIV = 1000.00 + 100.00 + 110.00
        "C-1,2025-03-14,USD,ocean,CN,US,1000.00,ocean_freight,100.00,none\n"
        "C-2,2025-03-14,USD,ocean,CN,US,abc,ocean_freight,1.00,none\n"  # a bad amount
        "C-3,2025-03-14,USD,ocean,CN,US,10.00,ocean_freight,1.00,maybe\n",  # a bad list cell
        encoding="utf-8",
    )
    out = tmp_path / "spark.jsonl"
    summary = run_spark_batch(ROOT, "local[2]", str(source), str(out), "standard", spark=spark)
    assert (summary.rows, summary.failed) == (3, 2)
    local = _local_batch(source, tmp_path / "local.jsonl")
    assert out.read_bytes() == local
    first, second, third = (json.loads(line) for line in local.decode().splitlines())
    assert first["valuation"]["total_insured_value"] == "1210.00"
    assert second["error"]["problems"][0]["column"] == "invoice.amount"
    assert third["line"] == 4 and third["error"]["problems"][0]["path"] == "duties"


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Spark Connect server on loopback, started by PySpark's own script (its jars
    ship in the wheel): `sc://127.0.0.1:PORT`. Its executors run this interpreter."""
    try:
        import grpc  # noqa: F401  (the Connect client's transport)
        import pyspark
    except ImportError as error:
        _unavailable(f"no Spark Connect client ({error}): pip install -e '.[spark]'")
    script = Path(pyspark.__file__).parent / "sbin" / "start-connect-server.sh"
    if not script.exists():
        _unavailable(f"no {script}: this PySpark does not ship the Connect server")
    with socket.socket() as probe:  # a free port, as the service tests take theirs
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("connect")
    env = {
        **os.environ,
        "SPARK_PID_DIR": str(folder),
        "SPARK_LOG_DIR": str(folder),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    settings = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
    }
    command = ["bash", str(script), "--wait", "--master", "local[2]"]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    log = (folder / "server.log").open("wb")
    # --wait: in the foreground, so the server is this process's child, in its own group.
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                tail = (folder / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"the Spark Connect server stopped ({server.returncode}): {tail}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the Spark Connect server did not listen within 300 s")
                time.sleep(1)
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_spark_connect_values_and_compares_as_local_batch_and_impact(
    connect_server: str, tmp_path: Path
) -> None:
    """`tiv batch` and `tiv impact` with `--spark sc://...`: the client is a separate
    process (a Connect session switches PySpark's functions to Connect for the whole
    process), the server values: the bytes and the report of the local verbs."""
    shipments = list(generate(120, seed=41))
    shipments[9] = {**shipments[9], "currency": "usd"}  # a bad row: an error row, exit 2
    parquet = tmp_path / "book.parquet"
    write_shipments(shipments, parquet, rows_per_group=30)
    corpus = _jsonl(tmp_path / "book.jsonl", shipments)

    def tiv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "--rules", str(ROOT), *args],
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip

    out = tmp_path / "connect.jsonl"
    done = tiv("batch", str(parquet), "--policy", "standard", "--spark", connect_server,
               "-o", str(out))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "120 rows, 119 valued, 1 failed" in done.stderr, done.stderr
    assert out.read_bytes() == _local_batch(corpus, tmp_path / "local.jsonl")

    refs = ["impact", "forwarder-all-risks@1.0.0", "forwarder-all-risks@2.0.0"]
    refs += ["--corpus", str(corpus), "--no-progress"]
    local = tiv(*refs, "--workers", "1")
    remote = tiv(*refs, "--spark", connect_server)
    assert local.returncode == remote.returncode == 0, remote.stderr
    # The same report; only the worker count line may differ.
    assert [x for x in remote.stdout.splitlines() if "worker" not in x] == [
        x for x in local.stdout.splitlines() if "worker" not in x
    ]
