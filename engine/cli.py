"""The `tiv` command: one function per verb, calling only the public API.

Exit status: 0 success; 1 examples failed; 2 bad shipment facts, unknown pack or no
version in effect; 3 invalid rule files; 4 evaluation failed (e.g. division by zero);
64 bad command line; 70 internal error. Errors are one line on stderr, never a
traceback unless --debug. Output is built whole before it is written, so a failure
never leaves half a result behind.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine._version import __version__
from engine.errors import RulesError, TivError

EXIT_EXAMPLES_FAILED = 1
EXIT_USAGE = 64
EXIT_INTERNAL = 70

_EPILOG = """\
exit status: 0 ok, 1 examples failed, 2 bad facts or no policy in effect,
3 invalid rule files, 4 evaluation failed, 64 usage error.
The rule repository is --rules DIR, else $TIV_RULES, else the nearest folder at or
above the current one that has a policies/ folder."""


class _Usage(Exception):
    pass


def _rules_root(args: argparse.Namespace) -> Path:
    from engine.loading.sources import find_root

    given = args.rules or os.environ.get("TIV_RULES")
    if given:
        root = Path(given)
        if not (root / "policies").is_dir():
            raise _Usage(f"{root} is not a rule repository (it has no policies/ folder)")
        return root
    root = find_root(Path.cwd())
    if root is None:
        raise _Usage(
            "no rule repository here: run inside one (a folder with policies/), "
            "or give --rules DIR or set TIV_RULES"
        )
    return root


def _load(args: argparse.Namespace) -> Any:
    from engine import load_rules

    return load_rules(_rules_root(args))


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _emit(text: str, output: str | None) -> None:
    """Write all of `text` or nothing: to stdout, or atomically replace `output`."""
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(output)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_value(args: argparse.Namespace) -> int:
    from engine import render_text, value

    rules = _load(args)
    path = Path(args.file)
    if args.file != "-" and not path.is_file():
        raise _Usage(f"{args.file}: no such file")
    facts: Any = sys.stdin.read() if args.file == "-" else path
    policy = args.policy or _only_pack(rules)
    result = value(rules, facts, policy=policy, as_of=args.as_of, allow_draft=args.allow_draft)
    if args.format == "json":
        text = json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    else:
        text = render_text(result)
    _emit(text, args.output)
    return 0


def _only_pack(rules: Any) -> str:
    if len(rules.packs) == 1:
        return next(iter(rules.packs))
    raise _Usage(
        "choose a policy with --policy ID[@VERSION] (packs: " + ", ".join(rules.packs) + ")"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from engine import load_rules, run_examples

    root = _rules_root(args)
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
    selected_packs = [
        p.ref for versions in rules.packs.values() for p in versions if _selected(p.source, wanted)
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
        return RulesError.exit_code
    files = [f for f in rules.files if _selected(f.path, wanted)]
    versions = sum(len(v) for v in rules.packs.values())
    print(
        f"ok: {len(files)} rule file(s) valid; {len(rules.packs)} pack(s), {versions} "
        f"version(s); examples hold"
    )
    return 0


def _relative(root: Path, given: str) -> str:
    path = Path(given).resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise _Usage(f"{given} is not inside the rule repository {root}") from None


def _selected(path: str, wanted: list[str]) -> bool:
    if not wanted:
        return True
    return any(path == w or path.startswith(w.rstrip("/") + "/") or w in (".", "") for w in wanted)


def cmd_test(args: argparse.Namespace) -> int:
    from engine import run_examples

    rules = _load(args)
    unknown = [p for p in args.packs if p.partition("@")[0] not in rules.packs]
    if unknown:
        raise _Usage(f"no pack {', '.join(unknown)} (packs: {', '.join(rules.packs)})")
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
            raise _Usage(f"no schema {args.kind!r} (schemas: {', '.join(schemas)})")
        schemas = schemas[args.kind]
    _emit(json.dumps(schemas, indent=2, ensure_ascii=False) + "\n", None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiv",
        description="Total Insured Value of cargo shipments, computed from "
        "versioned YAML rule packs and explained down to the rule line.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tiv {__version__}")
    parser.add_argument("--rules", metavar="DIR", help="the rule repository (has policies/)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

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
        type=_date,
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except TivError as exc:
        if args.debug:
            raise
        _report(exc, args)
        return exc.exit_code
    except _Usage as exc:
        print(f"tiv: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tiv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so plainly, without a traceback
        if args.debug:
            raise
        print(
            f"tiv: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _report(exc: TivError, args: argparse.Namespace) -> None:
    first = exc.problems[0]
    more = len(exc.problems) - 1
    prefix = {
        "invalid_facts": "invalid shipment",
        "invalid_rules": "invalid rules",
        "no_policy": "no policy",
        "evaluation_failed": "evaluation failed",
    }[exc.kind]
    hint = ""
    if more:
        hint = f" (and {more} more: " + (
            "run tiv validate)" if isinstance(exc, RulesError) else "fix this one and run again)"
        )
    text = str(first)  # file:line:col: json.path: message, whichever parts are known
    if getattr(args, "file", None) and exc.kind == "invalid_facts" and not first.location.file:
        text = f"{args.file}: {text}"
    print(f"tiv: {prefix}: {text}{hint}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
