"""`tiv audit`: init, verify, show, replay and list the audit store.

Exit status, beyond the common ones: `verify` 1 when the chain is broken; `show` 1 when
the record it prints fails its check; `replay` 1 when the replay differs from the record,
3 when the recorded rule files are not available unchanged; `show`/`replay` 2 when there
is no such record; 74 when the audit store cannot be opened or written.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cli.common import (
    AUDIT_ENV,
    UsageError,
    emit,
    rules_root,
)
from engine.compliance.audit import (
    KEY_ENV,
    AuditError,
    AuditKey,
    AuditLog,
    AuditRecord,
    ChainBreak,
    generate_key,
    replay,
)


def _audit_verb(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Audit store problems are one line on stderr with their own exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except AuditError as exc:
            print(f"tiv: {exc}", file=sys.stderr)
            return exc.exit_code

    run.__doc__ = func.__doc__
    return run


def _store(args: argparse.Namespace, *, create: bool = False) -> Any:
    path = getattr(args, "path", None) or args.audit or os.environ.get(AUDIT_ENV)
    if not path:
        raise UsageError(f"name the audit store: --audit PATH, or set {AUDIT_ENV}")
    return AuditLog(path, create=create, key=None)  # reading: nothing is signed here


@_audit_verb
def cmd_audit_keygen(args: argparse.Namespace) -> int:
    key = generate_key(args.path)
    print(
        f"wrote a new audit key to {args.path} (key id {key.key_id}, readable by you only).\n"
        "Keep it outside the audit store's machine or disk if you can; sign with\n"
        f"--audit-key {args.path} (or {KEY_ENV}) and check with tiv audit verify --key {args.path}"
    )
    return 0


@_audit_verb
def cmd_audit_init(args: argparse.Namespace) -> int:
    if Path(args.path).exists():
        raise UsageError(f"{args.path} already exists; an audit store's mask is set once")
    log = AuditLog(args.path, mask=args.mask or [])
    masked = ", ".join(log.mask) if log.mask else "nothing"
    print(f"created the audit store {args.path} (masking {masked})")
    return 0


@_audit_verb
def cmd_audit_verify(args: argparse.Namespace) -> int:
    segmented = getattr(args, "path", None) or args.audit or os.environ.get(AUDIT_ENV)
    if segmented and Path(segmented).is_dir():  # a Spark run's segments and manifest
        from engine.compliance.audit.segments import verify_command

        return verify_command(segmented, args.anchor, args.format)
    log = _store(args)
    files = args.key or ([os.environ[KEY_ENV]] if os.environ.get(KEY_ENV) else [])
    keys = [AuditKey.from_file(name) for name in files]
    report = log.verify(anchor=args.anchor, keys=keys)
    if args.format == "json":
        emit(json.dumps(report.model_dump(mode="json"), indent=2) + "\n", None)
    elif report.ok:
        anchor = f" and anchor {args.anchor}" if args.anchor else ""
        if keys:
            signed = f"; every record signed by key {', '.join(report.keys_checked)}"
        elif report.signed:
            signed = f"; {report.signed:,} record(s) signed, not checked (give --key FILE)"
        else:
            signed = "; records unsigned (only an anchor proves the newest are genuine)"
        emit(
            f"ok: {report.records:,} record(s), the chain is intact{anchor}{signed}\n"
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
    log = _store(args)
    record = log.get(args.id)
    broken = log.check(record)
    if args.format == "json":
        emit(json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", None)
        return _warn(broken)
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
    return _warn(broken)


def _warn(broken: ChainBreak | None) -> int:
    """After the record is shown: say so if it failed its check (exit 1)."""
    if broken is None:
        return 0
    print(
        f"tiv: warning: this record fails its check ({broken.kind}): {broken.message}; "
        "do not rely on it, and run tiv audit verify",
        file=sys.stderr,
    )
    return 1


@_audit_verb
def cmd_audit_replay(args: argparse.Namespace) -> int:
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
    kept: collections.deque[AuditRecord] = collections.deque(maxlen=args.limit or None)
    for record in log.records(since=args.since, until=args.until):
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


def _when(text: str) -> tuple[datetime.datetime, bool]:
    """A UTC moment from `YYYY-MM-DD` or an ISO date and time; and whether it was a date."""
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC), True
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)), False


def _since(text: str) -> datetime.datetime:
    return _when(text)[0]


def _until(text: str) -> datetime.datetime:
    moment, whole_day = _when(text)
    return moment + datetime.timedelta(days=1) if whole_day else moment


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


def register(verbs: Any) -> None:
    """Add `audit` and its actions to the `tiv` parser."""
    raw = argparse.RawDescriptionHelpFormatter
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
    q.add_argument(
        "--key",
        action="append",
        metavar="FILE",
        help="require every record to be signed by this key (repeat for rotated keys); "
        f"default ${KEY_ENV}",
    )
    q.add_argument("--format", choices=["text", "json"], default="text")
    q.set_defaults(func=cmd_audit_verify)

    q = sub.add_parser(
        "keygen",
        help="make a new random key to sign audit records with (--audit-key)",
        description="Write 32 random bytes (64 hex digits) to a new file readable by you "
        "only.\nSign with --audit-key FILE (or $TIV_AUDIT_KEY_FILE); verify with --key FILE.",
    )
    q.add_argument("path", metavar="FILE")
    q.set_defaults(func=cmd_audit_keygen)

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

    q = sub.add_parser(
        "list",
        help="list records, oldest first",
        formatter_class=raw,
        description="List records in chain order: seq, id, time recorded (UTC), shipment, "
        "policy,\nTIV (or a claim's indemnity) and decision. Times are UTC: a DATE is its "
        "whole day,\nso --since 2025-03-01 --until 2025-03-31 is the whole of March.",
        epilog="example:\n  tiv audit list --audit audit.db --since 2025-03-01 --until 2025-03-31"
        "\n  tiv audit list --since 2025-03-14T09:00 --shipment H-1 --format json",
    )
    store(q)
    q.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only records made at or after WHEN (UTC): a date or date and time",
    )
    q.add_argument(
        "--until",
        type=_until,
        metavar="WHEN",
        help="only records made before the end of WHEN (UTC): a date is included whole",
    )
    q.add_argument("--shipment", metavar="ID", help="only this shipment's records")
    q.add_argument("--limit", type=int, default=0, metavar="N", help="only the newest N")
    q.add_argument("--format", choices=["text", "json"], default="text")
    q.set_defaults(func=cmd_audit_list)
