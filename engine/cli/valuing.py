"""Verbs for valuing and checking rules: value, validate, test, schema."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine import RuleSet
from engine.cli.common import (
    EXIT_EXAMPLES_FAILED,
    UsageError,
    add_audit_option,
    add_time_budget_option,
    audit_log,
    emit,
    emit_result,
    load,
    parse_date,
    read_facts_arg,
    rules_root,
)
from engine.errors import RulesError


def cmd_value(args: argparse.Namespace) -> int:
    from engine import render_text, value
    from engine.compliance.audit import AuditError

    rules = load(args)
    facts = read_facts_arg(args.file)
    policy = args.policy or _only_pack(rules)
    audit = audit_log(args.audit)
    try:
        result = value(
            rules, facts, policy=policy, as_of=args.as_of, allow_draft=args.allow_draft, audit=audit
        )
    except AuditError as exc:
        # Recording was asked for: a valuation that could not be recorded is not given out.
        print(f"tiv: not recorded, so not valued: {exc}", file=sys.stderr)
        return exc.exit_code
    text = "" if args.format == "json" else render_text(result)
    emit_result(result, text, args.format, args.output)
    return 0


def _only_pack(rules: RuleSet) -> str:
    if len(rules.packs) == 1:
        return str(next(iter(rules.packs)))
    raise UsageError(
        "choose a policy with --policy ID[@VERSION] (packs: " + ", ".join(rules.packs) + ")"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from engine import load_rules, run_examples
    from engine.compliance.lock import LOCK_FILE, check_lock

    root = rules_root(args)
    wanted = [_relative(root, p) for p in args.paths]
    try:
        rules = load_rules(root)
    except RulesError as exc:
        shown = [p for p in exc.problems if _selected(p.location.file, wanted)]
        for item in shown:
            print(item, file=sys.stderr)
        if shown:
            print(
                f"tiv: {len(shown)} problem{'s' if len(shown) != 1 else ''} in rule files",
                file=sys.stderr,
            )
            return RulesError.exit_code
        print(
            f"tiv: the files named are valid, but the repository has {len(exc.problems)} "
            "problem(s) elsewhere; run tiv validate without paths",
            file=sys.stderr,
        )
        return RulesError.exit_code
    # Warnings (table rows never chosen, overlapping, gaps) are printed, never failed on.
    warned = {
        str(w): w
        for versions in rules.packs.values()
        for pack in versions
        if _selected(pack.source, wanted)
        for w in pack.warnings()
    }
    for warning in sorted(warned.values(), key=lambda w: (w.location, w.code)):
        print(warning, file=sys.stderr)
    # Published versions are immutable: rules.lock holds the bytes they were published with.
    locked = [
        p
        for p in check_lock(root, rules)
        if not wanted or _selected(p.location.file, [*wanted, LOCK_FILE])
    ]
    for item in locked:
        print(item, file=sys.stderr)
    if locked:
        print(f"tiv: {len(locked)} problem(s) with {LOCK_FILE}", file=sys.stderr)
    selected_packs = [
        p.ref for versions in rules.packs.values() for p in versions if _selected(p.source, wanted)
    ] + [
        c.ref
        for versions in rules.duty_rules.values()
        for c in versions
        if _selected(c.source, wanted)
    ]
    failures = [o for o in run_examples(rules, selected_packs) if not o.passed]
    for outcome in failures:
        for line in outcome.mismatches:
            print(
                f"{outcome.where}: example {outcome.name!r} of {outcome.pack}: {line}",
                file=sys.stderr,
            )
    if failures:
        print(f"tiv: {len(failures)} example(s) do not hold", file=sys.stderr)
    if failures or locked:
        return RulesError.exit_code
    files = [f for f in rules.files if _selected(f.path, wanted)]
    versions = sum(len(v) for v in rules.packs.values())
    print(
        f"ok: {len(files)} rule file(s) valid; {len(rules.packs)} pack(s), {versions} "
        f"version(s); examples hold" + (f"; {len(warned)} warning(s)" if warned else "")
    )
    return 0


def _relative(root: Path, given: str) -> str:
    path = Path(given).resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"{given} is not inside the rule repository {root}") from None


def _selected(path: str, wanted: list[str]) -> bool:
    if not wanted:
        return True
    return any(path == w or path.startswith(w.rstrip("/") + "/") or w in (".", "") for w in wanted)


def cmd_test(args: argparse.Namespace) -> int:
    from engine import run_examples

    rules = load(args)
    known = {*rules.packs, *rules.duty_rules}
    unknown = [p for p in args.packs if p.partition("@")[0] not in known]
    if unknown:
        raise UsageError(f"no pack or country {', '.join(unknown)} (known: {', '.join(known)})")
    outcomes = run_examples(rules, args.packs or None)
    for outcome in outcomes:
        status = "PASS" if outcome.passed else "FAIL"
        print(f"{status} {outcome.pack}  {outcome.name}  ({outcome.where})")
        for line in outcome.mismatches:
            print(f"     {line}")
    passed = sum(o.passed for o in outcomes)
    print(f"examples: {passed} passed, {len(outcomes) - passed} failed")
    if not outcomes:
        print("tiv: no examples found; every pack should carry some", file=sys.stderr)
        return EXIT_EXAMPLES_FAILED
    return 0 if passed == len(outcomes) else EXIT_EXAMPLES_FAILED


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.facts import Shipment
    from engine.result import Valuation
    from engine.schema import generated_schema, write_schemas
    from engine.schema.models import FILE_KINDS

    if args.write:
        for path in write_schemas():
            print(f"wrote {path}")
        return 0
    schemas: dict[str, Any] = {kind: generated_schema(kind) for kind in FILE_KINDS}
    schemas["shipment"] = Shipment.model_json_schema()
    schemas["valuation"] = Valuation.model_json_schema()
    if args.kind:
        if args.kind not in schemas:
            raise UsageError(f"no schema {args.kind!r} (schemas: {', '.join(schemas)})")
        schemas = schemas[args.kind]
    emit(json.dumps(schemas, indent=2, ensure_ascii=False) + "\n", None)
    return 0


def register(verbs: Any) -> None:
    """Add this module's verbs to the `tiv` parser."""
    p = verbs.add_parser(
        "value",
        help="value one shipment and explain the figure",
        description="Value a shipment (YAML or JSON facts; - for stdin) "
        "under a policy pack and print the explained result.",
    )
    p.add_argument("file", help="shipment facts, .yaml or .json, or - for stdin")
    p.add_argument(
        "--policy",
        metavar="ID[@VERSION]",
        help="pack id, optionally pinned to a version (default: the only pack)",
    )
    p.add_argument(
        "--as-of",
        type=parse_date,
        metavar="DATE",
        help="pick the version in effect on DATE (default: the shipment's date)",
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument(
        "--allow-draft",
        action="store_true",
        help="let a draft version value (the result names the version)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write here (atomically), not stdout")
    add_audit_option(p, "valuation")
    add_time_budget_option(p)
    p.set_defaults(func=cmd_value)

    p = verbs.add_parser(
        "validate",
        help="check rule files: YAML, structure, meaning, examples",
        description="Load and check the whole rule repository; with PATHs, "
        "report only the problems in those files or folders.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.set_defaults(func=cmd_validate)

    p = verbs.add_parser(
        "test",
        help="run the examples kept in the packs",
        description="Run every example of the named packs (or all packs).",
    )
    p.add_argument("packs", nargs="*", metavar="PACK", help="pack id or id@version")
    p.set_defaults(func=cmd_test)

    p = verbs.add_parser("schema", help="print the JSON Schemas of rule files, facts and results")
    p.add_argument(
        "kind", nargs="?", help="one schema: policy, currencies, countries, shipment, valuation"
    )
    p.add_argument(
        "--write", action="store_true", help="regenerate the committed schemas under engine/schema/"
    )
    p.set_defaults(func=cmd_schema)
