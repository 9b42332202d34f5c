"""`tiv lock`: record the sha256 of every published rule file in rules.lock."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.common import (
    rules_root,
)


def cmd_lock(args: argparse.Namespace) -> int:
    from engine import load_rules
    from engine.compliance.lock import LOCK_FILE, check_lock, lockable, write_lock

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
            ("base(s) pinned", changes.pinned),
        )
        if names
    ]
    print(f"{LOCK_FILE}: {'; '.join(parts)}; {count} file(s) locked. Commit it.")
    return 0


def register(verbs: Any) -> None:
    """Add `lock` to the `tiv` parser."""
    raw = argparse.RawDescriptionHelpFormatter

    p = verbs.add_parser(
        "lock",
        help="record the sha256 of every published rule file in rules.lock",
        formatter_class=raw,
        description="Write rules.lock at the repository root: the sha256 of every published "
        "rule file\n(policy packs, country rules) and of the reference data. `tiv validate` "
        "then fails,\nnaming the file, when a published file changes: published versions are "
        "immutable;\ncopy the file to a new version instead. Drafts are never locked.\n\n"
        "It also pins the exact base version of every published pack that extends another\n"
        "(`# extends <pack> -> <base>@<version>` lines); `tiv validate` fails at the pack's\n"
        "extends line if a new base version would change that resolution.",
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
