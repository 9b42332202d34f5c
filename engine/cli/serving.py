"""`tiv serve`: the HTTP valuation service."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.cli.common import (
    UsageError,
    add_audit_key_option,
    positive_int,
    rules_root,
    seconds,
)
from engine.errors import RulesError, TivError

# prometheus_client reads it at import (in each worker): see engine.service.metrics.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_SERVE_EPILOG = """\
access:
  With no keys the service is open to anyone who can connect, so it listens on
  loopback only; --host with any other address is refused. Keys come from --keys FILE
  (or $TIV_KEYS_FILE) and $TIV_API_KEYS / $TIV_ADMIN_KEYS; each key is bound to the
  packs it may use. See `tiv serve --help-keys` for the file format.

scaling:
  One process values on one core (Python's GIL); --threads keeps the event loop
  answering while valuations run. For more cores run --workers N (one per core), or
  better, one worker per container and replicas behind a load balancer. With
  --workers > 1 each worker watches the rule folder (--watch, default 2 s), so a
  reload through one worker reaches the others.

examples:
  tiv serve                                   # loopback, open, port 8000
  tiv serve --host 0.0.0.0 --keys keys.yaml --workers 2 --audit audit.sqlite
  curl -s -X POST 'localhost:8000/v1/valuations?policy=standard' \\
       -H 'Content-Type: application/json' --data @shipment.json
"""


_KEYS_HELP = """\
keys file (YAML), given with --keys FILE or $TIV_KEYS_FILE:

  keys:
    - name: insurer-a               # shown in logs, never the key itself
      key: "a-long-random-secret"   # or sha256: <hex sha256 of the key>
      packs: [standard, acme]       # packs this key may value with and read
    - name: ops
      sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      packs: ["*"]                  # every pack
      roles: [admin, metrics]       # admin: POST /v1/admin/reload; metrics: /metrics

environment (added to the file's keys):
  TIV_API_KEYS="secret1=standard,acme;secret2=*"    keys and their packs
  TIV_ADMIN_KEYS="secret3"                          every pack, admin and metrics

Clients send `Authorization: Bearer KEY` or `X-API-Key: KEY`. A key sees only its
packs and their audit records; every other pack answers 404 as if it did not exist.
"""


def cmd_serve(args: argparse.Namespace) -> int:
    if args.help_keys:
        print(_KEYS_HELP, end="")
        return 0
    try:
        import uvicorn
    except ImportError:
        raise UsageError(
            "the HTTP service needs the server extra: pip install 'tiv-engine[server]'"
        ) from None
    from engine.api import default_time_budget
    from engine.loading.snapshot import load_snapshot
    from engine.service.settings import Settings, SettingsError, check, is_loopback, load_keys
    from engine.service.state import RulesState

    root = rules_root(args)
    try:
        keys = load_keys(args.keys)
        watch = args.watch if args.watch is not None else (2.0 if args.workers > 1 else 0.0)
        settings = check(
            Settings(
                rules=root.resolve(),
                keys=keys,
                audit=Path(args.audit).resolve() if args.audit else None,
                max_body_bytes=args.max_body,
                max_batch=args.max_batch,
                time_budget_s=args.time_budget,
                valuation_budget_s=(
                    args.valuation_budget
                    if args.valuation_budget is not None
                    else default_time_budget()
                ),
                threads=args.threads,
                watch_s=watch,
                body_timeout_s=args.body_timeout,
                body_min_rate=args.body_min_rate,
                freeze_heap=True,  # this process serves and nothing else
            )
        )
    except SettingsError as error:
        raise UsageError(str(error)) from None
    except TivError as error:  # $TIV_TIME_BUDGET is not a number of seconds
        raise UsageError(str(error)) from None
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if settings.open and not is_loopback(args.host):
        raise UsageError(
            f"refusing to listen on {args.host} with no API keys: anyone could call it. "
            "Configure keys (--keys FILE, TIV_API_KEYS; see --help-keys) or listen on 127.0.0.1"
        )
    try:
        snapshot = load_snapshot(root)
    except RulesError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"tiv: not serving: {len(error.problems)} problem(s) in the rules", file=sys.stderr)
        return RulesError.exit_code
    if settings.audit is not None:
        from engine.compliance.audit import AuditError, AuditLog

        try:
            AuditLog(settings.audit).close()  # create it, or find it unusable, now
        except AuditError as error:
            raise UsageError(f"--audit: {error}") from None

    versions = sum(len(v) for v in snapshot.rules.packs.values())
    say = _stderr
    say(
        f"rules: {root} (rules id {snapshot.rules_id}: {len(snapshot.rules.packs)} pack(s), "
        f"{versions} version(s))"
    )
    if settings.open:
        say(
            "no API keys configured: open access, so listening on loopback only "
            f"({args.host}). Configure keys to serve other hosts (tiv serve --help-keys)."
        )
    else:
        names = ", ".join(k.name for k in settings.keys)
        say(f"{len(settings.keys)} API key(s): {names}")
    say(
        f"limits: body {settings.max_body_bytes} bytes, {settings.max_batch} shipments per "
        f"batch, {settings.time_budget_s:g} s per request, a body within "
        f"{settings.body_timeout_s:g} s + 1 s per {settings.body_min_rate} bytes, "
        f"{settings.threads} valuation "
        f"thread(s) x {args.workers} worker(s)"
        + (f"; watching the rules every {settings.watch_s:g} s" if settings.watch_s else "")
    )
    say(f"listening on http://{_url_host(args.host)}:{args.port} (API docs at /docs)")

    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": not args.no_access_log,
        "timeout_graceful_shutdown": int(settings.time_budget_s) + 5,
        "server_header": False,
    }
    if args.workers == 1:
        from engine.service.app import create_app

        app = create_app(settings, RulesState(settings.rules, snapshot))
        uvicorn.run(app, **common)
    else:
        # Worker processes build their own app: settings travel in the environment, and so
        # does the folder where each worker's metrics are kept for /metrics to sum.
        os.environ["TIV_SERVICE_SETTINGS"] = settings.to_json()
        from engine.service.server import run_workers

        with _metrics_folder():
            run_workers(args.workers, common)
    return 0


@contextlib.contextmanager
def _metrics_folder() -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers, removed when they have stopped;
    one given by the operator is used as it is."""
    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    folder = tempfile.mkdtemp(prefix="tiv-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(folder, ignore_errors=True)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _stderr(text: str) -> None:
    print(f"tiv serve: {text}", file=sys.stderr, flush=True)


def register(verbs: Any) -> None:
    """Add this module's verbs to the `tiv` parser."""
    p = verbs.add_parser(
        "serve",
        help="run the HTTP valuation service",
        description="Serve valuations over HTTP (FastAPI on uvicorn): POST /v1/valuations, "
        "batches, pack listings and texts, audit records, hot reload, /metrics, "
        "/healthz, /readyz; OpenAPI at /openapi.json, docs at /docs.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rules",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the rule repository (as tiv --rules)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; others need API keys)",
    )
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker processes, each with its own copy of the rules (default 1)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=4,
        metavar="N",
        help="valuations in flight per worker (default 4)",
    )
    p.add_argument(
        "--keys", metavar="FILE", help="API keys file (YAML; see --help-keys); also $TIV_KEYS_FILE"
    )
    p.add_argument("--help-keys", action="store_true", help="explain API keys and exit")
    p.add_argument("--audit", metavar="PATH", help="record every valuation in this audit log")
    add_audit_key_option(p)
    p.add_argument(
        "--max-body",
        type=positive_int,
        default=1_048_576,
        metavar="BYTES",
        help="largest request body, else 413 (default 1048576)",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=1000,
        metavar="N",
        help="most shipments per batch request, else 422 (default 1000)",
    )
    p.add_argument(
        "--time-budget",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="longest a request may take, queueing included, else 503 (default 10)",
    )
    p.add_argument(
        "--valuation-budget",
        type=seconds,
        metavar="SECONDS",
        help="longest one valuation may take, else 503 (in a batch request, that item's "
        "error) (default: $TIV_TIME_BUDGET, else 2)",
    )
    p.add_argument(
        "--body-timeout",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="a request body must start and keep up within this grace, else 408 (default 5)",
    )
    p.add_argument(
        "--body-min-rate",
        type=positive_int,
        default=10_000,
        metavar="BYTES",
        help="after the grace, a body must arrive at this many bytes/s, else 408 (default 10000)",
    )
    p.add_argument(
        "--watch",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="poll the rule files and reload on change; 0 off (default: off, 2 with --workers > 1)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    p.set_defaults(func=cmd_serve)
