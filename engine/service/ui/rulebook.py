"""What the rule files say, arranged for reading: packs, countries, sections, lines.

In: a `Snapshot` (the compiled `RuleSet` and the exact bytes it came from), the rule
folder (for rules.lock) and the caller's key. Out: plain dataclasses the templates
show. Values are the text as written in the file (`0.10` stays `0.10`): the YAML is
composed, not constructed, so no figure ever becomes a float on its way to the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from engine.loading.snapshot import Snapshot
from engine.service.settings import ApiKey

_SOURCE = re.compile(r"^(?P<file>[^\s:][^:]*?):(?P<line>\d+)(?::\d+)?$")


@dataclass(frozen=True)
class VersionRow:
    id: str
    version: str
    status: str
    window: str
    title: str
    source: str
    lock: str  # locked, changed since locked, not locked, draft (never locked)


@dataclass(frozen=True)
class Entry:
    """One named item of a section: its value as written, notes, and where it is."""

    name: str
    value: str
    at: str  # `file:line`
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TableView:
    name: str
    description: str
    columns: list[str]
    rows: list[tuple[list[str], str]]  # (cells, `file:line`)
    match: str
    on_gap: str
    at: str


@dataclass(frozen=True)
class PackView:
    row: VersionRow
    files: list[str]
    parameters: list[Entry]
    charges: list[Entry]
    formulas: list[Entry]
    tables: list[TableView]
    rules: list[Entry]
    examples: list[Entry]


def split_source(source: str) -> tuple[str, int] | None:
    """`policies/x/1.0.0.yaml:12` (or `...:12:3`) -> (file, line); None for anything else."""
    match = _SOURCE.match(source.strip())
    return (match["file"], int(match["line"])) if match else None


def visible_files(snapshot: Snapshot, key: ApiKey) -> set[str]:
    """Files this key may read: country and reference rules (shared data), its packs'
    files (a base pack included) and the shipments their examples read."""
    seen: set[str] = {p for p in snapshot.texts if p.startswith("rules/")}
    for pack_id, versions in snapshot.rules.packs.items():
        if not key.may_use(pack_id):
            continue
        for pack in versions:
            seen.add(pack.source)
            seen.update(f.source for f in getattr(pack, "files", ()))
            for case in pack.examples:
                if isinstance(case.facts, str):
                    seen.add(case.facts_name)
    return seen & set(snapshot.texts)


def lock_states(root: Path) -> dict[str, str] | None:
    """rules.lock as path -> sha256; None when the folder has no (readable) lock."""
    from engine.compliance import lock

    entries, problems = lock.read_lock(root)
    return None if problems and entries is None else entries


def lock_state(locked: Mapping[str, str] | None, path: str, sha256: str, status: str) -> str:
    if status != "published":
        return "draft (never locked)"
    if locked is None:
        return "no rules.lock"
    if path not in locked:
        return "not locked"
    return "locked" if locked[path] == sha256 else "changed since locked"


def _file_sha(snapshot: Snapshot, path: str) -> str:
    for item in snapshot.rules.files:
        if item.path == path:
            return item.sha256
    return ""


def pack_rows(snapshot: Snapshot, key: ApiKey, root: Path) -> list[VersionRow]:
    locked = lock_states(root)
    return [
        VersionRow(
            p.id,
            p.version,
            p.status,
            p.window(),
            p.title,
            p.source,
            lock_state(locked, p.source, _file_sha(snapshot, p.source), p.status),
        )
        for pack_id, versions in snapshot.rules.packs.items()
        if key.may_use(pack_id)
        for p in versions
    ]


def country_rows(snapshot: Snapshot, root: Path) -> list[VersionRow]:
    locked = lock_states(root)
    return [
        VersionRow(
            c.id,
            c.version,
            c.status,
            c.window(),
            c.title,
            c.source,
            lock_state(locked, c.source, _file_sha(snapshot, c.source), c.status),
        )
        for versions in snapshot.rules.duty_rules.values()
        for c in versions
    ]


# --- one pack -----------------------------------------------------------------------


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # the file loaded once, so this is not expected
        return None


def _items(node: yaml.Node | None) -> Iterator[tuple[str, yaml.Node, int]]:
    """(key, value node, 1-based line of the key) of a mapping node."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield str(key.value), value, key.start_mark.line + 1


def _get(node: yaml.Node | None, name: str) -> yaml.Node | None:
    for key, value, _ in _items(node):
        if key == name:
            return value
    return None


def as_text(node: yaml.Node | None) -> str:
    """A node as written: a scalar's own text, a sequence or mapping in flow style."""
    if node is None:
        return ""
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    if isinstance(node, yaml.SequenceNode):
        return "[" + ", ".join(as_text(item) for item in node.value) + "]"
    return "{" + ", ".join(f"{k.value}: {as_text(v)}" for k, v in node.value) + "}"


def pack_view(snapshot: Snapshot, pack: Any, root: Path) -> PackView:
    files = [f.source for f in getattr(pack, "files", ())] or [pack.source]
    parameters: dict[str, Entry] = {}
    charges: dict[str, Entry] = {}
    for path in files:  # base first, so an override replaces the base's entry
        document = _compose(snapshot.texts[path].decode("utf-8"))
        for name, node, line in _items(_get(document, "parameters")):
            described = isinstance(node, yaml.MappingNode) and _get(node, "value") is not None
            value = _get(node, "value") if described else node
            notes = {}
            if described:
                notes = {
                    k: as_text(v) for k, v, _ in _items(node) if k in ("description", "source")
                }
            parameters[name] = Entry(name, as_text(value), f"{path}:{line}", notes)
        for name, node, line in _items(_get(document, "charge_types")):
            excluded = _get(node, "excluded")
            group = _get(node, "group")
            if excluded is not None:
                treatment, notes = "excluded", {"reason": as_text(excluded)}
            else:
                treatment, notes = f"in {as_text(group)}", {}
            charges[name] = Entry(name, treatment, f"{path}:{line}", notes)
    formulas = [Entry(name, formula.text, formula.where.source) for name, formula in pack.formulas]
    tables = [
        TableView(
            name,
            compiled.table.description or "",
            [*compiled.columns, compiled.result_column],
            [
                (
                    [*(cell.written for cell in row.cells), _cell(row.value)],
                    row.where.source,
                )
                for row in compiled.rows
            ],
            compiled.table.match,
            compiled.table.on_gap,
            compiled.where.source,
        )
        for name, compiled in pack.tables.items()
    ]
    rules = [
        Entry(
            rule.id,
            rule.when,
            rule.where.source,
            {
                "effect": rule.effect + (f" {rule.flag}" if rule.flag else ""),
                "applies to": rule.scope,
                "reason": rule.reason,
                **({"citation": rule.citation} if rule.citation else {}),
            },
        )
        for rule in pack.rules
    ]
    examples = [
        Entry(
            example_name(case),
            case.facts_name if isinstance(case.facts, str) else "inline",
            case.where.source,
        )
        for case in pack.examples
    ]
    locked = lock_states(root)
    row = VersionRow(
        pack.id,
        pack.version,
        pack.status,
        pack.window(),
        pack.title,
        pack.source,
        lock_state(locked, pack.source, _file_sha(snapshot, pack.source), pack.status),
    )
    return PackView(
        row,
        files,
        list(parameters.values()),
        list(charges.values()),
        formulas,
        tables,
        rules,
        examples,
    )


def example_name(case: Any) -> str:
    return str(getattr(case.example, "name", "") or case.where.source)


def _cell(value: Any) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)
