"""Compile a pack's rate tables into `CompiledTable`s, and check them for rows that clash.

In: a `Table` model, the `LoadedYaml` of the file that holds it (for line marks) and, for
a table whose rows live in a CSV file beside the pack (`rows_from: base_rate.csv`), that
file's bytes. Out: a `CompiledTable` whose every cell keeps the `file:line:col` (or the
CSV's `file:row:column`) it was written at, or the problems found, located the same way.

Two forms. The positional form (`keys` then `rows` of key cells and a number, no header)
is kept as it always was: published packs never change. The named form gives `result`,
the name of the column the table gives, and its first row (of `rows`, or of the CSV file)
is a header of named columns: every column of `keys` once, in any order, and the result
column. A key cell is:
- `*`: anything;
- a number (`12`, `0.35%`) or text (`machinery`): equal to it;
- a comparison with a number: `> 45`, `>= 45`, `< 1000000`, `<= 1000000`;
- a range: `[10, 20)` with `[`/`]` for an included end and `(`/`)` for an excluded one,
  or `10..20` for both ends included (`[10, 20]`).
The result is a number or text, one kind for the whole column; text results can be
compared in conditions (a category-to-class mapping).

`warnings()` (computed on demand, for `tiv validate`) finds rows that can never be chosen,
rows that overlap with different results, and gaps between the ranges of a column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.compiling.expressions import Name, parse
from engine.compiling.formulas import ANY, NUMBER, TEXT
from engine.errors import Location, Problem
from engine.loading.yamlfile import LoadedYaml
from engine.money import percent
from engine.schema.models import Table

ANYTHING = "*"

_NUMBER = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)%?"
_PLAIN_NUMBER = re.compile(_NUMBER)
_COMPARISON = re.compile(rf"(<=|>=|<|>)\s*({_NUMBER})")
_RANGE = re.compile(rf"([\[(])\s*({_NUMBER})\s*(?:,|\.\.)\s*({_NUMBER})\s*([\])])")
_DOTS = re.compile(rf"({_NUMBER})\s*\.\.\s*({_NUMBER})")
_COLUMN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def _number(text: str) -> Decimal:
    found = percent(text)
    return found if found is not None else Decimal(text)


@dataclass(frozen=True)
class Cell:
    """One key cell: what it matches, as written and where.

    `kind` is "any", "text" (equal to the text), "number" (equal to the number, or to
    the text as written when the value looked up is text, e.g. an HS code "0101") or
    "interval" (a comparison or a range over numbers; text never matches it).
    """

    written: str
    where: Location
    kind: str
    text: str = ""
    low: Decimal | None = None  # None: no lower bound
    low_closed: bool = True
    high: Decimal | None = None  # None: no upper bound
    high_closed: bool = True

    def matches(self, value: Any) -> bool:
        kind = self.kind
        if kind == "any":
            return True
        if isinstance(value, Decimal):
            if kind == "text":
                return False
            return self._holds(value)
        if kind == "interval":
            return False
        return self.text == str(value)

    def _holds(self, value: Decimal) -> bool:
        low, high = self.low, self.high
        if low is not None and (value < low or (value == low and not self.low_closed)):
            return False
        return not (high is not None and (value > high or (value == high and not self.high_closed)))

    @property
    def numeric(self) -> bool:
        return self.kind in ("number", "interval")

    def covers(self, other: Cell) -> bool:
        """Every value `other` matches, this cell matches too."""
        if self.kind == "any":
            return True
        if other.kind == "any":
            return False
        if self.numeric != other.numeric:
            return False
        if not self.numeric:
            return self.text == other.text
        return _below_or_at(self, other) and _above_or_at(self, other)

    def meets(self, other: Cell) -> bool:
        """Some value matches both cells."""
        if self.kind == "any" or other.kind == "any":
            return True
        if self.numeric != other.numeric:
            return False
        if not self.numeric:
            return self.text == other.text
        return _starts_before_end(self, other) and _starts_before_end(other, self)


def _below_or_at(outer: Cell, inner: Cell) -> bool:
    """`outer` starts at or before `inner` does."""
    if outer.low is None:
        return True
    if inner.low is None:
        return False
    return outer.low < inner.low or (
        outer.low == inner.low and (outer.low_closed or not inner.low_closed)
    )


def _above_or_at(outer: Cell, inner: Cell) -> bool:
    if outer.high is None:
        return True
    if inner.high is None:
        return False
    return outer.high > inner.high or (
        outer.high == inner.high and (outer.high_closed or not inner.high_closed)
    )


def _starts_before_end(a: Cell, b: Cell) -> bool:
    """`a` starts before `b` ends, so they can share a value (read both ways)."""
    if a.low is None or b.high is None:
        return True
    return a.low < b.high or (a.low == b.high and a.low_closed and b.high_closed)


@dataclass(frozen=True)
class Row:
    number: int  # 1-based among the data rows
    cells: tuple[Cell, ...]  # in the order of the table's keys
    value: Decimal | str
    value_where: Location  # the result cell
    where: Location  # the row: its YAML line, or the CSV's row
    wildcards: int

    def written(self, columns: tuple[str, ...], result: str) -> str:
        parts = [f"{c} {cell.written}" for c, cell in zip(columns, self.cells, strict=True)]
        return ", ".join(parts) + f" -> {result} {_show(self.value)}"


def _show(value: Decimal | str) -> str:
    return format(value, "f") if isinstance(value, Decimal) else value


@dataclass(frozen=True)
class CompiledTable:
    name: str
    table: Table
    keys: tuple[tuple[str, str], ...]  # (column, the name whose value is looked up)
    where: Location
    rows: tuple[Row, ...] = ()
    result_column: str = "value"
    result_type: str = NUMBER  # NUMBER or TEXT: what lookup() gives
    # For a table of text cells without wildcards, row lookup by the key values' text,
    # built at load: the first row wins, as the row scan would pick it.
    index: Mapping[tuple[str, ...], Row] | None = field(default=None, compare=False)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(column for column, _ in self.keys)

    def lookup(self, values: Mapping[str, Any]) -> Decimal | str | None:
        """The value of the row the table's match rule picks, or None for a gap."""
        row = self.row_for(values)
        return None if row is None else row.value

    def row_for(self, values: Mapping[str, Any]) -> Row | None:
        """The row the table's match rule picks for the key values, or None for a gap."""
        index = self.index
        if index is not None:
            found = []
            for column, _ in self.keys:
                value = values[column]
                if isinstance(value, Decimal):
                    return None  # a number never equals a text cell
                found.append(str(value))
            return index.get(tuple(found))
        best: Row | None = None
        columns = self.columns
        first = self.table.match == "first"
        for row in self.rows:
            if all(
                cell.matches(values[column])
                for column, cell in zip(columns, row.cells, strict=True)
            ):
                if first:
                    return row
                if best is None or row.wildcards < best.wildcards:
                    best = row
        return best

    def trace(self, values: Mapping[str, Any]) -> tuple[str, Mapping[str, Any], Any, str] | None:
        """For a trace step: the row chosen for the key values read from `values` (the
        evaluation's names), as (expression, inputs, value, `file:line`), or None."""
        keys = {}
        for column, name in self.keys:
            if name not in values:
                return None
            keys[column] = values[name]
        row = self.row_for(keys)
        if row is None:
            return None
        where = row.value_where
        written = row.written(self.columns, self.result_column)
        expression = f'lookup("{self.name}") row {row.number}: {written} (cell {where})'
        return expression, keys, row.value, row.where.source

    def warnings(self) -> list[Problem]:
        """Rows that can never be chosen, rows that overlap with different results, and
        gaps between the ranges of a column: each located at the row it concerns."""
        return _unreachable_and_overlaps(self) + _gaps(self)


def compile_table(
    name: str, spec: Table, loaded: LoadedYaml, attachments: Mapping[str, bytes]
) -> tuple[CompiledTable, list[Problem]]:
    """The table, or with problems a stand-in without rows that gives the type its result
    column seems to hold (else any), so formulas that look it up report only their own
    problems, not a cascade of the table's."""
    base = f"tables.{name}"
    where = loaded.locate(base, key=True)
    problems: list[Problem] = []
    keys: list[tuple[str, str]] = []
    for column, text in spec.keys.items():
        expr, errs = parse(text, loaded.locate(f"{base}.keys.{column}"))
        if expr is None or not isinstance(expr, Name):
            problems.extend(
                errs
                or [
                    Problem(
                        "table.key",
                        f"the key of column `{column}` must be a name, e.g. shipment.mode",
                        loaded.locate(f"{base}.keys.{column}"),
                    )
                ]
            )
            continue
        keys.append((column, expr.dotted))

    def stand_in(kind: str = ANY) -> CompiledTable:
        return CompiledTable(name, spec, tuple(keys), where, (), spec.result or "value", kind)

    if problems:
        return stand_in(), problems
    if spec.result is None:
        positional = _positional_rows(spec, loaded, base)
        table = CompiledTable(name, spec, tuple(keys), where, positional)
        return _with_index(table), []

    grid = _grid(spec, loaded, base, attachments, problems)
    if grid is None:
        return stand_in(), problems
    header, body = grid
    order = _header(header, spec, problems)
    if order is None:
        return stand_in(_guess(header, body, spec.result)), problems
    positions, result_at = order
    rows: list[Row] = []
    kinds: dict[str, Location] = {}
    for number, cells in enumerate(body, 1):
        line = cells[0][1] if cells else where
        if len(cells) != len(header):
            problems.append(
                Problem(
                    "table.row",
                    f"row {number} has {len(cells)} cells; the header has {len(header)} "
                    f"({', '.join(str(text) for text, _ in header)})",
                    line,
                )
            )
            continue
        key_cells = []
        for column, _ in keys:
            raw, at = cells[positions[column]]
            cell, problem = _cell(raw, at, column)
            if problem is not None:
                problems.append(problem)
                continue
            key_cells.append(cell)
        raw, at = cells[result_at]
        value = _result(raw)
        if value is None:
            problems.append(
                Problem("table.cell", f"the `{spec.result}` cell is empty; give a value", at)
            )
            continue
        kinds.setdefault(NUMBER if isinstance(value, Decimal) else TEXT, at)
        if len(key_cells) == len(keys):
            rows.append(
                Row(
                    number,
                    tuple(key_cells),
                    value,
                    at,
                    Location(at.file, at.line),
                    sum(cell.kind == "any" for cell in key_cells),
                )
            )
    if len(kinds) > 1:
        problems.append(
            Problem(
                "table.result_type",
                f"the `{spec.result}` column mixes numbers (first at {kinds[NUMBER]}) and "
                f"text (first at {kinds[TEXT]}); a table gives one kind",
                max(kinds.values()),
            )
        )
    if not body and not problems:
        problems.append(Problem("table.empty", "the table has a header but no rows", where))
    if problems:
        return stand_in(next(iter(kinds)) if len(kinds) == 1 else ANY), problems
    result_type = next(iter(kinds), NUMBER)
    table = CompiledTable(
        name, spec, tuple(keys), where, tuple(rows), spec.result or "value", result_type
    )
    return _with_index(table), []


def _guess(header: list[tuple[str | Decimal, Location]], body: Grid, result: str | None) -> str:
    """The one kind of the cells under the result column's name, else any."""
    names = [str(text) for text, _ in header]
    if result not in names or any(len(row) != len(header) for row in body):
        return ANY
    at = names.index(result)
    kinds = {
        NUMBER if isinstance(_result(row[at][0]), Decimal) else TEXT
        for row in body
        if at < len(row) and _result(row[at][0]) is not None
    }
    return kinds.pop() if len(kinds) == 1 else ANY


def _positional_rows(spec: Table, loaded: LoadedYaml, base: str) -> tuple[Row, ...]:
    """Today's form, exactly as it always matched: text cells equal text, number cells
    equal numbers (or their text), `*` anything, and the last cell the value."""
    rows = []
    for index, row in enumerate(spec.rows):
        cells = []
        for position, raw in enumerate(row[:-1]):
            at = loaded.locate(f"{base}.rows[{index}][{position}]")
            if raw == ANYTHING:
                cells.append(Cell(ANYTHING, at, "any"))
            elif isinstance(raw, Decimal):
                cells.append(Cell(format(raw, "f"), at, "number", str(raw), raw, True, raw, True))
            else:
                cells.append(Cell(raw, at, "text", raw))
        last = row[-1]
        value = last if isinstance(last, Decimal) else percent(last)
        assert value is not None  # the model checks the positional form
        rows.append(
            Row(
                index + 1,
                tuple(cells),
                value,
                loaded.locate(f"{base}.rows[{index}][{len(row) - 1}]"),
                _line(loaded.locate(f"{base}.rows[{index}]")),
                sum(cell.kind == "any" for cell in cells),
            )
        )
    return tuple(rows)


def _line(where: Location) -> Location:
    return Location(where.file, where.line)


Grid = list[list[tuple[str | Decimal, Location]]]


def _grid(
    spec: Table,
    loaded: LoadedYaml,
    base: str,
    attachments: Mapping[str, bytes],
    problems: list[Problem],
) -> tuple[list[tuple[str | Decimal, Location]], Grid] | None:
    """The header and the data rows, every cell with its location."""
    if spec.rows_from is None:
        grid = [
            [(raw, loaded.locate(f"{base}.rows[{i}][{j}]")) for j, raw in enumerate(row)]
            for i, row in enumerate(spec.rows)
        ]
        return grid[0], grid[1:]
    path = csv_path(loaded.file, spec.rows_from)
    data = attachments.get(path)
    at = loaded.locate(f"{base}.rows_from")
    if data is None:
        return None  # the loader reported why it could not read the file
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(
            Problem(
                "table.rows_from",
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                at,
            )
        )
        return None
    rows: Grid = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        start = 1
        for record in reader:
            if any(cell.strip() for cell in record):
                rows.append(
                    [
                        (cell.strip(), Location(path, start, column, ""))
                        for column, cell in enumerate(record, 1)
                    ]
                )
            start = reader.line_num + 1
    except csv.Error as exc:
        problems.append(Problem("table.csv", f"not valid CSV: {exc}", Location(path, start)))
        return None
    if not rows:
        problems.append(Problem("table.csv", "the file is empty; it needs a header row", at))
        return None
    return rows[0], rows[1:]


def csv_path(pack_file: str, name: str) -> str:
    """Where `rows_from: name` points: the file beside the pack file."""
    folder = pack_file.rpartition("/")[0]
    return f"{folder}/{name}" if folder else name


def _header(
    header: list[tuple[str | Decimal, Location]], spec: Table, problems: list[Problem]
) -> tuple[dict[str, int], int] | None:
    """Each key column's position and the result column's, checked against `keys`."""
    import difflib

    assert spec.result is not None
    wanted = [*spec.keys, spec.result]
    positions: dict[str, int] = {}
    before = len(problems)
    for index, (raw, at) in enumerate(header):
        text = str(raw)
        if text in positions:
            problems.append(
                Problem("table.header", f"column `{text}` is named twice in the header", at)
            )
        elif text not in wanted:
            close = difflib.get_close_matches(text, wanted, n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            problems.append(
                Problem(
                    "table.header",
                    f"header column `{text}` is not a key column ({', '.join(spec.keys)}) "
                    f"nor the result column `{spec.result}`{hint}",
                    at,
                )
            )
        else:
            positions[text] = index
    missing = [name for name in wanted if name not in positions]
    if missing and len(problems) == before:
        problems.append(
            Problem(
                "table.header",
                f"the header has no column `{missing[0]}`; it names every key column "
                f"({', '.join(spec.keys)}) and the result column `{spec.result}`",
                header[0][1],
            )
        )
    if len(problems) > before:
        return None
    return positions, positions[spec.result]


def _cell(raw: str | Decimal, at: Location, column: str) -> tuple[Cell, Problem | None]:
    if isinstance(raw, Decimal):
        return Cell(format(raw, "f"), at, "number", str(raw), raw, True, raw, True), None
    text = raw.strip()
    if not text:
        return Cell(text, at, "any"), Problem(
            "table.cell", f"the `{column}` cell is empty; write * to match anything", at
        )
    if text == ANYTHING:
        return Cell(text, at, "any"), None
    if _PLAIN_NUMBER.fullmatch(text):
        number = _number(text)
        return Cell(text, at, "number", text, number, True, number, True), None
    found = _COMPARISON.fullmatch(text)
    if found:
        op, bound = found[1], _number(found[2])
        if op.startswith(">"):
            return Cell(text, at, "interval", low=bound, low_closed=op == ">="), None
        return Cell(text, at, "interval", high=bound, high_closed=op == "<="), None
    ranged = _RANGE.fullmatch(text)
    dots = _DOTS.fullmatch(text)
    if ranged or dots:
        if ranged:
            low, high = _number(ranged[2]), _number(ranged[3])
            low_closed, high_closed = ranged[1] == "[", ranged[4] == "]"
        else:
            assert dots is not None
            low, high, low_closed, high_closed = _number(dots[1]), _number(dots[2]), True, True
        cell = Cell(text, at, "interval", "", low, low_closed, high, high_closed)
        if low > high or (low == high and not (low_closed and high_closed)):
            return cell, Problem(
                "table.cell",
                f"the range `{text}` holds no value: its low end is above its high",
                at,
            )
        return cell, None
    if text[0] in "<>[(=!" or ".." in text:
        return Cell(text, at, "any"), Problem(
            "table.cell",
            f"`{text}` is not a valid cell: write a comparison with a number (> 45, <= 1000000), "
            "a range ([10, 20), 10..20), a number, text, or *",
            at,
        )
    return Cell(text, at, "text", text), None


def _result(raw: str | Decimal) -> Decimal | str | None:
    if isinstance(raw, Decimal):
        return raw
    text = raw.strip()
    if not text:
        return None
    if _PLAIN_NUMBER.fullmatch(text):
        return _number(text)
    return text


def _with_index(table: CompiledTable) -> CompiledTable:
    """Rows by their key cells' text, when every key cell is text (none a wildcard, a
    number or a comparison): then every matching row has no wildcard, so "first" and
    "most specific" both pick the first matching row."""
    index: dict[tuple[str, ...], Row] = {}
    for row in table.rows:
        if any(cell.kind != "text" for cell in row.cells):
            return table
        index.setdefault(tuple(cell.text for cell in row.cells), row)
    return CompiledTable(
        table.name,
        table.table,
        table.keys,
        table.where,
        table.rows,
        table.result_column,
        table.result_type,
        index,
    )


def _warning(code: str, message: str, where: Location) -> Problem:
    return Problem(code, message, where, severity="warning")


def _unreachable_and_overlaps(table: CompiledTable) -> list[Problem]:
    found: list[Problem] = []
    first = table.table.match == "first"
    rows = table.rows
    # Rows whose first cell is exact text can only meet rows with the same text there,
    # or rows with something else (a wildcard, a number): compare within those only.
    by_text: dict[str, list[Row]] = {}
    others: list[Row] = []
    unreachable: set[int] = set()
    for row in rows:
        lead = row.cells[0] if row.cells else None
        if lead is not None and lead.kind == "text":
            candidates = [*by_text.get(lead.text, ()), *others]
        else:
            candidates = [*(r for group in by_text.values() for r in group), *others]
        candidates.sort(key=lambda r: r.number)
        for earlier in candidates:
            if earlier.number in unreachable:
                continue
            pairs = list(zip(earlier.cells, row.cells, strict=True))
            if not all(a.meets(b) for a, b in pairs):
                continue
            if all(a.covers(b) for a, b in pairs) and (first or earlier.wildcards <= row.wildcards):
                unreachable.add(row.number)
                found.append(
                    _warning(
                        "table.unreachable",
                        f"table `{table.name}`: row {row.number} can never be chosen: row "
                        f"{earlier.number} ({earlier.where.source}) matches everything it "
                        "does and is chosen first",
                        row.where,
                    )
                )
                break
            # One row inside the other is how a table says "this case, else that one".
            nested = all(b.covers(a) for a, b in pairs) or all(a.covers(b) for a, b in pairs)
            if not nested and earlier.value != row.value:
                found.append(
                    _warning(
                        "table.overlap",
                        f"table `{table.name}`: rows {earlier.number} ({earlier.where.source}) "
                        f"and {row.number} overlap with different results "
                        f"({_show(earlier.value)}, {_show(row.value)}); where both match, "
                        f"row {_winner(earlier, row, first)} is chosen",
                        row.where,
                    )
                )
        if lead is not None and lead.kind == "text":
            by_text.setdefault(lead.text, []).append(row)
        else:
            others.append(row)
    return found


def _winner(earlier: Row, later: Row, first: bool) -> int:
    if first or earlier.wildcards <= later.wildcards:
        return earlier.number
    return later.number


def _gaps(table: CompiledTable) -> list[Problem]:
    """Holes between the ranges of a numeric column, for each combination of the other
    columns' cells; below the lowest and above the highest range is the table's domain."""
    found: list[Problem] = []
    columns = table.columns
    for position, column in enumerate(columns):
        if not any(row.cells[position].kind == "interval" for row in table.rows):
            continue
        contexts: dict[tuple[str, ...], Row] = {}
        for row in table.rows:
            context = tuple(c.written for i, c in enumerate(row.cells) if i != position)
            contexts.setdefault(context, row)
        for context, sample in contexts.items():
            cells = [
                (row.cells[position], row)
                for row in table.rows
                if all(
                    row.cells[i].covers(sample.cells[i])
                    for i in range(len(columns))
                    if i != position
                )
            ]
            if any(cell.kind == "any" for cell, _ in cells):
                continue
            rows_of = {id(cell): row for cell, row in cells}
            hole = _first_hole([cell for cell, _ in cells if cell.numeric])
            if hole is None:
                continue
            text, after = hole
            others = ", ".join(
                f"{c} {w}"
                for c, w in zip([c for c in columns if c != column], context, strict=True)
            )
            found.append(
                _warning(
                    "table.gap",
                    f"table `{table.name}`: no row matches `{column}` {text}"
                    + (f" where {others}" if others else ""),
                    rows_of[id(after)].where,
                )
            )
    return found


def _first_hole(cells: list[Cell]) -> tuple[str, Cell] | None:
    """The first values between the lowest and the highest cell that no cell holds."""
    if len(cells) < 2:
        return None

    def start(cell: Cell) -> tuple[int, Decimal, int]:
        if cell.low is None:
            return (0, Decimal(0), 0)
        return (1, cell.low, 0 if cell.low_closed else 1)

    ordered = sorted(cells, key=start)
    reach, reach_closed = ordered[0].high, ordered[0].high_closed
    for cell in ordered[1:]:
        if reach is None:
            return None
        low = cell.low
        if low is not None and (
            low > reach or (low == reach and not reach_closed and not cell.low_closed)
        ):
            if low == reach:
                return f"= {format(low, 'f')}", cell
            left = "from" if not reach_closed else "above"
            right = "below" if cell.low_closed else "up to"
            return f"{left} {format(reach, 'f')} {right} {format(low, 'f')}", cell
        if cell.high is None:
            reach = None
        elif cell.high > reach or (cell.high == reach and cell.high_closed):
            reach, reach_closed = cell.high, cell.high_closed
    return None
