"""Plumbing shared by every verb: finding the rule repository, dates, atomic output."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from engine import Claim, Valuation
from engine.atomic import write_atomic

EXIT_EXAMPLES_FAILED = 1
EXIT_USAGE = 64
EXIT_INTERNAL = 70
AUDIT_ENV = "TIV_AUDIT"  # the audit store verbs record in when --audit is not given


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 64."""


def rules_root(args: argparse.Namespace) -> Path:
    from engine.loading.sources import find_root

    given = args.rules or os.environ.get("TIV_RULES")
    if given:
        root = Path(given)
        if not (root / "policies").is_dir():
            raise UsageError(f"{root} is not a rule repository (it has no policies/ folder)")
        return root
    found = find_root(Path.cwd())
    if found is None:
        raise UsageError(
            "no rule repository here: run inside one (a folder with policies/), "
            "or give --rules DIR or set TIV_RULES"
        )
    return found


def load(args: argparse.Namespace) -> Any:
    from engine import load_rules

    return load_rules(rules_root(args))


def parse_date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def read_facts_arg(name: str) -> str | Path:
    """The FILE argument of value and claim: the facts' path, or the text of stdin for -.

    A document over the input limit is refused (FactsError, exit 2) before it is parsed,
    and a file before it is read.
    """
    from engine.errors import FactsError, Location, Problem
    from engine.loading.yamlfile import check_input_size, max_input_bytes

    if name == "-":
        limit = max_input_bytes(FactsError)
        text = sys.stdin.read(limit + 1)
        if len(text) > limit:
            raise FactsError(
                Problem(
                    "input.too_large",
                    f"the facts document is over the limit of {limit:,} bytes; split it, or "
                    "raise the limit with --max-input BYTES or $TIV_MAX_INPUT_BYTES",
                    Location("<stdin>"),
                )
            )
        return text
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"{name}: no such file")
    check_input_size(path.stat().st_size, name, FactsError)
    return path


def emit_result(result: Valuation | Claim, text: str, form: str, output: str | None) -> None:
    """A valuation or claim as JSON, or as its explained `text` naming its audit record."""
    if form == "json":
        text = json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    elif result.audit_id:
        text += f"Audit record: {result.audit_id}\n"
    emit(text, output)


class _Exported(argparse.Action):
    """An option that is also an environment variable (`variable`) for this process and
    what it starts: the batch workers, and the library, read it there."""

    variable: str

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        os.environ[self.variable] = repr(values)  # an int or a float: its repr is its text
        setattr(namespace, self.dest, values)


class _MaxInput(_Exported):
    variable = "TIV_MAX_INPUT_BYTES"


class _TimeBudget(_Exported):
    variable = "TIV_TIME_BUDGET"  # each valuation's (engine.api.default_time_budget)


def add_max_input_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-input",
        type=positive_int,
        action=_MaxInput,
        metavar="BYTES",
        help="refuse a rule file or facts document over this size, before parsing it "
        "(default 2097152, 2 MiB; also $TIV_MAX_INPUT_BYTES)",
    )


def add_time_budget_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--time-budget",
        type=_budget_seconds,
        action=_TimeBudget,
        metavar="SECONDS",
        help="longest one valuation may take, else an error naming the budget (a batch: an "
        "error row, and the batch goes on) (default 2; also $TIV_TIME_BUDGET)",
    )


def _budget_seconds(text: str) -> float:
    number = seconds(text)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return number


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return number


def seconds(text: str) -> float:
    try:
        number = float(text)  # a duration, not money: a float is fine here
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return number


def emit(text: str, output: str | None) -> None:
    """Write all of `text` or nothing: to stdout, or atomically replace `output`."""
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_atomic(output, text)


def add_audit_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--audit",
        metavar="PATH",
        help=f"record the {what} in this audit store (SQLite; created if absent); default "
        f'${AUDIT_ENV}; --audit "" records nothing',
    )
    add_audit_key_option(parser)


AUDIT_KEY_ENV = "TIV_AUDIT_KEY_FILE"  # engine.compliance.audit.KEY_ENV, without the import


class _AuditKeyFile(argparse.Action):
    """`--audit-key FILE` is $TIV_AUDIT_KEY_FILE for this process and what it starts, so
    every audit store it opens (batch runners, service workers) signs with the key."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        if not Path(values).is_file():
            parser.error(f"--audit-key: {values}: no such file")
        os.environ[AUDIT_KEY_ENV] = os.path.abspath(values)
        setattr(namespace, self.dest, values)


def add_audit_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit-key",
        metavar="FILE",
        action=_AuditKeyFile,
        help="sign each audit record with the key in FILE, kept outside the store (HMAC-"
        f"SHA256; `tiv audit keygen FILE` makes one); default ${AUDIT_KEY_ENV}",
    )


def audit_log(given: str | None) -> Any:
    """The audit store to record in: --audit PATH, else $TIV_AUDIT; `--audit ""` is none."""
    from engine.compliance.audit import AuditError, AuditLog

    path = given if given is not None else os.environ.get(AUDIT_ENV)
    if not path:
        return None
    try:
        return AuditLog(path)
    except AuditError as exc:
        raise UsageError(str(exc)) from None
