"""Verb for settling a loss: `tiv claim`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from engine.cli.common import (
    UsageError,
    add_audit_option,
    add_time_budget_option,
    audit_log,
    emit_result,
    load,
    parse_date,
    read_facts_arg,
)

if TYPE_CHECKING:
    from engine.result import Claim
    from engine.ruleset import RuleSet


def cmd_claim(args: argparse.Namespace) -> int:
    from engine import claim
    from engine.compliance.audit import AuditError
    from engine.explaining.render import render_claim_text

    rules = load(args)
    facts = read_facts_arg(args.file)
    if args.total:
        loss: dict[str, Any] = {"kind": "total"}
    elif args.damage_percent is not None:
        loss = {"kind": "partial", "damage_percent": args.damage_percent}
    elif args.sound is not None and args.damaged is not None:
        loss = {
            "kind": "partial",
            "gross_sound_value": args.sound,
            "gross_damaged_value": args.damaged,
        }
    else:
        raise UsageError(
            "say what was lost: --total, --damage-percent P, or --sound VALUE --damaged VALUE"
        )
    audit = audit_log(args.audit)
    try:
        result = claim(
            rules,
            facts,
            loss,
            policy=args.policy,
            as_of=args.as_of,
            allow_draft=args.allow_draft,
            audit=audit,
        )
    except AuditError as exc:
        # Recording was asked for: a settlement that could not be recorded is not given out.
        print(f"tiv: not recorded, so not settled: {exc}", file=sys.stderr)
        return exc.exit_code
    text = "" if args.format == "json" else render_claim_text(result, _formulas(rules, result))
    emit_result(result, text, args.format, args.output)
    return 0


def _formulas(rules: RuleSet, result: Claim) -> list[tuple[str, str]]:
    """The valuation formulas of the pack that settled the claim, as (name, text)."""
    ref = result.valuation.policy
    for pack in rules.pack_versions(ref.id):
        if pack.version == ref.version:
            return [(name, formula.text) for name, formula in pack.formulas]
    return []


def register(verbs: Any) -> None:
    """Add this module's verbs to the `tiv` parser."""
    p = verbs.add_parser(
        "claim",
        help="settle a loss: indemnity after s.71, average (s.81) and the deductible",
        description="Value a shipment under a pack, then settle a loss with the pack's claims "
        "formulas: a total loss pays the sum insured; a partial loss is a damage percentage or "
        "gross sound and damaged values; under-insurance applies average; then the deductible.",
    )
    p.add_argument("file", help="shipment facts, .yaml or .json, or - for stdin")
    p.add_argument("--policy", required=True, metavar="ID[@VERSION]")
    loss = p.add_mutually_exclusive_group()
    loss.add_argument("--total", action="store_true", help="a total loss")
    loss.add_argument("--damage-percent", metavar="P", help="a partial loss of P percent")
    loss.add_argument("--sound", metavar="VALUE", help="gross sound value (with --damaged)")
    p.add_argument("--damaged", metavar="VALUE", help="gross damaged value (with --sound)")
    p.add_argument("--as-of", type=parse_date, metavar="DATE")
    p.add_argument("--allow-draft", action="store_true")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (atomically), not stdout")
    add_audit_option(p, "claim")
    add_time_budget_option(p)
    p.set_defaults(func=cmd_claim)
