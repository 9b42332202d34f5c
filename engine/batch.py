"""Value a bordereau: every shipment of a JSONL or CSV file, one output row per input row.

In: an input file (JSONL: one JSON object of shipment facts per line; CSV: a header of
field paths, see below), a policy, and the rule repository. Out: an output file (JSONL or
CSV) with one row per input row, in input order: the valuation, or an error row with the
input line and the field at fault. A bad row never stops the batch; `Summary` counts them.

Work is spread over worker processes, each loading the rules once from the very bytes
the main process loaded (so all of them value with the same rules, even if the files
change meanwhile). Rows travel in chunks through a bounded window of pending chunks, and
each chunk's rows are written as soon as every earlier chunk is: memory stays flat and
the output is identical whatever the number of workers.

Interruption and `resume=True`: the output is fsynced, then a sidecar `OUTPUT.progress`
records (atomically) how many rows and bytes of output are complete. A run killed at
any moment leaves a progress file that describes a prefix of the output; resuming
truncates the output to that prefix (dropping any partial or unrecorded rows) and
continues with the next input row. Nothing is duplicated, nothing lost. A finished run
marks its progress file complete.

CSV input: the header names fields by their JSON path, as error messages do:

    id,date,currency,mode,origin.country,destination.country,invoice.amount,
    charges[0].type,charges[0].amount,charges[1].type,charges[1].amount,fx.EUR

A blank cell is an absent field; a list element whose cells are all blank is absent
(fill list elements in order: a blank one before a filled one is an error of that row).
A column naming a whole list (`duties`) takes `[]` or `none` for "given as none".
Numbers are read exactly from the cell text. `columns` maps a bordereau's own headers
to field paths (a header mapped to None is ignored).
"""

from __future__ import annotations

import collections
import csv
import datetime
import hashlib
import io
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from engine.api import value
from engine.errors import FactsError, Location, Problem, TivError
from engine.facts import Shipment
from engine.result import Valuation
from engine.service.state import Snapshot, load_snapshot, snapshot_from_texts

FORMATS = ("jsonl", "csv")
PROGRESS_SUFFIX = ".progress"
_CHUNK = 100  # rows per task: large enough to amortise the hop, small enough to stream
_WINDOW = 4  # pending chunks per worker: keeps workers fed without reading ahead far


class BatchError(Exception):
    """The batch cannot start or resume (not a bad row): one line saying what to do."""


@dataclass(frozen=True)
class BatchOptions:
    input: Path
    output: Path
    policy: str
    as_of: datetime.date | None = None
    allow_draft: bool = False
    workers: int = 1
    audit: Path | None = None
    resume: bool = False
    trace: bool = False
    input_format: str | None = None  # from the suffix when None: .csv, else jsonl
    output_format: str | None = None
    columns: Mapping[str, str | None] | None = None  # CSV header -> field path
    delimiter: str = ","


@dataclass(frozen=True)
class Summary:
    rows: int  # rows in the output (all of them, including those of an earlier run)
    failed: int
    resumed_from: int  # rows already done when this run started
    seconds: float
    rules_id: str
    already_complete: bool = False  # resumed a run that had finished: nothing was done


@dataclass(frozen=True)
class Row:
    number: int  # 1-based data row
    line: int  # physical line of the input where the row starts
    facts: bytes | dict[str, Any] | None  # JSONL line bytes, or the nested dict of a CSV row
    problems: tuple[Problem, ...] = ()  # found while reading the row


def format_of(path: Path, given: str | None) -> str:
    if given:
        return given
    if path.suffix.lower() == ".parquet" or path.is_dir():  # hook: Parquet (engine/parquet.py)
        return "parquet"
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"


# --- reading ------------------------------------------------------------------------


def read_rows(options: BatchOptions, minor_units: Mapping[str, int] | None = None) -> Iterator[Row]:
    if format_of(options.input, options.input_format) == "parquet":  # hook: engine/parquet.py
        from engine.parquet import batch_rows

        return batch_rows(options.input, minor_units)
    if format_of(options.input, options.input_format) == "csv":
        return _csv_rows(options)
    return _jsonl_rows(options.input)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    number = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            text = raw.strip()
            if not text:
                continue
            number += 1
            if line_no == 1:
                text = text.removeprefix(b"\xef\xbb\xbf")
            if text[:1] != b"{":
                problem = Problem(
                    "facts.type", "each line must be one JSON object of shipment facts"
                )
                yield Row(number, line_no, None, (problem,))
            else:
                yield Row(number, line_no, text)


_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])*(\.[A-Za-z0-9_]+(\[[0-9]+\])*)*")
_PART = re.compile(r"([A-Za-z0-9_]+)|\[([0-9]+)\]")


def parse_path(path: str) -> tuple[str | int, ...]:
    """`charges[0].amount` -> ("charges", 0, "amount"); ValueError if it is not a path."""
    if not _PATH.fullmatch(path):
        raise ValueError(path)
    return tuple(
        name if name else int(index) for name, index in _PART.findall(path.replace(".", " "))
    )


def _field_kind(parts: tuple[str | int, ...]) -> str:
    """What the Shipment model expects at a path: model, list, int, map, value; or unknown."""
    annotation: Any = Shipment
    for part in parts:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            if get_origin(annotation) not in (tuple, list):
                return "unknown"
            annotation = get_args(annotation)[0]
            continue
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return "unknown"
        field = annotation.model_fields.get(part)
        if field is None:
            return "unknown"
        annotation = field.annotation
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin in (tuple, list):
        return "list"
    if origin is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model"
    if annotation is int:
        return "int"
    return "value"


def _unwrap(annotation: Any) -> Any:
    """Strip Optional and Annotated: `tuple[Charge, ...] | None` -> `tuple[Charge, ...]`."""
    while True:
        args = [a for a in get_args(annotation) if a is not type(None)]
        origin = get_origin(annotation)
        if origin is not None and str(origin).endswith("Annotated"):
            annotation = args[0]
        elif origin is not None and origin not in (tuple, list, dict) and len(args) == 1:
            annotation = args[0]  # X | None
        elif getattr(annotation, "__metadata__", None) is not None:
            annotation = annotation.__origin__
        else:
            return annotation


@dataclass(frozen=True)
class _Column:
    header: str
    parts: tuple[str | int, ...] | None  # None: ignored
    kind: str


def csv_columns(
    header: Sequence[str], mapping: Mapping[str, str | None] | None, file: str
) -> list[_Column]:
    """Check a CSV header (through `mapping`) against the facts model; raise FactsError."""
    columns, problems, seen = [], [], {}
    for position, name in enumerate(header, 1):
        target = mapping.get(name, name) if mapping is not None else name
        where = Location(file, 1, position, name)
        if target is None:
            columns.append(_Column(name, None, "ignored"))
            continue
        try:
            parts = parse_path(target.strip())
        except ValueError:
            problems.append(
                Problem(
                    "csv.column",
                    f"column {name!r} is not a field path (e.g. invoice.amount, charges[0].type)",
                    where,
                )
            )
            continue
        kind = _field_kind(parts)
        if kind in ("unknown", "model", "map"):
            problems.append(
                Problem(
                    "csv.column",
                    f"column {name!r} ({target}) names no single field of the shipment facts"
                    if kind == "unknown"
                    else f"column {name!r} ({target}) is a group of fields: name one of them",
                    where,
                )
            )
            continue
        if target in seen:
            problems.append(
                Problem(
                    "csv.column", f"columns {seen[target]!r} and {name!r} both give {target}", where
                )
            )
            continue
        seen[target] = name
        columns.append(_Column(name, parts, kind))
    if problems:
        raise FactsError(problems)
    return columns


def _csv_rows(options: BatchOptions) -> Iterator[Row]:
    file = str(options.input)
    with options.input.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=options.delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as error:
            raise _not_utf8(file, 1, error) from None
        columns = csv_columns(header, options.columns, file)
        number = 0
        last_line = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as error:
                raise _not_utf8(file, last_line + 1, error) from None
            except csv.Error as error:
                raise FactsError(
                    Problem(
                        "csv.syntax", f"unreadable CSV: {error}", Location(file, reader.line_num)
                    )
                ) from None
            start, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            number += 1
            yield _csv_row(number, start, cells, columns)


def _not_utf8(file: str, line: int, error: UnicodeDecodeError) -> FactsError:
    return FactsError(
        Problem(
            "facts.encoding",
            f"not UTF-8 text ({error.reason}); save the bordereau as UTF-8",
            Location(file, line),
        )
    )


def _csv_row(number: int, line: int, cells: Sequence[str], columns: list[_Column]) -> Row:
    if len(cells) != len(columns):
        problem = Problem("csv.cells", f"{len(cells)} cells where the header has {len(columns)}")
        return Row(number, line, None, (problem,))
    facts: dict[str, Any] = {}
    problems = []
    for column, cell in zip(columns, cells, strict=True):
        text = cell.strip()
        if column.parts is None or not text:
            continue
        if column.kind == "list":
            if text.lower() not in ("[]", "none"):
                problems.append(
                    Problem(
                        "csv.list",
                        f"column {column.header!r} takes [] or none "
                        "(list elements go in columns like charges[0].type)",
                        Location(path=_path_text(column.parts)),
                    )
                )
                continue
            cell_value: Any = []
        elif column.kind == "int" and re.fullmatch(r"-?[0-9]+", text):
            cell_value = int(text)
        else:
            cell_value = text
        _put(facts, column.parts, cell_value)
    return Row(number, line, _lists(facts), tuple(problems))


def _put(target: dict[str, Any], parts: tuple[str | int, ...], cell: Any) -> None:
    # Lists are built as {index: item} and turned into lists by `_lists` afterwards.
    node: Any = target
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = cell


def _lists(node: Any) -> Any:
    """Turn the {index: item} dicts made by `_put` into lists; a gap becomes None."""
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, int) for k in node):
        return [_lists(node.get(i)) for i in range(max(node) + 1)]
    return {k: _lists(v) for k, v in node.items()}


def _path_text(parts: tuple[str | int, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def count_rows(options: BatchOptions) -> int:
    """Rows in the input (for the progress bar): a quick pass that values nothing."""
    if format_of(options.input, options.input_format) == "parquet":  # hook: engine/parquet.py
        from engine.parquet import count_records

        return count_records(options.input)
    if format_of(options.input, options.input_format) == "csv":
        with options.input.open(encoding="utf-8-sig", newline="", errors="replace") as handle:
            reader = csv.reader(handle, delimiter=options.delimiter)
            next(reader, None)
            return sum(1 for cells in reader if any(c.strip() for c in cells))
    with options.input.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


# --- valuing (in each worker) -------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    policy: str
    as_of: datetime.date | None
    allow_draft: bool
    trace: bool
    output_format: str
    columns: tuple[str, ...]  # CSV output's component columns
    headers: Mapping[str, str]  # field path -> CSV input header, for error rows
    audit: str | None


class _Valuer:
    def __init__(self, snapshot: Snapshot, job: _Job) -> None:
        self.snapshot = snapshot
        self.job = job
        self.audit = _open_audit(job.audit)

    def run(self, rows: Sequence[Row]) -> tuple[str, int]:
        """The output text of `rows`, and how many of them failed."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n") if self.job.output_format == "csv" else None
        failed = 0
        for row in rows:
            result: Valuation | None = None
            error: TivError | None = FactsError(row.problems) if row.problems else None
            if error is None:
                try:
                    assert row.facts is not None
                    result = value(
                        self.snapshot.rules,
                        row.facts,
                        policy=self.job.policy,
                        as_of=self.job.as_of,
                        allow_draft=self.job.allow_draft,
                        trace=self.job.trace,
                        audit=self.audit,
                    )
                except TivError as caught:
                    error = caught
            if error is not None:
                failed += 1
            if writer is not None:
                writer.writerow(self._csv(row, result, error))
            else:
                out.write(json.dumps(self._json(row, result, error), ensure_ascii=False) + "\n")
        return out.getvalue(), failed

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
        cells = [str(row.number), str(row.line)]
        if result is not None:
            components = [result.components.get(name, "") for name in self.job.columns]
            cells += [
                "ok",
                result.shipment_id,
                f"{result.policy.id}@{result.policy.version}",
                result.as_of.isoformat(),
                result.currency,
                result.total_insured_value,
                result.decision,
                *components,
                "|".join(f.name for f in result.flags),
                "|".join(c.type for c in result.excluded_charges),
                result.audit_id or "",
                "",
                "",
                "",
                "",
            ]
        else:
            assert error is not None
            problems = self._problems(error)
            first = problems[0]
            shipment_id = row.facts.get("id", "") if isinstance(row.facts, dict) else ""
            cells += ["error", str(shipment_id), "", "", "", "", ""]
            cells += [""] * len(self.job.columns) + ["", "", ""]
            cells += [
                error.kind,
                str(first.get("path", "")),
                str(first.get("column", "")),
                "; ".join(
                    (f"{p['path']}: " if p.get("path") else "") + str(p["message"])
                    for p in problems
                ),
            ]
        return cells


def csv_header(components: Sequence[str]) -> list[str]:
    return [
        "row", "line", "status", "shipment_id", "policy", "as_of", "currency",
        "total_insured_value", "decision",
        *(f"components.{name}" for name in components),
        "flags", "excluded_charges", "audit_id",
        "error", "error_path", "error_column", "error_message",
    ]  # fmt: skip


def _open_audit(path: str | None) -> Any:
    if path is None:
        return None
    try:
        from engine.audit import AuditError, AuditLog
    except ImportError:
        raise BatchError("--audit: this build of tiv has no audit log") from None
    try:
        return AuditLog(Path(path))
    except AuditError as error:
        raise BatchError(f"--audit: {error}") from None


_WORKER: _Valuer | None = None


def _start_worker(texts: Mapping[str, bytes], name: str, job: _Job) -> None:
    global _WORKER
    _WORKER = _Valuer(snapshot_from_texts(texts, name), job)


def _run_chunk(rows: Sequence[Row]) -> tuple[str, int]:
    assert _WORKER is not None, "worker not started"
    return _WORKER.run(rows)


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
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory fsync
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        if given not in FORMATS and (name, given) != ("input", "parquet"):  # hook: Parquet in
            raise BatchError(f"unknown {name} format {given!r} (formats: {', '.join(FORMATS)})")
    if not options.input.exists():
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
    components = _components(snapshot, options.policy)
    job = _Job(
        policy=options.policy,
        as_of=options.as_of,
        allow_draft=options.allow_draft,
        trace=options.trace,
        output_format=output_format,
        columns=components,
        headers=_headers(options),
        audit=str(options.audit) if options.audit else None,
    )
    rows = read_rows(options, snapshot.rules.currencies)  # hook: Parquet money scale
    resumed_from = done
    for _ in range(done):  # rows of the earlier run: already in the output
        next(rows, None)

    with options.output.open("r+b") as out:
        out.truncate(offset)
        out.seek(offset)
        if offset == 0 and output_format == "csv":
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerow(csv_header(components))
            out.write(text.getvalue().encode("utf-8"))
            _checkpoint(out, ledger, identity, 0, 0)
        last = time.monotonic()

        def write(text: str, count: int, bad: int) -> None:
            nonlocal done, failed, last
            out.write(text.encode("utf-8"))
            done += count
            failed += bad
            now = time.monotonic()
            if now - last >= 0.5:  # fsync twice a second, not per chunk
                _checkpoint(out, ledger, identity, done, failed)
                last = now
            if progress is not None:
                progress(done, failed)

        try:
            _value_all(snapshot, job, rows, options.workers, write)
        finally:
            # Whatever happened, what is written is whole chunks: record it.
            _checkpoint(out, ledger, identity, done, failed)
    _checkpoint_complete(ledger, identity, done, failed, options.output.stat().st_size)
    return Summary(done, failed, resumed_from, time.monotonic() - started, snapshot.rules_id)


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
    rows: Iterator[Row],
    workers: int,
    write: Callable[[str, int, int], None],
) -> None:
    chunks = _chunks(rows, _CHUNK)
    if workers == 1:
        valuer = _Valuer(snapshot, job)
        for chunk in chunks:
            text, bad = valuer.run(chunk)
            write(text, len(chunk), bad)
        return
    # spawn, not fork: a fresh interpreter per worker shares no durable_rules state or
    # threads with this one, and behaves the same on every platform.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(dict(snapshot.texts), snapshot.rules.source, job),
    ) as pool:
        pending: collections.deque[tuple[Future[tuple[str, int]], int]] = collections.deque()
        try:
            for chunk in chunks:
                pending.append((pool.submit(_run_chunk, chunk), len(chunk)))
                while len(pending) >= workers * _WINDOW:
                    future, size = pending.popleft()
                    _emit(write, future, size)
            while pending:
                future, size = pending.popleft()
                _emit(write, future, size)
        except BaseException:
            for future, _ in pending:
                future.cancel()
            raise


def _emit(
    write: Callable[[str, int, int], None], future: Future[tuple[str, int]], size: int
) -> None:
    text, bad = future.result()
    write(text, size, bad)


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _components(snapshot: Snapshot, policy: str) -> tuple[str, ...]:
    """Component names over every version of the pack, in first-seen order (CSV columns)."""
    pack_id, _, version = policy.partition("@")
    names: dict[str, None] = {}
    for pack in snapshot.rules.pack_versions(pack_id):
        if not version or pack.version == version:
            names.update(dict.fromkeys(pack.result.components))
    return tuple(names)


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
                out[_path_text(parse_path(target.strip()))] = name
            except ValueError:
                continue
    return out


__all__ = [
    "BatchError",
    "BatchOptions",
    "Summary",
    "count_rows",
    "csv_columns",
    "progress_path",
    "read_rows",
    "run_batch",
]
