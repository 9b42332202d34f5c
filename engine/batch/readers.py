"""Read a bordereau: JSONL or CSV rows as shipment facts, each with the line it came from.

In: `BatchOptions` (input path, format, CSV delimiter and header mapping). Out: `Row`s in
input order; a row that cannot be read carries its problems instead of facts, so a bad
row never stops the batch. A header that cannot be read raises FactsError.

Reading is in two steps, so that a process pool moves little: `read_chunks` (in the main
process) only cuts the input into chunks of rows as read, JSONL lines as one bytes object
and CSV records as their cells; `chunk_rows` (in a worker) turns a chunk into `Row`s.

CSV input: the header names fields by their JSON path, as error messages do:

    id,date,currency,mode,origin.country,destination.country,invoice.amount,
    charges[0].type,charges[0].amount,charges[1].type,charges[1].amount,fx.EUR

A blank cell is an absent field; a list element whose cells are all blank is absent
(fill list elements in order: a blank one before a filled one is an error of that row).
A column naming a whole list (`duties`) takes `[]` or `none` for "given as none".
Numbers are read exactly from the cell text. `columns` maps a bordereau's own headers
to field paths (a header mapped to None is ignored).

A row longer than the input limit (the limit of one facts document: --max-input,
$TIV_MAX_INPUT_BYTES, 2 MiB by default) is an error row, `input.too_large`: it is
skipped unread (never held in memory whole) and the batch goes on.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, get_args, get_origin

from pydantic import BaseModel

from engine.batch.options import BatchOptions, format_of
from engine.errors import FactsError, Location, Problem
from engine.facts import Shipment
from engine.loading.yamlfile import max_input_bytes

__all__ = [
    "Chunk",
    "CsvChunk",
    "JsonlChunk",
    "Row",
    "chunk_rows",
    "count_rows",
    "csv_columns",
    "parse_path",
    "path_text",
    "read_chunks",
    "read_rows",
]


@dataclass(frozen=True)
class Row:
    number: int  # 1-based data row
    line: int  # physical line of the input where the row starts
    facts: bytes | dict[str, Any] | None  # JSONL line bytes, or the nested dict of a CSV row
    problems: tuple[Problem, ...] = ()  # found while reading the row


@dataclass(frozen=True)
class JsonlChunk:
    """Consecutive physical lines of a JSONL input, as read: one bytes object to send to a
    worker, which cuts it into rows itself (`chunk_rows`)."""

    number: int  # the data row of the first non-blank line
    line: int  # the physical line `text` starts at
    text: bytes
    rows: int  # non-blank lines in `text`
    # (physical line, bytes) of each line over the row limit, in `text` as a placeholder
    oversized: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class CsvChunk:
    """Consecutive CSV records, as cells: the worker turns them into facts."""

    number: int  # the data row of the first record
    records: list[tuple[int, list[str]]]  # (physical line the record starts at, cells)
    columns: list[_Column]

    @property
    def rows(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class RowsChunk:
    """Rows already read, as a Parquet reader gives them (records are not text)."""

    items: tuple[Row, ...]

    @property
    def rows(self) -> int:
        return len(self.items)


Chunk = JsonlChunk | CsvChunk | RowsChunk


def read_rows(options: BatchOptions, minor_units: Mapping[str, int] | None = None) -> Iterator[Row]:
    for chunk in read_chunks(options, 1000, minor_units=minor_units):
        yield from chunk_rows(chunk)


def read_chunks(
    options: BatchOptions,
    size: int,
    skip: int = 0,
    minor_units: Mapping[str, int] | None = None,
) -> Iterator[Chunk]:
    """The input in chunks of `size` rows, after the first `skip` rows.

    The main process only cuts the input; turning rows into facts (and reading their
    problems) happens in `chunk_rows`, wherever the chunk is valued. `minor_units`
    (currency -> digits) gives Parquet's decimal(38,4) amounts back at their currency's
    scale, as the same facts in JSONL would be written.
    """
    if format_of(options.input, options.input_format) == "parquet":
        return _parquet_chunks(options.input, size, skip, minor_units)
    if format_of(options.input, options.input_format) == "csv":
        return _csv_chunks(options, size, skip)
    return _jsonl_chunks(options.input, size, skip)


def chunk_rows(chunk: Chunk) -> Iterator[Row]:
    if isinstance(chunk, RowsChunk):
        yield from chunk.items
        return
    if isinstance(chunk, CsvChunk):
        for offset, (line, cells) in enumerate(chunk.records):
            yield _csv_row(chunk.number + offset, line, cells, chunk.columns)
        return
    number = chunk.number
    oversized = dict(chunk.oversized)
    for line_no, raw in enumerate(chunk.text.split(b"\n"), chunk.line):
        text = raw.strip()
        if not text:
            continue
        if line_no == 1:
            text = text.removeprefix(b"\xef\xbb\xbf")
        if oversized and line_no in oversized:
            yield Row(number, line_no, None, (_too_large(oversized[line_no]),))
        elif text[:1] != b"{":
            problem = Problem("facts.type", "each line must be one JSON object of shipment facts")
            yield Row(number, line_no, None, (problem,))
        else:
            yield Row(number, line_no, text)
        number += 1


def _parquet_chunks(
    path: Path, size: int, skip: int, minor_units: Mapping[str, int] | None
) -> Iterator[RowsChunk]:
    from engine.batch.parquet import batch_rows  # pyarrow: the parquet extra

    items: list[Row] = []
    for row in batch_rows(path, minor_units):
        if row.number <= skip:
            continue
        items.append(row)
        if len(items) == size:
            yield RowsChunk(tuple(items))
            items = []
    if items:
        yield RowsChunk(tuple(items))


def _jsonl_chunks(path: Path, size: int, skip: int) -> Iterator[JsonlChunk]:
    # Per line, only the test for a blank line: the rows travel as the bytes read.
    number = count = first_line = first_number = 0
    lines: list[bytes] = []
    oversized: list[tuple[int, int]] = []
    limit = max_input_bytes(FactsError)
    with path.open("rb") as handle:
        for line_no, (raw, length) in enumerate(_bounded_lines(handle, limit), 1):
            if not raw.strip():
                if lines:  # a blank line inside a chunk keeps the line numbers right
                    lines.append(raw)
                continue
            number += 1
            if number <= skip:
                continue
            if not lines:
                first_line, first_number = line_no, number
            lines.append(raw)
            if length:
                oversized.append((line_no, length))
            count += 1
            if count == size:
                yield JsonlChunk(first_number, first_line, b"".join(lines), count, tuple(oversized))
                lines, count, oversized = [], 0, []
    if count:
        yield JsonlChunk(first_number, first_line, b"".join(lines), count, tuple(oversized))


# What stands in a chunk for a line over the limit: not blank, so it is a row.
_PLACEHOLDER = b"-\n"


def _bounded_lines(handle: IO[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """Each physical line, and 0; a line over `limit` bytes (its newline aside) is read
    in pieces and dropped: (a placeholder, its length) instead."""
    while True:
        raw = handle.readline(limit + 1)
        if not raw:
            return
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw, 0
            continue
        length = len(raw)
        while not raw.endswith(b"\n"):
            raw = handle.readline(1 << 20)
            if not raw:
                break
            length += len(raw)
        yield _PLACEHOLDER, length - raw.endswith(b"\n")


# The one cell of a CSV record that stands for a line over the limit (a NUL is no text).
_OVERSIZED = "\x00tiv:oversized:"


def _bounded_text(handle: IO[str], limit: int) -> Iterator[str]:
    """`_bounded_lines` for text: a line over `limit` characters is read in pieces and
    dropped; a record of one `_OVERSIZED` cell, with its length, stands in its place."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith("\n"):
            yield line
            continue
        length = len(line)
        while not line.endswith("\n"):
            line = handle.readline(1 << 20)
            if not line:
                break
            length += len(line)
        yield f"{_OVERSIZED}{length - line.endswith(chr(10))}\n"


def _too_large(length: int, unit: str = "bytes") -> Problem:
    limit = max_input_bytes(FactsError)
    return Problem(
        "input.too_large",
        f"the row is {length:,} {unit}, over the limit of {limit:,} for one shipment; "
        "split it, or raise the limit with --max-input BYTES or $TIV_MAX_INPUT_BYTES",
    )


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
    columns: list[_Column] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
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


def _csv_chunks(options: BatchOptions, size: int, skip: int) -> Iterator[CsvChunk]:
    file = str(options.input)
    limit = max_input_bytes(FactsError)
    # A cell may be as long as a row may (csv's own default, 128 KiB, would fail the job).
    csv.field_size_limit(max(csv.field_size_limit(), limit))
    with options.input.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(_bounded_text(handle, limit), delimiter=options.delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as error:
            raise _not_utf8(file, 1, error) from None
        columns = csv_columns(header, options.columns, file)
        number = 0
        last_line = reader.line_num
        records: list[tuple[int, list[str]]] = []
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
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
            if sum(map(len, cells)) > limit and not cells[0].startswith(_OVERSIZED):
                cells = [f"{_OVERSIZED}{sum(map(len, cells))}"]  # a record of many lines
            number += 1
            if number <= skip:
                continue
            records.append((start, cells))
            if len(records) == size:
                yield CsvChunk(number - size + 1, records, columns)
                records = []
        if records:
            yield CsvChunk(number - len(records) + 1, records, columns)


def _not_utf8(file: str, line: int, error: UnicodeDecodeError) -> FactsError:
    return FactsError(
        Problem(
            "facts.encoding",
            f"not UTF-8 text ({error.reason}); save the bordereau as UTF-8",
            Location(file, line),
        )
    )


def _csv_row(number: int, line: int, cells: Sequence[str], columns: list[_Column]) -> Row:
    if cells and cells[0].startswith(_OVERSIZED):
        length = int(cells[0][len(_OVERSIZED) :])
        return Row(number, line, None, (_too_large(length, "characters"),))
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
                        Location(path=path_text(column.parts)),
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


def path_text(parts: tuple[str | int, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def count_rows(options: BatchOptions) -> int:
    """Rows in the input (for the progress bar): a quick pass that values nothing."""
    if format_of(options.input, options.input_format) == "parquet":
        from engine.batch.parquet import count_records

        return count_records(options.input)
    if format_of(options.input, options.input_format) == "csv":
        limit = max_input_bytes(FactsError)
        csv.field_size_limit(max(csv.field_size_limit(), limit))
        with options.input.open(encoding="utf-8-sig", newline="", errors="replace") as handle:
            reader = csv.reader(_bounded_text(handle, limit), delimiter=options.delimiter)
            next(reader, None)
            return sum(1 for cells in reader if any(c.strip() for c in cells))
    with options.input.open("rb") as handle:
        limit = max_input_bytes(FactsError)
        return sum(1 for line, _ in _bounded_lines(handle, limit) if line.strip())
