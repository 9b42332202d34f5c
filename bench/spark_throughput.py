"""Spark local[2] against local `tiv batch --workers 2`: rates, per-row and fixed costs.

    .venv/bin/python bench/spark_throughput.py [--n 1000000] [--cores 2] [--keep DIR]

Generates N shipments (`engine.corpus`, seed 1) as JSON Lines and as Parquet (not
timed), then values them under `standard`, writing JSON Lines, with:

  local   run_batch(workers=cores) on the JSON Lines file, as `tiv batch` does;
  spark   a local[cores] session: value_dataframe on the Parquet file, results
          streamed to one JSON Lines file (write_output), as `tiv batch --spark` does.

Each is run at N/10 and at N rows, so a cost splits into a fixed part and a per-row
part: per_row = (T(N) - T(N/10)) / (0.9 N), fixed = T(N) - N per_row. For Spark the
session start and the first job (Python workers start, rules compile) are timed on
their own; the measured runs reuse the warm workers, as every job of a session does.
The outputs are compared byte for byte. The machine's load average is printed before
and after: on a shared machine the rates move with it, the ratio less so. From the
per-row cost per core, the rate on E executors of C cores is estimated as
E C / per_row_core (the driver's fixed cost aside).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.batch import BatchOptions, run_batch
from engine.batch.parquet import write_shipments
from engine.compliance.corpus import generate
from engine.service.state import load_snapshot

ROOT = Path(__file__).resolve().parent.parent


def _corpus(folder: Path, n: int) -> tuple[Path, Path]:
    jsonl, parquet = folder / f"book-{n}.jsonl", folder / f"book-{n}.parquet"
    shipments = generate(n, seed=1)
    with jsonl.open("w", encoding="utf-8") as handle:
        for shipment in shipments:
            handle.write(json.dumps(shipment) + "\n")
    write_shipments((json.loads(line) for line in jsonl.open(encoding="utf-8")), parquet)
    return jsonl, parquet


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
    result = value_dataframe(df, snapshot, "standard", lines_only=True)
    planned = time.perf_counter()  # the row-counting job and the plan
    write_output(result, str(out))
    return planned - started, time.perf_counter() - started


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
    sizes = (max(1, args.n // 10), args.n)
    print(f"load average before: {os.getloadavg()}")
    started = time.perf_counter()
    corpora = {n: _corpus(folder, n) for n in sizes}
    print(f"corpora generated ({', '.join(f'{n:,}' for n in sizes)} rows, not timed below): "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    snapshot = load_snapshot(ROOT, check_examples=False, check_lock=False)

    from engine.batch.spark import session

    started = time.perf_counter()
    spark = session(
        f"local[{args.cores}]",
        "tiv-bench",
        {"spark.ui.enabled": "false", "spark.driver.bindAddress": "127.0.0.1"},
    )
    session_start = time.perf_counter() - started
    print(f"spark session start: {session_start:.1f} s")
    # The first job starts the executors' Python workers and compiles the rules in each;
    # later jobs reuse them. Timed on its own, as a fixed cost of the session.
    warm = folder / "warm-up.jsonl"
    warm.unlink(missing_ok=True)
    _, warm_up = _spark(spark, corpora[sizes[0]][1], warm, snapshot)
    print(f"spark first job (Python workers start, rules compile), {sizes[0]:,} rows: "
          f"{warm_up:.1f} s")  # fmt: skip

    local_t, spark_t, plan_t = {}, {}, {}
    for n in sizes:
        jsonl, parquet = corpora[n]
        local_out, spark_out = folder / f"local-{n}.jsonl", folder / f"spark-{n}.jsonl"
        for path in (local_out, spark_out):
            path.unlink(missing_ok=True)
            Path(str(path) + ".progress").unlink(missing_ok=True)
        local_t[n] = _local(jsonl, local_out, args.cores, snapshot)
        plan_t[n], spark_t[n] = _spark(spark, parquet, spark_out, snapshot)
        same = local_out.read_bytes() == spark_out.read_bytes()
        print(
            f"{n:>9,} rows: local {local_t[n]:7.1f} s ({n / local_t[n]:6.0f} rows/s)   "
            f"spark {spark_t[n]:7.1f} s ({n / spark_t[n]:6.0f} rows/s, of which planning "
            f"and row counting {plan_t[n]:.1f} s)   outputs byte-identical: {same}"
        )
        if not same:
            raise SystemExit("the outputs differ: a defect, not a benchmark result")
    small, large = sizes
    local_row, local_fixed = _split(local_t[small], local_t[large], small, large)
    spark_row, spark_fixed = _split(spark_t[small], spark_t[large], small, large)
    ratio = spark_t[large] / local_t[large]
    print(f"load average after: {os.getloadavg()}")
    print(
        f"\nper row  (wall, {args.cores} cores): local {local_row * 1e3:.3f} ms, "
        f"spark {spark_row * 1e3:.3f} ms"
    )
    print(
        f"fixed    local {local_fixed:.1f} s (rules, worker start); spark {spark_fixed:.1f} s "
        f"(planning, counting, task start) + session start {session_start:.1f} s "
        f"+ first job {warm_up:.1f} s"
    )
    print(
        f"at {large:,} rows Spark local[{args.cores}] takes {ratio:.2f}x local batch's time "
        f"(goal: within 1.5x): {'met' if ratio <= 1.5 else 'NOT met'}"
    )
    per_core = spark_row * args.cores  # seconds of one core per row
    print(f"\nper row per core (Spark): {per_core * 1e3:.2f} ms; expected rate on E executors "
          "of C cores, fixed costs aside (E C / per-row-per-core):")  # fmt: skip
    for executors, cores in ((1, 4), (4, 4), (8, 4), (16, 8), (50, 8)):
        rate = executors * cores / per_core
        print(
            f"  {executors:>3} x {cores} cores: {rate:>10,.0f} rows/s; "
            f"1,000,000 rows in {1_000_000 / rate + spark_fixed:,.0f} s"
        )
    spark.stop()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
