"""Verbs for compliance: lock, audit (init, verify, show, replay, list), diff, impact, corpus.

Exit status, beyond the common ones: `tiv audit verify` 1 when the chain is broken;
`tiv audit replay` 1 when the replay differs from the record, 3 when the recorded rule
files are not available unchanged; `tiv audit show/replay` 2 when there is no such
record; 74 when the audit store cannot be opened or written.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from engine.cli.common import AUDIT_ENV, UsageError, emit, parse_date, rules_root

# --- progress -----------------------------------------------------------------------


class ProgressBar:
    """`label [#####-----] 45,000/100,000 45% 3,020/s ETA 0:18` on a terminal; silent otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.label = label
        self.started = time.monotonic()
        self.drawn = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self.drawn < 0.1:
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate and done else None
        share = done / total if total else 1.0
        tail = (
            f" {done:,}/{total:,} {share:4.0%} {rate:,.0f}/s"
            + (f" ETA {_clock(eta)}" if eta is not None and done < total else "")
            + (f" in {_clock(elapsed)}" if done >= total else "")
        )
        columns = shutil.get_terminal_size((80, 20)).columns
        width = max(10, min(40, columns - len(self.label) - len(tail) - 4))
        filled = int(width * share)
        line = f"{self.label} [{'#' * filled}{'-' * (width - filled)}]{tail}"
        self.stream.write("\r" + line[: columns - 1])
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return (
        f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
        if whole >= 3600
        else (f"{whole // 60}:{whole % 60:02d}")
    )


def _progress(args: argparse.Namespace, label: str) -> ProgressBar:
    return ProgressBar(label, enabled=False if args.no_progress else None)


# --- lock ---------------------------------------------------------------------------


def cmd_lock(args: argparse.Namespace) -> int:
    from engine import load_rules
    from engine.lock import LOCK_FILE, check_lock, lockable, write_lock

    root = rules_root(args)
    rules = load_rules(root)
    count = sum(1 for f in rules.files if lockable(f))
    if args.check:
        problems = check_lock(root, rules)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"tiv: {len(problems)} problem(s) with {LOCK_FILE}", file=sys.stderr)
            return 3
        print(f"ok: {LOCK_FILE} matches the {count} locked file(s)")
        return 0
    changes = write_lock(root, rules, force=args.force)
    for path in changes.forced:
        print(
            f"tiv: warning: {path}: re-recorded a changed or deleted published file by force; "
            "audit records made with its old bytes replay only from version control",
            file=sys.stderr,
        )
    if not changes.changed:
        print(f"{LOCK_FILE}: up to date, {count} file(s) locked")
        return 0
    parts = [
        f"{len(names)} {what} ({', '.join(names)})"
        for what, names in (
            ("added", changes.added),
            ("updated", changes.updated),
            ("removed", changes.removed),
        )
        if names
    ]
    print(f"{LOCK_FILE}: {'; '.join(parts)}; {count} file(s) locked. Commit it.")
    return 0


# --- audit --------------------------------------------------------------------------


def _audit_verb(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Audit store problems are one line on stderr with their own exit status."""

    def run(args: argparse.Namespace) -> int:
        from engine.audit import AuditError

        try:
            return func(args)
        except AuditError as exc:
            print(f"tiv: {exc}", file=sys.stderr)
            return exc.exit_code

    run.__doc__ = func.__doc__
    return run


def _store(args: argparse.Namespace, *, create: bool = False) -> Any:
    from engine.audit import AuditLog

    path = getattr(args, "path", None) or args.audit or os.environ.get(AUDIT_ENV)
    if not path:
        raise UsageError(f"name the audit store: --audit PATH, or set {AUDIT_ENV}")
    return AuditLog(path, create=create)


@_audit_verb
def cmd_audit_init(args: argparse.Namespace) -> int:
    from engine.audit import AuditLog

    if Path(args.path).exists():
        raise UsageError(f"{args.path} already exists; an audit store's mask is set once")
    log = AuditLog(args.path, mask=args.mask or [])
    masked = ", ".join(log.mask) if log.mask else "nothing"
    print(f"created the audit store {args.path} (masking {masked})")
    return 0


@_audit_verb
def cmd_audit_verify(args: argparse.Namespace) -> int:
    segmented = getattr(args, "path", None) or args.audit or os.environ.get(AUDIT_ENV)
    if segmented and Path(segmented).is_dir():  # hook: a Spark run's segments (spark_audit)
        from engine.spark_audit import verify_command

        return verify_command(segmented, args.anchor, args.format)
    log = _store(args)
    report = log.verify(anchor=args.anchor)
    if args.format == "json":
        emit(json.dumps(report.model_dump(mode="json"), indent=2) + "\n", None)
    elif report.ok:
        anchor = f" and anchor {args.anchor}" if args.anchor else ""
        emit(
            f"ok: {report.records:,} record(s), the chain is intact{anchor}\n"
            f"head: {report.head or '(empty store)'}\n"
            "Keep the head outside this file; `tiv audit verify --anchor HEAD` later proves\n"
            "that no record up to it was changed, even by someone who rewrote the chain.\n",
            None,
        )
    if not report.ok and report.first_bad is not None:
        bad = report.first_bad
        print(f"tiv: the audit chain is broken ({bad.kind}): {bad.message}", file=sys.stderr)
        return 1
    return 0


@_audit_verb
def cmd_audit_show(args: argparse.Namespace) -> int:
    record = _store(args).get(args.id)
    if args.format == "json":
        emit(json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", None)
        return 0
    lines = [
        f"Audit record {record.id} (seq {record.seq}): {record.kind} recorded {record.recorded_at}",
        f"  engine {record.engine_version}, matcher {record.matcher}, custom functions: "
        + (", ".join(f"{f.name} {f.version}" for f in record.functions) or "none"),
    ]
    for used in record.rule_files:
        name = f"{used.id}@{used.version}" if used.version else used.id
        lines.append(f"  {used.role:10} {name:22} {used.path}  sha256 {used.sha256[:16]}…")
    if record.masked:
        lines.append(f"  masked (not stored): {', '.join(record.masked)}")
    lines.append(f"  hash {record.hash[:16]}…, follows {record.prev_hash[:16]}…")
    lines.append("")
    emit("\n".join(lines) + "\n" + record.explained(), None)
    return 0


@_audit_verb
def cmd_audit_replay(args: argparse.Namespace) -> int:
    from engine.audit import replay

    record = _store(args).get(args.id)
    report = replay(record, rules_root(args), current=args.current_rules)
    if args.format == "json":
        emit(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", None)
        return 0 if report.identical else 1
    lines = [
        f"Replay of audit record {record.id} (seq {record.seq}, recorded {record.recorded_at})"
    ]
    for source in report.files:
        lines.append(f"  {source.path}  sha256 {source.sha256[:16]}…  from {source.found}")
    lines += [f"  note: {note}" for note in report.notes]
    lines.append("")
    if report.identical:
        lines.append(
            "IDENTICAL: the replay gives the recorded result, figure for figure, "
            "decision and trace included."
        )
    else:
        lines.append(f"DIFFERENT: {len(report.differences)} difference(s), recorded → replayed:")
        for diff in report.differences:
            where = diff.path or "result"
            lines.append(f"  {where}: {_short(diff.recorded)} → {_short(diff.replayed)}")
    emit("\n".join(lines) + "\n", None)
    return 0 if report.identical else 1


@_audit_verb
def cmd_audit_list(args: argparse.Namespace) -> int:
    log = _store(args)
    kept: collections.deque[Any] = collections.deque(maxlen=args.limit or None)
    for record in log:
        if not args.shipment or record.result.get("shipment_id") == args.shipment:
            kept.append(record)
    records = list(kept)
    if args.format == "json":
        rows = [
            {
                "seq": r.seq,
                "id": r.id,
                "recorded_at": r.recorded_at,
                "kind": r.kind,
                "shipment_id": r.result.get("shipment_id"),
                "policy": _policy(r.result),
                "total_insured_value": _valued(r.result).get("total_insured_value"),
                "indemnity": r.result.get("indemnity"),
                "currency": r.result.get("currency"),
                "decision": _valued(r.result).get("decision"),
            }
            for r in records
        ]
        emit(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", None)
        return 0
    lines = [f"{'SEQ':>6}  {'ID':36}  {'RECORDED (UTC)':27}  {'SHIPMENT':16}  POLICY / TIV"]
    for r in records:
        valued = _valued(r.result)
        figure = f"TIV {valued.get('total_insured_value')} {valued.get('currency')}"
        if r.kind == "claim":
            figure = f"claim: indemnity {r.result.get('indemnity')} {r.result.get('currency')}"
        lines.append(
            f"{r.seq:>6}  {r.id:36}  {r.recorded_at:27}  {r.result.get('shipment_id', ''):16}  "
            f"{_policy(r.result)}  {figure}  {valued.get('decision')}"
        )
    emit("\n".join(lines) + "\n", None)
    return 0


def _valued(result: dict[str, Any]) -> dict[str, Any]:
    """The valuation part of a recorded result (a claim holds one)."""
    inner = result.get("valuation")
    return inner if isinstance(inner, dict) else result


def _policy(result: dict[str, Any]) -> str:
    policy = _valued(result).get("policy") or {}
    return f"{policy.get('id')}@{policy.get('version')}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:119] + "…"


# --- diff and impact ----------------------------------------------------------------


def cmd_diff(args: argparse.Namespace) -> int:
    from engine import load_rules
    from engine.diff import diff_packs, render_diff
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
    from engine.impact import details_csv, details_json, impact, render_impact

    _pinned(args.before, args.after)
    if args.spark:  # hook: scale-out on Spark (engine/spark.py)
        from engine.spark import impact_command

        return impact_command(args, rules_root(args))
    corpus = Path(args.corpus)
    if not corpus.is_file():
        raise UsageError(f"{args.corpus}: no such file")
    if args.details and not args.details.endswith((".csv", ".json")):
        raise UsageError(f"{args.details}: the details file must end in .csv or .json")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be 1 or more")
    workers = args.workers or os.cpu_count() or 1
    bar = _progress(args, "impact")
    try:
        report, details = impact(
            rules_root(args),
            args.before,
            args.after,
            corpus,
            workers=workers,
            matcher=args.matcher,
            progress=bar,
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


# --- corpus -------------------------------------------------------------------------


def cmd_corpus_generate(args: argparse.Namespace) -> int:
    from engine.corpus import generate

    if args.n < 0:
        raise UsageError("--n must not be negative")
    if args.days < 1:
        raise UsageError("--days must be 1 or more")
    estimate_in = _estimable(args, args.start, args.days)
    shipments = generate(
        args.n, args.seed, estimate_in=estimate_in, start=args.start, days=args.days
    )
    bar = _progress(args, "corpus") if args.output not in (None, "-") else None

    def write(handle: TextIO) -> None:
        for index, facts in enumerate(shipments, 1):
            handle.write(json.dumps(facts, ensure_ascii=False, separators=(",", ":")) + "\n")
            if bar and (index % 1000 == 0 or index == args.n):
                bar(index, args.n)

    if args.output in (None, "-"):
        write(sys.stdout)
        sys.stdout.flush()
        return 0
    target = Path(args.output)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if bar:
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
    for country in sorted(getattr(rules, "duty_rules", {}) or {}):
        try:
            if all(rules.duty_rules_for(country, day)[0] for day in (start, end)):
                found.append(country)
        except TivError:
            continue
    return tuple(found)


# --- the parser ---------------------------------------------------------------------


def register(verbs: Any) -> None:
    """Add this module's verbs to the `tiv` parser."""
    raw = argparse.RawDescriptionHelpFormatter

    p = verbs.add_parser(
        "lock",
        help="record the sha256 of every published rule file in rules.lock",
        formatter_class=raw,
        description="Write rules.lock at the repository root: the sha256 of every published "
        "rule file\n(policy packs, country rules) and of the reference data. `tiv validate` "
        "then fails,\nnaming the file, when a published file changes: published versions are "
        "immutable;\ncopy the file to a new version instead. Drafts are never locked.",
        epilog="examples:\n  tiv lock            # after adding or publishing a version; "
        "commit rules.lock\n  tiv lock --check    # report, write nothing (exit 3 on a problem)"
        "\n  sha256sum -c rules.lock   # the same check without tiv",
    )
    p.add_argument("--check", action="store_true", help="report problems, write nothing")
    p.add_argument(
        "--force",
        action="store_true",
        help="also re-record published files that changed or were deleted (audit records "
        "made with the old bytes then replay only from version control)",
    )
    p.set_defaults(func=cmd_lock)

    _register_audit(verbs, raw)

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
    p.add_argument("--matcher", metavar="NAME", help="durable_rules or python (default: the first)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here, not stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.add_argument(  # hook: Spark
        "--spark", metavar="MASTER", help="run on Spark: local[2], spark://…, sc://host:port"
    )
    p.set_defaults(func=cmd_impact)

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


def _register_audit(verbs: Any, raw: type[argparse.HelpFormatter]) -> None:
    p = verbs.add_parser(
        "audit",
        help="the audit log: verify, show, replay, list",
        formatter_class=raw,
        description="The audit store is one SQLite file; `tiv value` and `tiv claim` with --audit "
        f"PATH (or ${AUDIT_ENV})\nrecord every valuation and claim in it with its "
        "facts, result, trace,\nrule files (sha256), engine version and matcher, in a hash "
        "chain.",
        epilog=f"The store is --audit PATH, else ${AUDIT_ENV}.\n"
        "exit status: verify 1 when the chain is broken; replay 1 when it differs and 3 when\n"
        "the recorded rule files are not available unchanged; show/replay 2 for no such\n"
        "record; 74 when the store cannot be opened.",
    )
    sub = p.add_subparsers(dest="audit_verb", metavar="ACTION", required=True)

    def store(q: argparse.ArgumentParser) -> None:
        q.add_argument("--audit", metavar="PATH", help=f"the audit store (default ${AUDIT_ENV})")

    q = sub.add_parser(
        "init",
        help="create an audit store, optionally masking input fields",
        formatter_class=raw,
        description="Create an empty audit store. With --mask, those facts are stored as "
        "<masked>,\nand so is any text of the result equal to a masked value; each record "
        "lists what\nwas masked, and a replay says which fields it could not use.",
        epilog="example:\n  tiv audit init audit.db --mask id --mask 'goods[*].description'",
    )
    q.add_argument("path", metavar="PATH")
    q.add_argument(
        "--mask",
        action="append",
        metavar="FIELD",
        help="a path into the facts: id, origin.port, goods[*].description, fx.* (repeat)",
    )
    q.set_defaults(func=cmd_audit_init)

    q = sub.add_parser(
        "verify",
        help="re-hash the chain; name the first record altered, deleted, reordered or inserted",
        formatter_class=raw,
        description="Check every record's hash and its link to the one before; report the "
        "first\nrecord altered, deleted, reordered or inserted (exit 1), or the head to keep "
        "as an\nanchor. With --anchor, also prove that the chain up to it is unchanged.",
        epilog="example:\n  tiv audit verify audit.db\n"
        "  tiv audit verify audit.db --anchor 1200:9f2c…   # a head kept from an earlier run",
    )
    q.add_argument(
        "path", nargs="?", metavar="PATH", help=f"the audit store (default ${AUDIT_ENV})"
    )
    q.add_argument("--audit", metavar="PATH", help=argparse.SUPPRESS)
    q.add_argument("--anchor", metavar="SEQ:HASH", help="a head printed by an earlier verify")
    q.add_argument("--format", choices=["text", "json"], default="text")
    q.set_defaults(func=cmd_audit_verify)

    q = sub.add_parser(
        "show",
        help="print a recorded valuation, explained, as it was recorded",
        description="Print a record: the rule files it used (sha256), engine, matcher, masked "
        "fields and the explained valuation. ID is a record id, a unique prefix of at least 6 "
        "characters, a seq number (as `tiv audit list` shows), or `last`.",
    )
    q.add_argument("id", metavar="ID")
    store(q)
    q.add_argument("--format", choices=["text", "json"], default="text")
    q.set_defaults(func=cmd_audit_show)

    q = sub.add_parser(
        "replay",
        help="re-evaluate a record with its recorded rule versions; identical or the differences",
        formatter_class=raw,
        description="Re-evaluate the recorded facts with the rule files the record names, "
        "read from\nthe repository when their sha256 still matches, else from git history. "
        "Reports\nIDENTICAL (exit 0) or every difference (exit 1). When a recorded file is "
        "nowhere\nto be found unchanged it refuses (exit 3), unless --current-rules.",
        epilog="example:\n  tiv audit replay 3f2a9c --audit audit.db",
    )
    q.add_argument("id", metavar="ID")
    store(q)
    q.add_argument(
        "--current-rules",
        action="store_true",
        help="use today's files where the recorded ones are gone, and show what differs",
    )
    q.add_argument("--format", choices=["text", "json"], default="text")
    q.set_defaults(func=cmd_audit_replay)

    q = sub.add_parser("list", help="list records, oldest first")
    store(q)
    q.add_argument("--shipment", metavar="ID", help="only this shipment's records")
    q.add_argument("--limit", type=int, default=0, metavar="N", help="only the newest N")
    q.add_argument("--format", choices=["text", "json"], default="text")
    q.set_defaults(func=cmd_audit_list)
