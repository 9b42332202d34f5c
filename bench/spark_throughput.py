"""Spark local[2] against local `tiv batch --workers 2`: rates, per-row and fixed costs.

    .venv/bin/python bench/spark_throughput.py [--n 1000000] [--cores 2] [--keep DIR]

Generates N shipments (`engine.corpus`, seed 1; not timed) in `cores` processes, as a
folder of Parquet part files (`write_shipments`, PARTS files of N/PARTS rows, row groups
of 10,000) and as one JSON Lines file, the same rows in the same order. Then values them
under `standard`, writing JSON Lines, with:

  local   run_batch(workers=cores) on the JSON Lines file, as `tiv batch` does;
  spark   a local[cores] session: value_dataframe on the Parquet folder, written by
          write_output, as `tiv batch --spark` does (the tasks write part files, the
          driver joins them: no result passes through the driver's memory or the JVM).

With --keep DIR a corpus of N rows already there is used again.

Each is run on the first N/10 rows (the first part file; its JSON Lines prefix) and on
all N, so a cost splits into a fixed part and a per-row part: per_row = (T(N) - T(N/10))
/ (0.9 N), fixed = T(N) - N per_row. For Spark the session start and the first job
(Python workers start, rules compile) are timed on their own; the measured runs reuse
the warm workers, as every job of a session does. The outputs are compared byte for
byte. A task's work per row is also timed in this process, on one core and 20,000 rows:
valuing facts JSON text with batch's own encoder (Spark makes that text from Parquet on
the JVM), and reading Arrow into facts in Python (the road for tables in another schema).

The machine's load average is printed before and after: on a shared machine the rates
move with it, the ratio less so. The rate on E executors of C cores is estimated from
the measured costs as rows / (fixed + rows x per_row_core / (E x C)).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from engine.batch import BatchOptions, run_batch
from engine.batch.parquet import count_records, write_shipments
from engine.compliance.corpus import generate, shipment
from engine.service.state import load_snapshot

ROOT = Path(__file__).resolve().parent.parent
PARTS = 10


def _part(folder: Path, index: int, first: int, count: int) -> int:
    """Rows [first, first + count) as Parquet part `index` and its JSON Lines twin."""
    with (folder / f"part-{index:05d}.jsonl").open("w", encoding="utf-8") as handle:

        def rows() -> Iterator[dict[str, Any]]:  # streamed: each row written as made
            for i in range(first, first + count):
                row = shipment(1, i)
                handle.write(json.dumps(row) + "\n")
                yield row

        written = write_shipments(rows(), folder / f"part-{index:05d}.parquet")
    return written


def _corpus(folder: Path, n: int, cores: int) -> tuple[Path, Path]:
    """The Parquet folder and the JSON Lines file of N rows, made in `cores` processes."""
    parquet, jsonl = folder / "book.parquet", folder / "book.jsonl"
    parquet.mkdir()
    size = -(-n // PARTS)
    with ProcessPoolExecutor(cores) as pool:
        done = pool.map(
            _part,
            [parquet] * PARTS,
            range(PARTS),
            [i * size for i in range(PARTS)],
            [max(0, min(size, n - i * size)) for i in range(PARTS)],
        )
        assert sum(done) == n
    with jsonl.open("wb") as out:
        for index in range(PARTS):
            part = parquet / f"part-{index:05d}.jsonl"
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
            if index:
                part.unlink()
    # The first part is the small corpus: its Parquet file and its JSON Lines.
    (parquet / "part-00000.jsonl").rename(folder / "first.jsonl")
    return parquet, jsonl


def _local(jsonl: Path, out: Path, cores: int, snapshot: Any) -> float:
    started = time.perf_counter()
    options = BatchOptions(input=jsonl, output=out, policy="standard", workers=cores)
    summary = run_batch(ROOT, options, snapshot=snapshot)
    assert summary.failed == 0, summary
    return time.perf_counter() - started


def _spark(spark: Any, parquet: Path, out: Path, snapshot: Any) -> tuple[float, float]:
    from engine.batch.spark import read_input, value_dataframe, write_output

    started = time.perf_counter()
    df = read_input(spark, str(parquet))
    parts = out.with_name(f".{out.name}.parts")  # as `tiv batch --spark local[N]` does
    result = value_dataframe(df, snapshot, "standard", lines_to=parts)
    planned = time.perf_counter()  # the row-counting job and the plan
    write_output(result, str(out), parts=parts)
    return planned - started, time.perf_counter() - started


def _same(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as one, b.open("rb") as two:
        while True:
            x, y = one.read(1 << 20), two.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _executor_work(parquet: Path, jsonl: Path, snapshot: Any, n: int = 20_000) -> list[float]:
    """Seconds per row on one core, in this process: batch's encoder valuing JSON text
    facts (what a task does with each row), and, for tables in another schema, reading
    Arrow into facts in Python."""
    from engine.batch.rows import Row, RowEncoder
    from engine.batch.spark.arrow_rows import rows_of

    encoder = RowEncoder(snapshot, "standard")
    with jsonl.open("rb") as handle:
        lines = [handle.readline().strip() for _ in range(n)]
    encoder.encode([Row(i, i, line) for i, line in enumerate(lines[:500], 1)])  # warm
    started = time.perf_counter()
    encoder.encode([Row(i, i, line) for i, line in enumerate(lines, 1)])
    valuing = (time.perf_counter() - started) / n
    minor_units = dict(snapshot.rules.currencies)
    batches = list(pq.ParquetFile(parquet).iter_batches(batch_size=1000))[: n // 1000]
    counters = [0, 0]
    started = time.perf_counter()
    count = sum(len(rows_of(b, False, counters, minor_units, False)[0]) for b in batches)
    return [valuing, (time.perf_counter() - started) / count]


def _split(small: float, large: float, n_small: int, n_large: int) -> tuple[float, float]:
    per_row = (large - small) / (n_large - n_small)
    return per_row, large - per_row * n_large


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="rows (default 1,000,000)")
    parser.add_argument("--cores", type=int, default=2, help="local[N] and --workers N")
    parser.add_argument("--keep", metavar="DIR", help="keep the corpora and outputs here")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="tiv-spark-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    started = time.perf_counter()
    parquet, jsonl = folder / "book.parquet", folder / "book.jsonl"
    if not (parquet.is_dir() and count_records(parquet) == args.n and jsonl.exists()):
        shutil.rmtree(parquet, ignore_errors=True)
        parquet, jsonl = _corpus(folder, args.n, args.cores)
    small_n = -(-args.n // PARTS)
    corpora = {small_n: (folder / "first.jsonl", parquet / "part-00000.parquet")}
    corpora[args.n] = (jsonl, parquet)
    sizes = (small_n, args.n)
    made = time.perf_counter() - started
    print(f"corpus ({args.n:,} rows, {PARTS} Parquet part files and JSON Lines; made or "
          f"found, not timed below): {made:.1f} s", flush=True)  # fmt: skip
    snapshot = load_snapshot(ROOT, check_examples=False, check_lock=False)
    valuing, reading = _executor_work(parquet / "part-00000.parquet", jsonl, snapshot)
    print(f"a task's work per row, one core: valuing JSON text facts {valuing * 1e3:.3f} ms "
          f"(Arrow into facts in Python, for tables in another schema: {reading * 1e3:.3f} ms)",
          flush=True)  # fmt: skip

    from engine.batch.spark import session

    started = time.perf_counter()
    spark = session(f"local[{args.cores}]", "tiv-bench", {"spark.ui.enabled": "false"})
    session_start = time.perf_counter() - started
    print(f"spark session start: {session_start:.1f} s", flush=True)
    # The first job starts the executors' Python workers and compiles the rules in each;
    # later jobs reuse them. Timed on its own, as a fixed cost of the session.
    warm_in, warm_out = folder / "warm.parquet", folder / "warm.jsonl"
    write_shipments(generate(4_000, seed=2), warm_in, rows_per_group=500)
    _, warm_up = _spark(spark, warm_in, warm_out, snapshot)
    print(f"spark first job (Python workers start, rules compile), 4,000 rows: {warm_up:.1f} s",
          flush=True)  # fmt: skip

    local_t, spark_t, plan_t = {}, {}, {}
    for n in sizes:
        source, table = corpora[n]
        local_out, spark_out = folder / f"local-{n}.jsonl", folder / f"spark-{n}.jsonl"
        for path in (local_out, spark_out):
            path.unlink(missing_ok=True)
            Path(str(path) + ".progress").unlink(missing_ok=True)
        local_t[n] = _local(source, local_out, args.cores, snapshot)
        plan_t[n], spark_t[n] = _spark(spark, table, spark_out, snapshot)
        same = _same(local_out, spark_out)
        print(
            f"{n:>9,} rows: local {local_t[n]:7.1f} s ({n / local_t[n]:6.0f} rows/s)   "
            f"spark {spark_t[n]:7.1f} s ({n / spark_t[n]:6.0f} rows/s, of which planning "
            f"and row counting {plan_t[n]:.1f} s)   spark/local {spark_t[n] / local_t[n]:.2f}x"
            f"   outputs byte-identical: {same}",
            flush=True,
        )
        if not same:
            raise SystemExit("the outputs differ: a defect, not a benchmark result")
        for path in (local_out, spark_out):
            path.unlink()  # a million rows of output is 1.5 GB each
    small, large = sizes
    local_row, local_fixed = _split(local_t[small], local_t[large], small, large)
    spark_row, spark_fixed = _split(spark_t[small], spark_t[large], small, large)
    ratio = spark_t[large] / local_t[large]
    print(f"load average after: {os.getloadavg()}")
    print(
        f"\nper row  (wall, {args.cores} cores): local {local_row * 1e3:.3f} ms, "
        f"spark {spark_row * 1e3:.3f} ms (spark/local {spark_row / local_row:.2f}x)"
    )
    print(
        f"fixed    local {local_fixed:.1f} s (rules, worker start); spark {spark_fixed:.1f} s "
        f"per job (planning {plan_t[large]:.1f} s with row counting, task start) "
        f"+ session start {session_start:.1f} s + first job {warm_up:.1f} s"
    )
    print(
        f"at {large:,} rows Spark local[{args.cores}] takes {ratio:.2f}x local batch's time "
        f"(goal: within 1.5x): {'met' if ratio <= 1.5 else 'NOT met'}"
    )
    per_core = spark_row * args.cores  # seconds of one core per row
    # The fixed cost of a job: from the split, or (when load made the split come out
    # below it) the planning and row counting measured on their own.
    spark_fixed = max(spark_fixed, plan_t[large])
    print(
        f"\nper row per core (Spark): {per_core * 1e3:.3f} ms; expected on E executors of C "
        f"cores: rows / ({spark_fixed:.1f} s + rows x {per_core * 1e3:.3f} ms / (E C))"
    )
    for executors, cores in ((1, 4), (4, 4), (8, 4), (16, 8), (50, 8)):
        for rows in (1_000_000, 100_000_000):
            seconds = spark_fixed + rows * per_core / (executors * cores)
            print(
                f"  {executors:>3} x {cores} cores, {rows:>11,} rows: {seconds:>8,.0f} s "
                f"({rows / seconds:>9,.0f} rows/s)"
            )
    spark.stop()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
