"""Verbs for looking at the rule repository: `tiv rules list`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.cli.common import emit, load


def cmd_rules_list(args: argparse.Namespace) -> int:
    rules = load(args)
    rows: list[dict[str, Any]] = []
    for kind, table in (("policy", rules.packs), ("country", rules.duty_rules)):
        for versions in table.values():
            for item in versions:
                rows.append(
                    {
                        "kind": kind,
                        "id": item.id,
                        "version": item.version,
                        "status": item.status,
                        "effective_from": item.effective_from.isoformat(),
                        "effective_to": item.effective_to.isoformat()
                        if item.effective_to
                        else None,
                        "title": item.title,
                        "source": item.source,
                        "sha256": item.sha256,
                        "customs_union": getattr(item, "customs_union", None),  # countries only
                    }
                )
    if args.kind:
        rows = [row for row in rows if row["kind"] == args.kind]
    if args.format == "json":
        emit(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", None)
        return 0
    # effective_to is the first day a version no longer applies, hence "until (excl.)".
    lines = [
        f"{'KIND':8} {'ID':22} {'VERSION':8} {'STATUS':10} {'FROM':10} {'UNTIL (EXCL.)':13} TITLE"
    ]
    for row in rows:
        until = row["effective_to"] or "-"
        union = f" (customs: {row['customs_union']})" if row["customs_union"] else ""
        lines.append(
            f"{row['kind']:8} {row['id']:22} {row['version']:8} {row['status']:10} "
            f"{row['effective_from']:10} {until:13} {row['title']}{union}"
        )
    emit("\n".join(lines) + "\n", None)
    return 0


def register(verbs: Any) -> None:
    """Add this module's verbs to the `tiv` parser."""
    p = verbs.add_parser(
        "rules",
        help="list the rule repository's packs and country rules",
        description="Look at what the rule repository holds.",
    )
    sub = p.add_subparsers(dest="rules_verb", metavar="ACTION", required=True)
    q = sub.add_parser(
        "list",
        help="every pack and country with its versions and windows",
        description="List every policy pack and country rule file: version, "
        "status and effective window.",
    )
    q.add_argument("--kind", choices=["policy", "country"], help="only one kind")
    q.add_argument("--format", choices=["text", "json"], default="text")
    q.set_defaults(func=cmd_rules_list)
