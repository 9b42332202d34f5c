"""`tiv corpus generate`: synthetic shipments (JSON Lines)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, TextIO

from engine.atomic import write_atomic
from engine.batch.progress import ProgressBar
from engine.cli.common import (
    UsageError,
    parse_date,
    rules_root,
)


def cmd_corpus_generate(args: argparse.Namespace) -> int:
    from engine.compliance.corpus import generate

    if args.n < 0:
        raise UsageError("--n must not be negative")
    if args.days < 1:
        raise UsageError("--days must be 1 or more")
    estimate_in = _estimable(args, args.start, args.days)
    shipments = generate(
        args.n, args.seed, estimate_in=estimate_in, start=args.start, days=args.days
    )
    to_file = args.output not in (None, "-")
    bar = ProgressBar(
        "corpus",
        args.n,
        unit="shipment",
        enabled=False if args.no_progress or not to_file else None,
    )

    def write(handle: TextIO) -> None:
        for index, facts in enumerate(shipments, 1):
            handle.write(json.dumps(facts, ensure_ascii=False, separators=(",", ":")) + "\n")
            if index % 1000 == 0 or index == args.n:
                bar.update(index)

    if args.output in (None, "-"):
        write(sys.stdout)
        sys.stdout.flush()
        return 0
    try:
        write_atomic(args.output, write)
    finally:
        bar.close()
    return 0


def _estimable(args: argparse.Namespace, start: datetime.date, days: int) -> tuple[str, ...]:
    """Destinations whose country rules are in effect over the whole window, in this repo."""
    from engine import TivError, load_rules

    try:
        rules = load_rules(rules_root(args))
    except (UsageError, TivError):
        return ("US",)
    end = start + datetime.timedelta(days=days - 1)
    found = []
    for country in sorted(rules.duty_rules):
        try:
            if all(rules.duty_rules_for(country, day)[0] for day in (start, end)):
                found.append(country)
        except TivError:
            continue
    return tuple(found)


def register(verbs: Any) -> None:
    """Add `corpus` to the `tiv` parser."""
    raw = argparse.RawDescriptionHelpFormatter

    p = verbs.add_parser(
        "corpus",
        help="generate synthetic shipments (JSON Lines)",
        description="Synthetic shipment corpora for impact analysis, tests and benchmarks.",
    )
    sub = p.add_subparsers(dest="corpus_verb", metavar="ACTION", required=True)
    q = sub.add_parser(
        "generate",
        help="N realistic shipments, the same for the same seed",
        formatter_class=raw,
        description="Write N synthetic shipments, one JSON object per line: lanes by mode, "
        "Incoterms,\ncurrencies with fx, charge mixes with detention and demurrage, goods with "
        "HS codes,\ndeclared, absent and estimated duties, some sums insured. The same seed "
        "gives the\nsame shipments; shipment i does not depend on N. Shipments left for duty "
        "estimation\ngo only to destinations with country rules in effect (in this repository).",
        epilog="example:\n  tiv corpus generate --n 1000 --seed 42 -o shipments.jsonl",
    )
    q.add_argument("--n", type=int, required=True, metavar="N", help="how many shipments")
    q.add_argument("--seed", type=int, default=0, metavar="S", help="default 0")
    q.add_argument(
        "--start", type=parse_date, default=datetime.date(2025, 1, 1), metavar="DATE",
        help="first shipment date (default 2025-01-01)",
    )  # fmt: skip
    q.add_argument("--days", type=int, default=365, metavar="D", help="dates span D days")
    q.add_argument("-o", "--output", metavar="FILE", help="write here (atomically), not stdout")
    q.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    q.set_defaults(func=cmd_corpus_generate)
