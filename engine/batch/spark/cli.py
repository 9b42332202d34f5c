"""The CLI verbs' Spark side: `tiv batch --spark` and `tiv impact --spark`.

The verb modules in engine.cli call these from a one-line hook, so PySpark is imported
only when --spark is given.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.batch.spark.errors import SparkJobError
from engine.batch.spark.jobs import run_spark_batch, run_spark_impact


def say_to(verb: str, quiet: bool) -> Callable[[str], None]:
    tty = sys.stderr.isatty()

    def say(text: str) -> None:
        if not quiet:
            end = "" if tty else "\n"
            sys.stderr.write(("\r\033[K" if tty else "") + f"tiv {verb}: {text}{end}")
            sys.stderr.flush()

    return say


def batch_command(args: Any, root: Path) -> int:
    """`tiv batch INPUT --spark MASTER -o OUTPUT`: exit 0, or 2 when rows failed."""
    from engine.cli.common import UsageError
    from engine.errors import FactsError

    refused = [
        flag
        for flag, given in (
            ("--resume", args.resume),
            ("--workers", args.workers),
            ("--columns", args.columns),
            ("--delimiter", args.delimiter != ","),
        )
        if given
    ]
    if refused:
        raise UsageError(
            f"{refused[0]} is for local runs; with --spark the cluster decides the workers, "
            "and a failed job is rerun whole (it writes nothing until it succeeds)"
        )
    if args.output_format == "csv" or args.output.lower().endswith(".csv"):
        raise UsageError("--spark writes Parquet (a folder) or JSON Lines (.jsonl), not CSV")
    say = say_to("batch", args.quiet)
    try:
        summary = run_spark_batch(
            root,
            args.spark,
            args.input,
            args.output,
            args.policy,
            as_of=args.as_of,
            allow_draft=args.allow_draft,
            trace=args.trace,
            audit=args.audit,
            input_format=args.input_format,
            output_format=args.output_format,
            partition_by=args.partition_by or (),
            keys=args.key or (),
            progress=say,
        )
    except SparkJobError as error:
        raise UsageError(str(error)) from None
    if not args.quiet:
        rate = summary.rows / summary.seconds if summary.seconds else 0
        sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "")
        print(
            f"tiv batch: {summary.rows:,} rows, {summary.rows - summary.failed:,} valued, "
            f"{summary.failed:,} failed; {summary.seconds:.1f} s ({rate:,.0f} rows/s) on "
            f"Spark {args.spark}; rules {summary.rules_id}; output {summary.output}"
            + (f"; audit {args.audit} (sealed)" if args.audit else ""),
            file=sys.stderr,
        )
    return FactsError.exit_code if summary.failed else 0


def impact_command(args: Any, root: Path) -> int:
    """`tiv impact A B --corpus FILE --spark MASTER`: the report tiv impact prints."""
    from engine.cli.common import UsageError, emit
    from engine.compliance.impact import details_csv, details_json, render_impact

    if args.details and not args.details.endswith((".csv", ".json")):
        raise UsageError(f"{args.details}: the details file must end in .csv or .json")
    if not Path(args.corpus).exists():
        raise UsageError(f"{args.corpus}: no such file")
    say = say_to("impact", args.no_progress)
    try:
        report, details = run_spark_impact(
            root, args.spark, args.before, args.after, args.corpus, matcher=args.matcher,
            progress=say,
        )  # fmt: skip
    except (SparkJobError, ValueError) as error:
        raise UsageError(str(error)) from None
    sys.stderr.write("\r\033[K" if sys.stderr.isatty() and not args.no_progress else "")
    if args.details:
        text = details_csv(details) if args.details.endswith(".csv") else details_json(details)
        emit(text, args.details)
    if args.format == "json":
        body = json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False)
        emit(body + "\n", args.output)
    else:
        extra = f"\nPer-shipment differences: {args.details}\n" if args.details else ""
        emit(render_impact(report) + extra, args.output)
    return 0
