"""`tiv diff` and `tiv impact`: what changes between two versions of a pack."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from engine.batch.progress import ProgressBar
from engine.cli.common import (
    UsageError,
    emit,
    rules_root,
)


def cmd_diff(args: argparse.Namespace) -> int:
    from engine import load_rules
    from engine.compliance.diff import diff_packs, render_diff
    from engine.loading.sources import FileSystemSource

    _pinned(args.before, args.after)
    source = FileSystemSource(rules_root(args))
    rules = load_rules(source)
    diff = diff_packs(rules, source, args.before, args.after)
    if args.format == "json":
        text = json.dumps(diff.to_dict(), indent=2, ensure_ascii=False) + "\n"
    else:
        text = render_diff(diff)
    emit(text, args.output)
    return 0


def cmd_impact(args: argparse.Namespace) -> int:
    from engine.compliance.impact import details_csv, details_json, impact, render_impact

    _pinned(args.before, args.after)
    if args.spark:  # the Spark side lives in engine/batch/spark/, imported only when used
        from engine.batch.spark import impact_command

        return impact_command(args, rules_root(args))
    corpus = Path(args.corpus)
    if not corpus.is_file():
        raise UsageError(f"{args.corpus}: no such file")
    if args.details and not args.details.endswith((".csv", ".json")):
        raise UsageError(f"{args.details}: the details file must end in .csv or .json")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be 1 or more")
    workers = args.workers or os.cpu_count() or 1
    bar = ProgressBar("impact", 0, unit="shipment", enabled=False if args.no_progress else None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    try:
        report, details = impact(
            rules_root(args),
            args.before,
            args.after,
            corpus,
            workers=workers,
            matcher=args.matcher,
            progress=progress,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        bar.close()
    if args.details:
        text = details_csv(details) if args.details.endswith(".csv") else details_json(details)
        emit(text, args.details)
    if args.format == "json":
        emit(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n",
             args.output)  # fmt: skip
    else:
        extra = f"\nPer-shipment differences: {args.details}\n" if args.details else ""
        emit(render_impact(report) + extra, args.output)
    return 0


def _pinned(*refs: str) -> None:
    for ref in refs:
        pack, _, version = ref.partition("@")
        if not pack or not version:
            raise UsageError(f"{ref!r}: name a pinned version, PACK@VERSION (e.g. standard@1.0.0)")


def register(verbs: Any) -> None:
    """Add `diff` and `impact` to the `tiv` parser."""
    raw = argparse.RawDescriptionHelpFormatter

    p = verbs.add_parser(
        "diff",
        help="what changed between two versions of a pack, for a person",
        formatter_class=raw,
        description="Compare two versions of a policy pack by meaning: parameters, formulas, "
        "charge\ntreatment, rules, result, examples and any other section, added, removed or "
        "changed,\nwith file:line on both sides. Figures compare as numbers (0.10 = 0.1), "
        "formulas as\nparsed expressions (layout is not a change). Drafts can be compared.",
        epilog="example:\n  tiv diff standard@1.0.0 standard@1.1.0\n"
        "  tiv diff standard@1.0.0 standard@1.1.0 --format json -o diff.json",
    )
    p.add_argument("before", metavar="PACK@A")
    p.add_argument("after", metavar="PACK@B")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (atomically), not stdout")
    p.set_defaults(func=cmd_diff)

    p = verbs.add_parser(
        "impact",
        help="value a corpus under two versions and report what changed",
        formatter_class=raw,
        description="Value every shipment of a JSON Lines corpus under two pinned versions "
        "(drafts\nallowed) and report: how many changed, the TIV (and premium) change per "
        "valuation\ncurrency (count, mean, median, p95, min, max, total, exact decimals), "
        "the relative\nchange, decisions that flipped, and shipments that fail. Runs on every "
        "core; the\nreport is the same for any --workers. A progress bar shows on a terminal.",
        epilog="example:\n  tiv corpus generate --n 100000 --seed 1 -o shipments.jsonl\n"
        "  tiv impact standard@1.0.0 standard@1.1.0 --corpus shipments.jsonl "
        "--details changes.csv",
    )
    p.add_argument("before", metavar="PACK@A")
    p.add_argument("after", metavar="PACK@B")
    p.add_argument("--corpus", required=True, metavar="FILE", help="shipments, one JSON per line")
    p.add_argument(
        "--details", metavar="FILE", help="write each changed shipment here (.csv or .json)"
    )
    p.add_argument("--workers", type=int, metavar="N", help="processes (default: every core)")
    p.add_argument("--matcher", metavar="NAME", help="compiled (default), durable_rules or python")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here, not stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.add_argument(
        "--spark", metavar="MASTER", help="run on Spark: local[2], spark://…, sc://host:port"
    )
    p.set_defaults(func=cmd_impact)
