"""`tiv batch`: value a bordereau (JSONL or CSV), one output row per input row."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from engine.batch.progress import ProgressBar
from engine.cli.common import (
    UsageError,
    add_audit_key_option,
    add_time_budget_option,
    parse_date,
    positive_int,
    rules_root,
)
from engine.errors import FactsError

EXIT_ROWS_FAILED = FactsError.exit_code  # some rows of a batch had bad facts

_BATCH_EPILOG = """\
input:
  JSONL: one JSON object of shipment facts per line (blank lines skipped).
  CSV: a header row of field paths, one shipment per row, e.g.
    id,date,currency,mode,origin.country,destination.country,invoice.amount,
    charges[0].type,charges[0].amount,charges[1].type,charges[1].amount,fx.EUR
  A blank cell is an absent field; fill list elements in order; a `duties` column
  takes [] or none for "no duties". --columns FILE maps your headers to paths
  (YAML: `Invoice Value: invoice.amount`; map a header to ~ to ignore it).

output:
  One row per input row, in input order: JSONL rows {"row", "line", "valuation"} or
  {"row", "line", "error"}; CSV rows with status ok/error, the figures, and for an
  error the field path, the CSV column and the message.

interruption:
  OUTPUT.progress records what is complete (fsynced). After a crash, a kill or
  Ctrl-C, run the same command with --resume: it continues after the last complete
  row, with no row missing or repeated.

exit status: 0 every row valued; 2 some rows failed (the summary says how many)
or the input is unreadable; 3 invalid rules; 64 bad command line.
"""


def cmd_batch(args: argparse.Namespace) -> int:
    from engine.batch import BatchError, BatchOptions, count_rows, run_batch

    root = rules_root(args)
    if args.spark:  # the Spark side lives in engine/batch/spark/, imported only when used
        from engine.batch.spark import batch_command

        return batch_command(args, root)
    columns = _columns(args.columns) if args.columns else None
    options = BatchOptions(
        input=Path(args.input),
        output=Path(args.output),
        policy=args.policy,
        as_of=args.as_of,
        allow_draft=args.allow_draft,
        workers=args.workers or os.cpu_count() or 1,
        audit=Path(args.audit) if args.audit else None,
        resume=args.resume,
        trace=args.trace,
        input_format=args.input_format,
        output_format=args.output_format,
        columns=columns,
        delimiter=args.delimiter,
    )
    if not options.input.exists():  # a Parquet input may be a dataset folder
        raise UsageError(f"{args.input}: no such file")
    bar = ProgressBar("batch", 0, enabled=False if args.quiet else None)
    if bar.enabled:
        bar.total = count_rows(options)
    try:
        summary = run_batch(root, options, bar.update)
    except BatchError as error:
        raise UsageError(str(error)) from None
    finally:
        bar.close()
    if not args.quiet:
        if summary.already_complete:
            print(
                f"tiv batch: nothing to resume: {args.output} is complete "
                f"({summary.rows:,} rows, {summary.failed:,} failed)",
                file=sys.stderr,
            )
        else:
            new = summary.rows - summary.resumed_from
            resumed = (
                f" (resumed after row {summary.resumed_from:,})" if summary.resumed_from else ""
            )
            print(
                f"tiv batch: {summary.rows:,} rows, {summary.rows - summary.failed:,} valued, "
                f"{summary.failed:,} failed{resumed}; {new:,} rows in {summary.seconds:.1f} s "
                f"({summary.rate:,.0f} rows/s); rules {summary.rules_id}; output {args.output}",
                file=sys.stderr,
            )
            if summary.failed:
                print(
                    f"tiv batch: {summary.failed:,} row(s) failed: see the rows with an "
                    "error in the output",
                    file=sys.stderr,
                )
    return EXIT_ROWS_FAILED if summary.failed else 0


def _columns(path: str) -> dict[str, str | None]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"--columns {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise UsageError(f"--columns {path}: not valid YAML: {first}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        raise UsageError(f"--columns {path}: expected a mapping of CSV header -> field path")
    return data


def register(verbs: Any) -> None:
    """Add `batch` to the `tiv` parser."""
    p = verbs.add_parser(
        "batch",
        help="value a bordereau (JSONL or CSV), one output row per input row",
        description="Value every shipment of INPUT under one policy, across worker "
        "processes, into OUTPUT (JSONL or CSV by suffix) in input order. Bad rows become "
        "error rows; the batch goes on.",
        epilog=_BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="bordereau: .jsonl/.ndjson or .csv")
    p.add_argument(
        "--rules",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the rule repository (as tiv --rules)",
    )
    p.add_argument("--policy", required=True, metavar="ID[@VERSION]", help="pack to value with")
    p.add_argument(
        "--as-of",
        type=parse_date,
        metavar="DATE",
        help="value every row with the version in effect on DATE (default: each shipment's date)",
    )
    p.add_argument("--allow-draft", action="store_true", help="let a pinned draft version value")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="results: .jsonl or .csv (by suffix, or --output-format)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="worker processes (default: one per CPU core)",
    )
    p.add_argument("--audit", metavar="PATH", help="record every valuation in this audit log")
    add_audit_key_option(p)
    add_time_budget_option(p)
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run of the same command"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument(
        "--trace",
        action="store_true",
        help="include each valuation's trace (JSONL output only; large)",
    )
    p.add_argument("--columns", metavar="FILE", help="CSV header -> field path mapping (YAML)")
    p.add_argument("--delimiter", default=",", help="CSV delimiter (default ,)")
    p.add_argument(
        "--input-format",
        choices=["jsonl", "csv", "parquet"],
        help="default: from the suffix (.csv is CSV, .parquet or a folder Parquet, else JSONL)",
    )
    p.add_argument(
        "--output-format",
        choices=["jsonl", "csv", "parquet"],
        help="default: from the suffix (.csv is CSV, else JSONL; with --spark, Parquet "
        "unless .jsonl)",
    )
    p.add_argument(
        "--spark",
        metavar="MASTER",
        help="value on Apache Spark: local[2], spark://host:7077, yarn, or Spark Connect "
        "sc://host:15002 (needs the spark extra); writes Parquet or .jsonl",
    )
    p.add_argument(
        "--partition-by", action="append", metavar="COL", help="with --spark: Parquet partitions"
    )
    p.add_argument(
        "--key", action="append", metavar="COL", help="with --spark: input columns to keep"
    )
    p.set_defaults(func=cmd_batch)
