"""Verbs for running tiv at volume: `serve` (the HTTP service) and `batch` (a bordereau)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli.common import UsageError, parse_date, rules_root
from engine.errors import FactsError, RulesError

EXIT_ROWS_FAILED = FactsError.exit_code  # some rows of a batch had bad facts

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

_BATCH_EPILOG = """\
input:
  JSONL: one JSON object of shipment facts per line (blank lines skipped).
  CSV: a header row of field paths, one shipment per row, e.g.
    id,date,currency,mode,origin.country,destination.country,invoice.amount,
    charges[0].type,charges[0].amount,charges[1].type,charges[1].amount,fx.EUR
  A blank cell is an absent field; fill list elements in order; a `duties` column
  takes [] or none for "no duties". --columns FILE maps your headers to paths
  (YAML: `Invoice Value: invoice.amount`; map a header to ~ to ignore it).

output:
  One row per input row, in input order: JSONL rows {"row", "line", "valuation"} or
  {"row", "line", "error"}; CSV rows with status ok/error, the figures, and for an
  error the field path, the CSV column and the message.

interruption:
  OUTPUT.progress records what is complete (fsynced). After a crash, a kill or
  Ctrl-C, run the same command with --resume: it continues after the last complete
  row, with no row missing or repeated.

exit status: 0 every row valued; 2 some rows failed (the summary says how many)
or the input is unreadable; 3 invalid rules; 64 bad command line.
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
    from engine.service.settings import Settings, SettingsError, check, is_loopback, load_keys
    from engine.service.state import RulesState, load_snapshot

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
                threads=args.threads,
                watch_s=watch,
            )
        )
    except SettingsError as error:
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
        try:
            from engine.audit import AuditError, AuditLog
        except ImportError:
            raise UsageError("--audit: this build of tiv has no audit log") from None
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
        f"batch, {settings.time_budget_s:g} s per request, {settings.threads} valuation "
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
        # Worker processes build their own app: settings travel in the environment.
        os.environ["TIV_SERVICE_SETTINGS"] = settings.to_json()
        from engine.service.app import run_workers

        run_workers(args.workers, common)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _stderr(text: str) -> None:
    print(f"tiv serve: {text}", file=sys.stderr, flush=True)


def cmd_batch(args: argparse.Namespace) -> int:
    from engine.batch import BatchError, BatchOptions, count_rows, run_batch

    root = rules_root(args)
    if args.spark:  # hook: scale-out on Spark (engine/spark.py)
        from engine.spark import batch_command

        return batch_command(args, root)
    columns = _columns(args.columns) if args.columns else None
    options = BatchOptions(
        input=Path(args.input),
        output=Path(args.output),
        policy=args.policy,
        as_of=args.as_of,
        allow_draft=args.allow_draft,
        workers=args.workers or os.cpu_count() or 1,
        audit=Path(args.audit) if args.audit else None,
        resume=args.resume,
        trace=args.trace,
        input_format=args.input_format,
        output_format=args.output_format,
        columns=columns,
        delimiter=args.delimiter,
    )
    if not options.input.exists():  # hook: a Parquet input may be a folder
        raise UsageError(f"{args.input}: no such file")
    bar = None
    if not args.quiet and sys.stderr.isatty():
        bar = _Bar(count_rows(options))
    try:
        summary = run_batch(root, options, bar)
    except BatchError as error:
        raise UsageError(str(error)) from None
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        if summary.already_complete:
            print(
                f"tiv batch: nothing to resume: {args.output} is complete "
                f"({summary.rows:,} rows, {summary.failed:,} failed)",
                file=sys.stderr,
            )
        else:
            new = summary.rows - summary.resumed_from
            rate = new / summary.seconds if summary.seconds else 0
            resumed = (
                f" (resumed after row {summary.resumed_from:,})" if summary.resumed_from else ""
            )
            print(
                f"tiv batch: {summary.rows:,} rows, {summary.rows - summary.failed:,} valued, "
                f"{summary.failed:,} failed{resumed}; {new:,} rows in {summary.seconds:.1f} s "
                f"({rate:,.0f} rows/s); rules {summary.rules_id}; output {args.output}",
                file=sys.stderr,
            )
            if summary.failed:
                print(
                    f"tiv batch: {summary.failed:,} row(s) failed: see the rows with an "
                    "error in the output",
                    file=sys.stderr,
                )
    return EXIT_ROWS_FAILED if summary.failed else 0


def _columns(path: str) -> dict[str, str | None]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"--columns {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise UsageError(f"--columns {path}: not valid YAML: {first}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        raise UsageError(f"--columns {path}: expected a mapping of CSV header -> field path")
    return data


class _Bar:
    """A one-line progress bar on stderr: rows, percent, rate, ETA, failures."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()
        self.shown = 0.0
        self.first: int | None = None

    def __call__(self, done: int, failed: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = done  # rows of an earlier run do not count toward the rate
            self.started = now
        if now - self.shown < 0.1 and done < self.total:
            return
        self.shown = now
        rate = (done - self.first) / (now - self.started) if now > self.started else 0.0
        left = (self.total - done) / rate if rate else 0.0
        share = done / self.total if self.total else 1.0
        filled = int(share * 24)
        bar = "#" * filled + "-" * (24 - filled)
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if rate else "--:--:--"
        sys.stderr.write(
            f"\r[{bar}] {done:,}/{self.total:,} {share:6.1%}  {rate:,.0f} rows/s  "
            f"ETA {eta}  failed {failed:,} "
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return number


def _seconds(text: str) -> float:
    try:
        number = float(text)  # a duration, not money: a float is fine here
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return number


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
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes, each with its own copy of the rules (default 1)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=4,
        metavar="N",
        help="valuations in flight per worker (default 4)",
    )
    p.add_argument(
        "--keys", metavar="FILE", help="API keys file (YAML; see --help-keys); also $TIV_KEYS_FILE"
    )
    p.add_argument("--help-keys", action="store_true", help="explain API keys and exit")
    p.add_argument("--audit", metavar="PATH", help="record every valuation in this audit log")
    p.add_argument(
        "--max-body",
        type=_positive_int,
        default=1_048_576,
        metavar="BYTES",
        help="largest request body, else 413 (default 1048576)",
    )
    p.add_argument(
        "--max-batch",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="most shipments per batch request, else 422 (default 1000)",
    )
    p.add_argument(
        "--time-budget",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="longest a request may take, queueing included, else 503 (default 10)",
    )
    p.add_argument(
        "--watch",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="poll the rule files and reload on change; 0 off (default: off, 2 with --workers > 1)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    p.set_defaults(func=cmd_serve)

    p = verbs.add_parser(
        "batch",
        help="value a bordereau (JSONL or CSV), one output row per input row",
        description="Value every shipment of INPUT under one policy, across worker "
        "processes, into OUTPUT (JSONL or CSV by suffix) in input order. Bad rows become "
        "error rows; the batch goes on.",
        epilog=_BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="bordereau: .jsonl/.ndjson or .csv")
    p.add_argument(
        "--rules",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the rule repository (as tiv --rules)",
    )
    p.add_argument("--policy", required=True, metavar="ID[@VERSION]", help="pack to value with")
    p.add_argument(
        "--as-of",
        type=parse_date,
        metavar="DATE",
        help="value every row with the version in effect on DATE (default: each shipment's date)",
    )
    p.add_argument("--allow-draft", action="store_true", help="let a pinned draft version value")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="results: .jsonl or .csv (by suffix, or --output-format)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="worker processes (default: one per CPU core)",
    )
    p.add_argument("--audit", metavar="PATH", help="record every valuation in this audit log")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run of the same command"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument(
        "--trace",
        action="store_true",
        help="include each valuation's trace (JSONL output only; large)",
    )
    p.add_argument("--columns", metavar="FILE", help="CSV header -> field path mapping (YAML)")
    p.add_argument("--delimiter", default=",", help="CSV delimiter (default ,)")
    p.add_argument(
        "--input-format",
        choices=["jsonl", "csv", "parquet"],  # hook: parquet
        help="default: from the suffix (.csv is CSV, .parquet or a folder Parquet, else JSONL)",
    )
    p.add_argument(
        "--output-format",
        choices=["jsonl", "csv", "parquet"],  # hook: parquet (with --spark)
        help="default: from the suffix (.csv is CSV, else JSONL; with --spark, Parquet "
        "unless .jsonl)",
    )
    _spark_arguments(p)  # hook: --spark, --partition-by, --key
    p.set_defaults(func=cmd_batch)


def _spark_arguments(p: argparse.ArgumentParser) -> None:
    """--spark and its companions (a hook: the Spark side lives in engine/spark.py)."""
    p.add_argument(
        "--spark",
        metavar="MASTER",
        help="value on Apache Spark: local[2], spark://host:7077, yarn, or Spark Connect "
        "sc://host:15002 (needs the spark extra); writes Parquet or .jsonl",
    )
    p.add_argument(
        "--partition-by", action="append", metavar="COL", help="with --spark: Parquet partitions"
    )
    p.add_argument(
        "--key", action="append", metavar="COL", help="with --spark: input columns to keep"
    )
