"""Value a bordereau: every shipment of a JSONL or CSV file, one output row per input row.

In: an input file (JSONL: one JSON object of shipment facts per line; CSV: a header of
field paths, see below), a policy, and the rule repository. Out: an output file (JSONL or
CSV) with one row per input row, in input order: the valuation, or an error row with the
input line and the field at fault. A bad row never stops the batch; `Summary` counts them.

Work is spread over worker processes, each loading the rules once from the very bytes
the main process loaded (so all of them value with the same rules, even if the files
change meanwhile). Rows travel in chunks through a bounded window of pending chunks, and
each chunk's rows are written as soon as every earlier chunk is: memory stays flat and
the output is identical whatever the number of workers. A chunk goes out as the input's
own bytes (or CSV cells) and comes back as the output's bytes; a worker values its rows
in one `value_many` stream, so nothing is parsed, encoded or pickled twice.

Interruption and `resume=True`: the output is fsynced, then a sidecar `OUTPUT.progress`
records (atomically) how many rows and bytes of output are complete. A run killed at
any moment leaves a progress file that describes a prefix of the output; resuming
truncates the output to that prefix (dropping any partial or unrecorded rows) and
continues with the next input row. Nothing is duplicated, nothing lost. A finished run
marks its progress file complete.

"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.api import value, value_many
from engine.atomic import write_atomic
from engine.batch.options import FORMATS, BatchError, BatchOptions, Summary, format_of
from engine.batch.pool import ordered_map
from engine.batch.readers import Chunk, Row, chunk_rows, parse_path, path_text, read_chunks
from engine.compliance.audit import AuditError, AuditLog
from engine.errors import FactsError, TivError
from engine.loading.snapshot import Snapshot, load_snapshot, snapshot_from_texts
from engine.money import plain
from engine.result import Valuation

__all__ = ["Progress", "csv_header", "progress_path", "run_batch"]

PROGRESS_SUFFIX = ".progress"
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(x, ensure_ascii=False)


@dataclass(frozen=True)
class _Job:
    policy: str
    as_of: datetime.date | None
    allow_draft: bool
    trace: bool
    output_format: str
    header: tuple[str, ...]  # CSV output's columns
    headers: Mapping[str, str]  # field path -> CSV input header, for error rows
    audit: str | None


class _Valuer:
    """Values chunks of rows into output text, in a worker (or in the main process)."""

    def __init__(self, snapshot: Snapshot, job: _Job) -> None:
        self.snapshot = snapshot
        self.job = job
        self.audit = _open_audit(job.audit) if job.audit else None

    def run(self, chunk: Chunk) -> tuple[bytes, int, int]:
        """The output of `chunk` as UTF-8, how many rows that is, and how many failed."""
        rows = list(chunk_rows(chunk))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n") if self.job.output_format == "csv" else None
        failed = 0
        outcomes = self._value(rows)
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, Valuation):
                result, error = outcome, None
            else:
                result, error = None, outcome
                failed += 1
            if writer is not None:
                writer.writerow(self._csv(row, result, error))
            else:
                out.write(_ENCODE(self._json(row, result, error)))
                out.write("\n")
        return out.getvalue().encode("utf-8"), len(rows), failed

    def _value(self, rows: Sequence[Row]) -> Iterator[Valuation | TivError]:
        """Each row's valuation or error, in order; the good rows go through `value_many`
        in one stream, sharing everything compiled."""
        job = self.job
        if self.audit is not None:  # recorded one by one: `value` writes the record
            return (self._value_one(row) for row in rows)
        valued = value_many(
            self.snapshot.rules,
            (row.facts for row in rows if not row.problems and row.facts is not None),
            policy=job.policy,
            as_of=job.as_of,
            allow_draft=job.allow_draft,
            trace=job.trace,
        )
        return (
            FactsError(row.problems) if row.problems or row.facts is None else next(valued)
            for row in rows
        )

    def _value_one(self, row: Row) -> Valuation | TivError:
        if row.problems or row.facts is None:
            return FactsError(row.problems)
        try:
            return value(
                self.snapshot.rules,
                row.facts,
                policy=self.job.policy,
                as_of=self.job.as_of,
                allow_draft=self.job.allow_draft,
                trace=self.job.trace,
                audit=self.audit,
            )
        except TivError as caught:
            return caught

    def _problems(self, error: TivError) -> list[dict[str, Any]]:
        problems = []
        for problem in error.problems:
            data = problem.to_dict()
            if data.get("file") == "<input>":
                del data["file"]  # the row's own text: the row's `line` says where it is
                data.pop("line", None)  # always 1 in a one-line row; `col` is kept
            column = self.job.headers.get(problem.location.path)
            if column is not None:
                data["column"] = column
            problems.append(data)
        return problems

    def _json(self, row: Row, result: Valuation | None, error: TivError | None) -> dict[str, Any]:
        out: dict[str, Any] = {"row": row.number, "line": row.line}
        if result is not None:
            out["valuation"] = result.model_dump(mode="json")
        else:
            assert error is not None
            out["error"] = {"error": error.kind, "problems": self._problems(error)}
        return out

    def _csv(self, row: Row, result: Valuation | None, error: TivError | None) -> list[str]:
        cells: dict[str, str | None] = {"row": str(row.number), "line": str(row.line)}
        if result is not None:
            cells |= {
                "status": "ok",
                "shipment_id": result.shipment_id,
                "policy": f"{result.policy.id}@{result.policy.version}",
                "as_of": result.as_of.isoformat(),
                "currency": result.currency,
                "total_insured_value": plain(result.total_insured_value),
                "premium": _plain(result.premium),
                "deductible": _plain(result.deductible),
                "decision": result.decision,
                "reasons": " | ".join(f"{r.rule}: {r.reason}" for r in result.reasons),
                "flags": "|".join(f.name for f in result.flags),
                "excluded_charges": "|".join(c.type for c in result.excluded_charges),
                "audit_id": result.audit_id,
            }
            cells |= {f"components.{k}": plain(v) for k, v in result.components.items()}
            cells |= {f"figures.{k}": _plain(v) for k, v in result.figures.items()}
        else:
            assert error is not None
            problems = self._problems(error)
            first = problems[0]
            shipment_id = row.facts.get("id", "") if isinstance(row.facts, dict) else ""
            cells |= {
                "status": "error",
                "shipment_id": str(shipment_id),
                "error": error.kind,
                "error_path": str(first.get("path", "")),
                "error_column": str(first.get("column", "")),
                "error_message": "; ".join(
                    (f"{p['path']}: " if p.get("path") else "") + str(p["message"])
                    for p in problems
                ),
            }
        return [cells.get(name) or "" for name in self.job.header]


def _plain(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


def csv_header(components: Sequence[str], figures: Sequence[str] = ()) -> list[str]:
    """The CSV output's columns: a premium bordereau's, then each error's."""
    return [
        "row", "line", "status", "shipment_id", "policy", "as_of", "currency",
        "total_insured_value", "premium", "deductible", "decision", "reasons",
        *(f"components.{name}" for name in components),
        *(f"figures.{name}" for name in figures),
        "flags", "excluded_charges", "audit_id",
        "error", "error_path", "error_column", "error_message",
    ]  # fmt: skip


def _open_audit(path: str) -> AuditLog:
    try:
        return AuditLog(Path(path))
    except AuditError as error:
        raise BatchError(f"--audit: {error}") from None


_WORKER: _Valuer | None = None


def _start_worker(texts: Mapping[str, bytes], name: str, job: _Job) -> None:
    global _WORKER
    _WORKER = _Valuer(snapshot_from_texts(texts, name), job)


def _run_chunk(chunk: Chunk) -> tuple[bytes, int, int]:
    assert _WORKER is not None, "worker not started"
    return _WORKER.run(chunk)


# --- checkpoints --------------------------------------------------------------------


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + PROGRESS_SUFFIX)


def _identity(options: BatchOptions, snapshot: Snapshot) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    stat = options.input.stat()
    columns = json.dumps(dict(options.columns or {}), sort_keys=True)
    return {
        "input": str(options.input.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "policy": options.policy,
        "as_of": options.as_of.isoformat() if options.as_of else None,
        "allow_draft": options.allow_draft,
        "trace": options.trace,
        "input_format": format_of(options.input, options.input_format),
        "output_format": format_of(options.output, options.output_format),
        "columns": hashlib.sha256(columns.encode()).hexdigest()[:16],
        "delimiter": options.delimiter,
        "audit": str(options.audit) if options.audit else None,
        "rules_id": snapshot.rules_id,
    }


def _write_progress(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1) + "\n")


def _read_progress(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise BatchError(
            f"{path}: unreadable progress file ({error}); delete it and the output to start over"
        ) from None
    if not isinstance(data, dict):
        raise BatchError(f"{path}: not a progress file; delete it to start over")
    return data


# --- the run ------------------------------------------------------------------------

Progress = Callable[[int, int], None]  # (rows done, rows failed), after every chunk


def run_batch(
    root: Path,
    options: BatchOptions,
    progress: Progress | None = None,
    *,
    snapshot: Snapshot | None = None,
) -> Summary:
    """Value every row of `options.input` into `options.output`; see the module doc.

    Raises BatchError (cannot start or resume), RulesError (rules invalid), FactsError
    (the input as a whole is unreadable: a bad CSV header, not UTF-8) or SelectionError
    (no such pack). A row's own problems are error rows, not exceptions.
    """
    started = time.monotonic()
    # The same checks as `tiv value`: the rules load. (The service also insists on the
    # examples and the lock, as `tiv validate` does, since it swaps rules unattended.)
    snapshot = snapshot or load_snapshot(root, check_examples=False, check_lock=False)
    # An unknown pack or pinned version fails the batch now, not every row.
    if "@" in options.policy:
        snapshot.rules.select(options.policy, datetime.date.min, allow_draft=options.allow_draft)
    else:
        snapshot.rules.pack_versions(options.policy)
    if options.workers < 1:
        raise BatchError("--workers must be at least 1")
    output_format = format_of(options.output, options.output_format)
    for name, given in (
        ("input", format_of(options.input, options.input_format)),
        ("output", output_format),
    ):
        if given not in FORMATS and (name, given) != ("input", "parquet"):
            raise BatchError(f"unknown {name} format {given!r} (formats: {', '.join(FORMATS)})")
    if not options.input.exists():  # a Parquet input may be a dataset folder
        raise BatchError(f"{options.input}: no such file")
    if options.input.resolve() == options.output.resolve():
        raise BatchError("the output must not be the input file")

    if options.audit is not None:
        _open_audit(str(options.audit)).close()  # fail here, not in every worker
    identity = _identity(options, snapshot)
    ledger = progress_path(options.output)
    done, failed, offset = _prepare_output(options, ledger, identity)
    if done is None:  # the run had finished already
        return Summary(
            rows=offset,
            failed=failed,
            resumed_from=offset,
            seconds=time.monotonic() - started,
            rules_id=snapshot.rules_id,
            already_complete=True,
        )
    header = csv_header(*_result_names(snapshot, options.policy))
    job = _Job(
        policy=options.policy,
        as_of=options.as_of,
        allow_draft=options.allow_draft,
        trace=options.trace,
        output_format=output_format,
        header=tuple(header),
        headers=_headers(options),
        audit=str(options.audit) if options.audit else None,
    )
    # The rows of an earlier run are already in the output: reading starts after them.
    chunks = read_chunks(
        options, max(1, options.chunk), skip=done, minor_units=snapshot.rules.currencies
    )
    resumed_from = done

    with options.output.open("r+b") as out:
        out.truncate(offset)
        out.seek(offset)
        if offset == 0 and output_format == "csv":
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerow(header)
            out.write(text.getvalue().encode("utf-8"))
            _checkpoint(out, ledger, identity, 0, 0)
        last = time.monotonic()

        def write(text: bytes, count: int, bad: int) -> None:
            nonlocal done, failed, last
            out.write(text)
            done += count
            failed += bad
            now = time.monotonic()
            if now - last >= 0.5:  # fsync twice a second, not per chunk
                _checkpoint(out, ledger, identity, done, failed)
                last = now
            if progress is not None:
                progress(done, failed)

        # The rate counts from here, the rows of this run only: the bar (which starts at
        # this first call) and the summary measure the same thing.
        valuing = time.monotonic()
        if progress is not None:
            progress(done, failed)
        try:
            _value_all(snapshot, job, chunks, options.workers, write)
        finally:
            # Whatever happened, what is written is whole chunks: record it.
            _checkpoint(out, ledger, identity, done, failed)
    _checkpoint_complete(ledger, identity, done, failed, options.output.stat().st_size)
    end = time.monotonic()
    return Summary(
        done, failed, resumed_from, end - started, snapshot.rules_id, False, end - valuing
    )


def _prepare_output(
    options: BatchOptions, ledger: Path, identity: Mapping[str, Any]
) -> tuple[int | None, int, int]:
    """(rows done, rows failed, output bytes to keep); rows done None: nothing to do."""
    previous = _read_progress(ledger)
    if not options.resume:
        if previous is not None and not previous.get("complete"):
            raise BatchError(
                f"{ledger} shows an unfinished run ({previous.get('rows_done', 0)} rows done): "
                "pass --resume to continue it, or delete that file to start over"
            )
        return _start_fresh(options, ledger, identity)
    if previous is None:
        if options.output.exists() and options.output.stat().st_size:
            raise BatchError(
                f"--resume: {ledger} is missing, so it is unknown how much of "
                f"{options.output} is complete; start over without --resume"
            )
        return _start_fresh(options, ledger, identity)
    changed = [k for k, v in identity.items() if previous.get(k) != v]
    if changed:
        raise BatchError(
            "--resume: the run cannot continue because " + ", ".join(changed) + " changed "
            "since it started (results would mix); start over without --resume"
        )
    done, failed, offset = (int(previous[k]) for k in ("rows_done", "failed", "output_bytes"))
    if previous.get("complete"):
        return None, failed, done
    if not options.output.exists() or options.output.stat().st_size < offset:
        raise BatchError(
            f"--resume: {options.output} is shorter than {ledger} records; "
            "start over without --resume"
        )
    return done, failed, offset


def _start_fresh(
    options: BatchOptions, ledger: Path, identity: Mapping[str, Any]
) -> tuple[int, int, int]:
    # The ledger says "nothing done" before the output is emptied: a kill in between
    # leaves a ledger that a resume trusts to truncate whatever the output still holds.
    options.output.parent.mkdir(parents=True, exist_ok=True)
    _write_progress(
        ledger,
        {**identity, "rows_done": 0, "failed": 0, "output_bytes": 0, "complete": False},
    )
    options.output.write_bytes(b"")
    return 0, 0, 0


def _checkpoint(
    out: Any, ledger: Path, identity: Mapping[str, Any], done: int, failed: int
) -> None:
    out.flush()
    os.fsync(out.fileno())  # the rows are on disk before the ledger says so
    _write_progress(
        ledger,
        {
            **identity,
            "rows_done": done,
            "failed": failed,
            "output_bytes": out.tell(),
            "complete": False,
        },
    )


def _checkpoint_complete(
    ledger: Path, identity: Mapping[str, Any], done: int, failed: int, size: int
) -> None:
    _write_progress(
        ledger,
        {**identity, "rows_done": done, "failed": failed, "output_bytes": size, "complete": True},
    )


def _value_all(
    snapshot: Snapshot,
    job: _Job,
    chunks: Iterator[Chunk],
    workers: int,
    write: Callable[[bytes, int, int], None],
) -> None:
    if workers == 1:
        valuer = _Valuer(snapshot, job)
        for chunk in chunks:
            write(*valuer.run(chunk))
        return
    initargs = (dict(snapshot.texts), snapshot.rules.source, job)
    for text, count, bad in ordered_map(
        _run_chunk, chunks, workers=workers, initializer=_start_worker, initargs=initargs
    ):
        write(text, count, bad)


def _result_names(snapshot: Snapshot, policy: str) -> tuple[list[str], list[str]]:
    """Component and figure names over every version of the pack, in first-seen order."""
    pack_id, _, version = policy.partition("@")
    components: dict[str, None] = {}
    figures: dict[str, None] = {}
    for pack in snapshot.rules.pack_versions(pack_id):
        if not version or pack.version == version:
            components.update(dict.fromkeys(pack.result.components))
            figures.update(dict.fromkeys(pack.result.figures))
    return list(components), list(figures)


def _headers(options: BatchOptions) -> dict[str, str]:
    """Field path -> the CSV header it came from (error rows name the column)."""
    if format_of(options.input, options.input_format) != "csv":
        return {}
    with options.input.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle, delimiter=options.delimiter), [])
    mapping = options.columns or {}
    out = {}
    for name in header:
        target = mapping.get(name, name) if options.columns is not None else name
        if target:
            try:
                out[path_text(parse_path(target.strip()))] = name
            except ValueError:
                continue
    return out
