"""The `tiv` command: one function per verb, calling only the public API.

Exit status: 0 success; 1 examples failed; 2 bad shipment facts, unknown pack or no
version in effect; 3 invalid rule files; 4 evaluation failed (e.g. division by zero);
64 bad command line; 70 internal error. Errors are one line on stderr, never a
traceback unless --debug. Output is built whole before it is written, so a failure
never leaves half a result behind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from engine._version import __version__
from engine.cli import (
    applications,
    audit,
    batch,
    changes,
    claims,
    corpus,
    lock,
    rules,
    serving,
    valuing,
)
from engine.cli.common import EXIT_INTERNAL, EXIT_USAGE, UsageError, add_max_input_option
from engine.errors import RulesError, TivError

# Each module adds its verbs with register(subparsers): one module per area of work.
VERB_MODULES = [valuing, claims, rules, serving, batch, lock, audit, changes, corpus, applications]

_EPILOG = """\
exit status: 0 ok, 1 examples failed, 2 bad facts or no policy in effect,
3 invalid rule files, 4 evaluation failed, 64 usage error.
The rule repository is --rules DIR, else $TIV_RULES, else the nearest folder at or
above the current one that has a policies/ folder."""


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
    add_max_input_option(parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    for module in VERB_MODULES:
        module.register(verbs)
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
    except UsageError as exc:
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
