"""Verbs for insurance applications: `tiv quote`, `review`, `bind`, `certificate`, `policies`.

They work on a book (`--db`, a SQLite file by default, or a postgresql:// URL) through
`engine.applications.Book`, and record every change in the audit store (`--audit`,
default $TIV_AUDIT). Exit status as for every verb, plus 5: the workflow refused the step
(binding twice, an expired, declined or referred quote, a wrong amount, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cli.common import AUDIT_ENV, UsageError, add_audit_option, emit, load

BOOK_ENV = "TIV_BOOK"
DEFAULT_BOOK = "tiv-book.db"
_EPILOG = f"""\
The book is --db PATH_OR_URL, else ${BOOK_ENV}, else ./{DEFAULT_BOOK} (SQLite, created
when absent); give postgresql://user@host/db to share one book between hosts.
exit status: 0 ok, 2 bad facts or unknown quote/policy, 5 refused by the workflow
(e.g. already bound, expired, declined, still referred, amount not the premium),
64 usage error, 74 the database or audit store failed."""


def _book(args: argparse.Namespace) -> Any:
    try:
        from engine.applications import Book
    except ImportError as exc:
        raise UsageError(
            f"applications need the applications extra ({exc.name} is missing): "
            "pip install 'tiv-engine[applications]'"
        ) from None
    db = args.db or os.environ.get(BOOK_ENV) or DEFAULT_BOOK
    audit = args.audit if args.audit is not None else os.environ.get(AUDIT_ENV)
    return Book(db, load(args), audit=audit or None)


def _run(args: argparse.Namespace, work: Callable[[Any], str | bytes]) -> int:
    """Open the book, do one step, write its output; refusals are one line on stderr."""
    from engine.applications import ApplicationError

    try:
        with _book(args) as book:
            out = work(book)
    except ApplicationError as exc:
        print(f"tiv: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if isinstance(out, bytes):
        _write_bytes(out, args.output)
    else:
        emit(out, getattr(args, "output", None))
    return 0


def _dump(model: Any) -> str:
    return json.dumps(model.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


# --- verbs --------------------------------------------------------------------------


def cmd_quote(args: argparse.Namespace) -> int:
    if args.file != "-" and not Path(args.file).is_file():
        raise UsageError(f"{args.file}: no such file")
    facts: Any = sys.stdin.read() if args.file == "-" else Path(args.file)

    def work(book: Any) -> str:
        quote = book.quote(
            facts,
            policy=args.policy,
            insured=args.insured,
            conveyance=args.conveyance,
            allow_draft=args.allow_draft,
        )
        return _dump(quote) if args.format == "json" else _quote_text(quote)

    return _run(args, work)


def cmd_review(args: argparse.Namespace) -> int:
    if args.premium is not None and args.decline:
        raise UsageError("--premium goes with --approve: a declined quote has no premium")

    def work(book: Any) -> str:
        quote = book.review(
            args.id,
            approve=args.approve,
            by=args.by,
            reason=args.reason,
            premium=args.premium,
            conditions=args.conditions,
        )
        return _dump(quote) if args.format == "json" else _quote_text(quote)

    return _run(args, work)


def cmd_bind(args: argparse.Namespace) -> int:
    def work(book: Any) -> str:
        policy = book.bind(args.id, payment_ref=args.payment_ref, amount=args.amount)
        return _dump(policy) if args.format == "json" else _policy_text(policy)

    return _run(args, work)


def cmd_certificate(args: argparse.Namespace) -> int:
    fmt = args.format or ("pdf" if args.output and args.output.endswith(".pdf") else "json")
    if fmt == "pdf" and (args.output is None or args.output == "-") and sys.stdout.isatty():
        raise UsageError("a PDF is not for a terminal: give -o cert.pdf (or pipe it)")

    def work(book: Any) -> str | bytes:
        if fmt == "pdf":
            pdf: bytes = book.certificate_pdf(args.id)
            return pdf
        return _dump(book.certificate(args.id))

    return _run(args, work)


def cmd_policies_list(args: argparse.Namespace) -> int:
    def work(book: Any) -> str:
        found = book.policies(state=args.state)
        if args.format == "json":
            return json.dumps([p.model_dump(mode="json") for p in found], indent=2) + "\n"
        if not found:
            return "no policies in the book\n"
        lines = [f"{'policy':20}  {'state':9}  {'pack':22}  {'insured':24}  {'premium':>14}  ccy"]
        for p in found:
            lines.append(
                f"{p.id:20}  {p.state:9}  {p.policy.id + '@' + p.policy.version:22}  "
                f"{p.insured[:24]:24}  {p.premium:>14}  {p.currency}"
            )
        return "\n".join(lines) + "\n"

    return _run(args, work)


def cmd_policies_show(args: argparse.Namespace) -> int:
    def work(book: Any) -> str:
        policy = book.get_policy(args.id)
        return _dump(policy) if args.format == "json" else _policy_text(policy)

    return _run(args, work)


def cmd_policies_cancel(args: argparse.Namespace) -> int:
    def work(book: Any) -> str:
        policy = book.cancel(args.id, by=args.by, reason=args.reason)
        return _dump(policy) if args.format == "json" else _policy_text(policy)

    return _run(args, work)


def cmd_policies_endorse(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.changes is not None:
        from decimal import Decimal

        text = Path(args.changes).read_text() if Path(args.changes).is_file() else args.changes
        try:
            changes = json.loads(text, parse_float=Decimal)
        except ValueError as exc:
            raise UsageError(f"--changes: not a JSON object: {exc}") from None
        if not isinstance(changes, dict):
            raise UsageError('--changes must be a JSON object, e.g. {"sum_insured": "1"}')
    for item in args.set or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set {item!r}: write NAME=VALUE, e.g. sum_insured=300000.00")
        changes[name] = text
    if not changes:
        raise UsageError("say what changes: --set NAME=VALUE or --changes JSON")

    def work(book: Any) -> str:
        policy = book.endorse(args.id, changes, by=args.by, reason=args.reason)
        return _dump(policy) if args.format == "json" else _policy_text(policy)

    return _run(args, work)


# --- text ---------------------------------------------------------------------------


def _quote_text(q: Any) -> str:
    ccy = q.currency
    lines = [
        f"Quote {q.id}: {q.state}",
        f"  insured        {q.insured}" + (f" ({q.conveyance})" if q.conveyance else ""),
        f"  priced with    {q.policy.id}@{q.policy.version} as of {q.as_of} (rules {q.rules_id})",
        f"  TIV            {q.total_insured_value} {ccy}",
        f"  premium        {q.premium if q.premium is not None else 'none'} {ccy}",
        f"  deductible     {q.deductible if q.deductible is not None else 'none'} {ccy}",
        f"  decision       {q.decision}",
    ]
    lines += [f"    {r.decision}: {r.rule}: {r.reason} ({r.source})" for r in q.reasons]
    if q.review is not None:
        r = q.review
        lines.append(f"  review         {r.decision} by {r.by} at {r.at}: {r.reason}")
        if r.override_premium is not None:
            lines.append(f"    premium      {r.override_premium} {ccy} (rules: {r.rule_premium})")
        if r.conditions:
            lines.append(f"    conditions   {r.conditions}")
    lines.append(f"  valid until    {q.valid_until}")
    if q.audit_id:
        lines.append(f"  audit record   {q.audit_id}")
    if q.state in ("accepted", "approved"):
        lines.append(f"Next: tiv bind {q.id} --payment-ref REF --amount {q.premium_due}")
    elif q.state == "referred":
        lines.append(
            f"Next: an underwriter decides: tiv review {q.id} --approve|--decline "
            "--by NAME --reason TEXT"
        )
    elif q.state == "bound":
        lines.append(f"Bound as policy {q.policy_id}")
    return "\n".join(lines) + "\n"


def _policy_text(p: Any) -> str:
    ccy = p.currency
    lines = [
        f"Policy {p.id}: {p.state} (certificate {p.certificate_number})",
        f"  insured        {p.insured}",
        f"  quote          {p.quote_id}, {p.policy.id}@{p.policy.version}",
        f"  effective      {p.effective_date} (bound {p.bound_at})",
        f"  payment        {p.payment.reference}: {p.payment.amount} {ccy}",
        f"  TIV            {p.total_insured_value} {ccy}",
        f"  sum insured    {p.sum_insured} {ccy}",
        f"  premium        {p.premium} {ccy}",
        f"  deductible     {p.deductible if p.deductible is not None else 'none'} {ccy}",
    ]
    for e in p.endorsements:
        change = e.premium_change if e.premium_change.startswith("-") else f"+{e.premium_change}"
        if e.kind == "cancel":
            what = "cancelled"
        else:
            what = ", ".join(e.changes) + f" changed, TIV {e.total_insured_value} {ccy}"
        label = f"{e.kind} #{e.seq}"
        lines.append(f"  {label:14} {what}: premium {change} {ccy} -> {e.premium_after}")
    if p.returned_premium is not None:
        lines.append(f"  returned       {p.returned_premium} {ccy} (cancelled {p.cancelled_at})")
    if p.state == "in_force":
        lines.append(f"Next: tiv certificate {p.id} -o certificate.pdf")
    return "\n".join(lines) + "\n"


def _write_bytes(data: bytes, output: str | None) -> None:
    """All of `data` or nothing: to stdout, or atomically replace `output`."""
    import tempfile

    if output is None or output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    target = Path(output)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- parser -------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, output: bool = True) -> None:
    p.add_argument(
        "--db", metavar="PATH|URL", help=f"the book (default ${BOOK_ENV}, ./{DEFAULT_BOOK})"
    )
    add_audit_option(p, "change")
    p.add_argument("--format", choices=["text", "json"], default="text")
    if output:
        p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def register(verbs: Any) -> None:
    """Add this module's verbs to the `tiv` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = verbs.add_parser(
        "quote",
        help="price an insurance application: a quote that can be bound later at its price",
        description="Value the shipment under the pack and record a quote: TIV, premium, "
        "deductible, decision and reasons, the pack version and a validity end (the pack's "
        "quote_validity_days). A referred quote waits for `tiv review`; an accepted one "
        "can be bound with `tiv bind`.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("file", help="shipment facts, .yaml or .json, or - for stdin")
    p.add_argument("--policy", required=True, metavar="ID[@VERSION]")
    p.add_argument("--insured", required=True, metavar="NAME", help="who the cover is for")
    p.add_argument("--conveyance", metavar="TEXT", help="vessel, flight or truck, if known")
    p.add_argument("--allow-draft", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_quote)

    p = verbs.add_parser(
        "review",
        help="an underwriter approves or declines a referred quote",
        description="Record an underwriter's decision on a referred quote, with a reason. "
        "--approve may override the premium (--premium) or add conditions; the rules' figure "
        "stays recorded next to the override. A declined quote is final.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("id", help="the quote id (Q-...)")
    decision = p.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true")
    decision.add_argument("--decline", action="store_true")
    p.add_argument("--by", required=True, metavar="NAME", help="the underwriter")
    p.add_argument("--reason", required=True, metavar="TEXT")
    p.add_argument("--premium", metavar="AMOUNT", help="override the rules' premium")
    p.add_argument("--conditions", metavar="TEXT", help="conditions of the approval")
    _common(p)
    p.set_defaults(func=cmd_review)

    p = verbs.add_parser(
        "bind",
        help="bind an accepted or approved quote by recording its payment",
        description="Record the payment (reference and amount) of an accepted or approved "
        "quote before it expires; the amount must equal the premium due exactly. The policy "
        "takes effect today. A quote binds once: a second bind is refused.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("id", help="the quote id (Q-...)")
    p.add_argument("--payment-ref", required=True, metavar="REF")
    p.add_argument("--amount", required=True, metavar="AMOUNT", help="exactly the premium due")
    _common(p)
    p.set_defaults(func=cmd_bind)

    p = verbs.add_parser(
        "certificate",
        help="the certificate of insurance of a policy, as PDF or JSON",
        description="The certificate of insurance: certificate number, insured, goods, "
        "conveyance, route, sum insured and TIV, premium and deductible, clauses, effective "
        "date, and the sha256 of the policy record (the JSON form includes the record, so the "
        "hash can be recomputed). -o FILE.pdf writes the PDF.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("id", help="the policy id (P-...)")
    p.add_argument("--db", metavar="PATH|URL", help=f"the book (default ${BOOK_ENV})")
    add_audit_option(p, "change")
    p.add_argument("--format", choices=["pdf", "json"], help="default: pdf for -o *.pdf, else json")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_certificate)

    p = verbs.add_parser(
        "policies",
        help="list, show, cancel or endorse bound policies",
        description="The book's bound policies.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    sub = p.add_subparsers(dest="policies_verb", metavar="ACTION", required=True)
    q = sub.add_parser("list", help="every policy, oldest first")
    q.add_argument("--state", choices=["in_force", "cancelled"])
    _common(q)
    q.set_defaults(func=cmd_policies_list)
    q = sub.add_parser("show", help="one policy with its endorsements")
    q.add_argument("id")
    _common(q)
    q.set_defaults(func=cmd_policies_show)
    q = sub.add_parser(
        "cancel", help="cancel before departure: the premium charged is returned in full"
    )
    q.add_argument("id")
    q.add_argument("--by", metavar="NAME")
    q.add_argument("--reason", metavar="TEXT")
    _common(q)
    q.set_defaults(func=cmd_policies_cancel)
    q = sub.add_parser(
        "endorse",
        help="change the shipment's facts and re-rate: records the additional or returned premium",
    )
    q.add_argument("id")
    q.add_argument(
        "--set", action="append", metavar="NAME=VALUE", help="a top-level fact, e.g. sum_insured=1"
    )
    q.add_argument("--changes", metavar="JSON|FILE", help="changed top-level facts as JSON")
    q.add_argument("--by", metavar="NAME")
    q.add_argument("--reason", metavar="TEXT")
    _common(q)
    q.set_defaults(func=cmd_policies_endorse)
