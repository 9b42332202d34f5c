"""What changed between two versions of a policy pack, in terms a reviewer reads.

In: a loaded `RuleSet`, the `RuleSource` it came from, and two pinned versions
(`standard@1.0.0`, `standard@1.1.0`; drafts allowed). Out: a `PackDiff`, every parameter,
formula, charge treatment, rule, result and example added, removed or changed, each with
`file:line` on both sides; `render_diff` writes it for a person, `PackDiff.to_dict` as JSON.

It compares meaning, not text: `0.10` and `0.1` are the same figure, a formula reformatted
is the same formula (expressions are compared parsed), a parameter written bare or with a
description has the same value, and YAML comments or key order are not changes. Sections
the engine does not know yet (rate tables, premiums) are compared generically: mappings
key by key, lists of rows by their `id` or `name`, else by the row's text fields (a rate
table row `[ocean, north_america, 0.0025]` is keyed by `ocean, north_america`), else by
position; so a pack that gains a section diffs without changes here. A pack that extends
another is compared as written (its overrides); when its resolved base version differs,
that is one change, and `tiv diff` of the two bases shows the rest.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from engine.compiling.expressions import Expr, parse
from engine.errors import Location, json_path
from engine.loading.sources import RuleSource
from engine.loading.yamlfile import LoadedYaml, load_yaml
from engine.money import plain
from engine.ruleset import RuleSet

ChangeKind = Literal["added", "removed", "changed"]

# Section titles in the order a reviewer reads them; other sections follow, in file order.
SECTIONS: dict[str, str] = {
    "version": "Version and window",
    "provenance": "Provenance",
    "extends": "Base pack",
    "parameters": "Parameters",
    "charge_types": "Charge treatment",
    "regions": "Regions",
    "rounding": "Rounding",
    "formulas": "Formulas",
    "tables": "Rate tables",
    "result": "Result",
    "rules": "Rules",
    "claims": "Claims",
    "examples": "Examples",
}
_HEADER_FIELDS = ("status", "effective_from", "effective_to", "title", "description")
_IGNORED = frozenset({"kind", "id", "version"})  # the refs already say these


@dataclass(frozen=True)
class Change:
    section: str  # a key of SECTIONS, or the pack file's own top-level key
    kind: ChangeKind
    name: str  # within the section: `margin_rate`, `duties-not-declared.when`
    before: Any  # plain JSON value (decimals as text), None when added
    after: Any  # None when removed
    before_at: str  # `file:line`, "" when added
    after_at: str  # "" when removed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Side:
    ref: str
    source: str
    sha256: str
    status: str
    window: str
    changelog: str | None


@dataclass(frozen=True)
class PackDiff:
    before: Side
    after: Side
    changes: tuple[Change, ...]

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": dataclasses.asdict(self.before),
            "after": dataclasses.asdict(self.after),
            "summary": {k: self.count(k) for k in ("added", "removed", "changed")},
            "changes": [c.to_dict() for c in self.changes],
        }


def diff_packs(rules: RuleSet, source: RuleSource, before: str, after: str) -> PackDiff:
    """Compare two pinned versions (`id@version`) of packs in `rules`, read from `source`.

    Raises SelectionError for an unknown pack or version, ValueError for a ref
    without `@version`.
    """
    sides = []
    bases = []
    for ref in (before, after):
        if "@" not in ref:
            raise ValueError(f"{ref!r}: name a version, e.g. {ref}@1.0.0")
        pack = rules.select(ref, datetime.date.min, allow_draft=True)
        loaded = load_yaml(source.read(pack.source).decode("utf-8"), pack.source)
        provenance = loaded.data.get("provenance") or {}
        side = Side(
            pack.ref, pack.source, pack.sha256, pack.status, pack.window(),
            provenance.get("changelog"),
        )  # fmt: skip
        sides.append((side, loaded))
        bases.append([f"{f.id}@{f.version}" for f in pack.files if f.source != pack.source])
    (side_a, file_a), (side_b, file_b) = sides
    changes = list(_compare_files(file_a, file_b))
    if bases[0] != bases[1]:
        # A pack that extends another inherits its changes; this diff shows the files as
        # written, so say that the resolved base moved (diff the bases for the detail).
        where_a = file_a.locate("extends").source
        where_b = file_b.locate("extends").source
        base_change = Change(
            "extends", "changed", "resolved bases", bases[0], bases[1], where_a, where_b
        )
        changes.append(base_change)
    order = list(SECTIONS)
    extra = [k for k in (*file_a.data, *file_b.data) if k not in order]
    order += list(dict.fromkeys(extra))
    changes.sort(key=lambda c: order.index(c.section) if c.section in order else len(order))
    return PackDiff(side_a, side_b, tuple(changes))


# --- comparing ----------------------------------------------------------------------


def diff_documents(a: LoadedYaml, b: LoadedYaml) -> list[Change]:
    """Every change between two loaded pack files, in file order within each section."""
    return list(_compare_files(a, b))


def _compare_files(a: LoadedYaml, b: LoadedYaml) -> Iterator[Change]:
    data_a, data_b = a.data, b.data
    differ = _Differ(a, b)
    for field in _HEADER_FIELDS:
        yield from differ.leaf("version", field, (field,), data_a.get(field), data_b.get(field))
    keys = [k for k in data_a if k not in _IGNORED and k not in _HEADER_FIELDS]
    keys += [k for k in data_b if k not in data_a and k not in _IGNORED and k not in _HEADER_FIELDS]
    for key in keys:
        before, after = data_a.get(key), data_b.get(key)
        if key == "parameters":
            for change in differ.walk(key, (key,), _parameters(before), _parameters(after)):
                yield _bare_parameter(change)
            continue
        elif key == "charge_types":
            yield from differ.units(key, before or {}, after or {}, _treatment)
            continue
        elif key == "rules":
            yield from differ.rules(before or [], after or [])
            continue
        yield from differ.walk(key, (key,), before, after)


class _Differ:
    def __init__(self, a: LoadedYaml, b: LoadedYaml) -> None:
        self.a, self.b = a, b

    def at(self, loaded: LoadedYaml, parts: tuple[str | int, ...]) -> str:
        where: Location = loaded.locate(parts)
        return where.source

    def change(
        self,
        section: str,
        name: str,
        parts_a: tuple[str | int, ...] | None,
        parts_b: tuple[str | int, ...] | None,
        before: Any,
        after: Any,
    ) -> Change:
        kind: ChangeKind = (
            "added" if parts_a is None else "removed" if parts_b is None else "changed"
        )
        return Change(
            section,
            kind,
            name,
            _show(before) if parts_a is not None else None,
            _show(after) if parts_b is not None else None,
            self.at(self.a, parts_a) if parts_a is not None else "",
            self.at(self.b, parts_b) if parts_b is not None else "",
        )

    def leaf(
        self, section: str, name: str, parts: tuple[str | int, ...], before: Any, after: Any
    ) -> Iterator[Change]:
        if _same(before, after, expression=_is_expression(parts)):
            return
        yield self.change(
            section,
            name,
            parts if before is not None else None,
            parts if after is not None else None,
            before,
            after,
        )

    def walk(
        self,
        section: str,
        parts: tuple[str | int, ...],
        before: Any,
        after: Any,
        parts_b: tuple[str | int, ...] | None = None,
        name: str | None = None,
    ) -> Iterator[Change]:
        """Generic: mappings key by key, keyed lists row by row, anything else as a value."""
        parts_b = parts if parts_b is None else parts_b
        name = json_path(parts[1:]) or section if name is None else name
        if before is None or after is None:
            if before is not None or after is not None:
                yield self.change(
                    section,
                    name,
                    parts if before is not None else None,
                    parts_b if after is not None else None,
                    before,
                    after,
                )
            return
        if isinstance(before, dict) and isinstance(after, dict):
            for key in [*before, *(k for k in after if k not in before)]:
                yield from self.walk(
                    section,
                    (*parts, key),
                    before.get(key),
                    after.get(key),
                    (*parts_b, key),
                    f"{name}.{key}" if name != section else str(key),
                )
            return
        if isinstance(before, list) and isinstance(after, list):
            keyed = _row_keys(before, after)
            if keyed is not None:
                keys_a, keys_b = keyed
                index_a = {repr(k): i for i, k in enumerate(keys_a)}
                index_b = {repr(k): j for j, k in enumerate(keys_b)}
                for i, key in enumerate(keys_a):
                    j = index_b.get(repr(key))
                    yield from self.walk(
                        section,
                        (*parts, i),
                        before[i],
                        after[j] if j is not None else None,
                        (*parts_b, j if j is not None else i),
                        f"{name}[{_row_label(key)}]",
                    )
                for j, key in enumerate(keys_b):
                    if repr(key) not in index_a:
                        label = f"{name}[{_row_label(key)}]"
                        yield self.change(section, label, None, (*parts_b, j), None, after[j])
                return
        yield from self._value(section, name, parts, parts_b, before, after)

    def _value(
        self,
        section: str,
        name: str,
        parts: tuple[str | int, ...],
        parts_b: tuple[str | int, ...],
        before: Any,
        after: Any,
    ) -> Iterator[Change]:
        if not _same(before, after, expression=_is_expression(parts)):
            yield self.change(section, name, parts, parts_b, before, after)

    def units(
        self,
        section: str,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        normal: Callable[[Any], Any],
    ) -> Iterator[Change]:
        """Each entry compared whole (a charge type is counted or excluded, not both)."""
        for key in [*before, *(k for k in after if k not in before)]:
            old, new = before.get(key), after.get(key)
            parts = (section, key)
            if old is None or new is None or not _same(normal(old), normal(new)):
                yield self.change(
                    section,
                    key,
                    parts if old is not None else None,
                    parts if new is not None else None,
                    normal(old) if old is not None else None,
                    normal(new) if new is not None else None,
                )

    def rules(self, before: list[Any], after: list[Any]) -> Iterator[Change]:
        index_a = {r.get("id"): i for i, r in enumerate(before) if isinstance(r, dict)}
        index_b = {r.get("id"): i for i, r in enumerate(after) if isinstance(r, dict)}
        for rule_id, i in index_a.items():
            j = index_b.get(rule_id)
            if j is None:
                yield self.change("rules", str(rule_id), ("rules", i), None, _rule(before[i]), None)
                continue
            old, new = _rule(before[i]), _rule(after[j])
            for field in [*old, *(k for k in new if k not in old)]:
                if _same(old.get(field), new.get(field), expression=field == "when"):
                    continue
                yield self.change(
                    "rules",
                    f"{rule_id}.{field}",
                    ("rules", i, _field_key(before[i], field)) if field in old else None,
                    ("rules", j, _field_key(after[j], field)) if field in new else None,
                    old.get(field),
                    new.get(field),
                )
        for rule_id, j in index_b.items():
            if rule_id not in index_a:
                yield self.change("rules", str(rule_id), None, ("rules", j), None, _rule(after[j]))
        common_a = [r for r in index_a if r in index_b]
        common_b = [r for r in index_b if r in index_a]
        if common_a != common_b:
            # Order matters: the first exclusion rule in pack order explains a charge.
            yield self.change(
                "rules", "order", ("rules",), ("rules",), [str(r) for r in common_a],
                [str(r) for r in common_b],
            )  # fmt: skip


def _parameters(section: Any) -> Any:
    if not isinstance(section, dict):
        return section
    return {
        name: spec if isinstance(spec, dict) and "value" in spec else {"value": spec}
        for name, spec in section.items()
    }


def _bare_parameter(change: Change) -> Change:
    """`margin_rate.value: 0.10 -> 0.12` reads better as `margin_rate: 0.10 -> 0.12`."""

    def unwrap(value: Any) -> Any:
        return value["value"] if isinstance(value, dict) and set(value) == {"value"} else value

    name = change.name.removesuffix(".value")
    return dataclasses.replace(
        change, name=name, before=unwrap(change.before), after=unwrap(change.after)
    )


def _treatment(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    if spec.get("excluded") is not None:
        text = f"excluded: {spec['excluded']}"
    elif spec.get("group") is not None:
        text = f"counted in {spec['group']}"
    else:
        text = "untreated"
    if spec.get("description"):
        text += f" ({spec['description']})"
    return text


def _rule(spec: Any) -> dict[str, Any]:
    """A rule with its effect as one field, so `refer -> decline` is one change."""
    if not isinstance(spec, dict):
        return {"rule": spec}
    if spec.get("decide") is not None:
        effect = f"decide {spec['decide']}"
    elif spec.get("exclude_charge"):
        effect = "exclude the charge"
    elif spec.get("flag") is not None:
        effect = f"flag {spec['flag']}"
    else:
        effect = None
    rule = {"for": spec.get("for", "shipment"), "when": spec.get("when"), "effect": effect}
    for key, value in spec.items():
        if key not in ("id", "for", "when", "decide", "exclude_charge", "flag"):
            rule[key] = value
    return rule


def _field_key(spec: Any, field: str) -> str:
    """The key a normalised rule field was written under, for its line."""
    if field == "effect" and isinstance(spec, dict):
        for key in ("decide", "exclude_charge", "flag"):
            if key in spec:
                return key
    return field


def _row_keys(before: list[Any], after: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """How to match rows of two lists, or None to compare the lists as values."""
    rows = (*before, *after)
    keys_a: list[Any]
    keys_b: list[Any]
    if rows and all(isinstance(r, list) for r in rows):
        # Table rows written as lists (`[ocean, north_america, 0.0025]`): keyed by their
        # text cells, the figures being what changes.
        keys_a = [_cells_key(r) for r in before]
        keys_b = [_cells_key(r) for r in after]
        if _usable(keys_a) and _usable(keys_b) and all(keys_a + keys_b):
            return keys_a, keys_b
        return None
    if not all(isinstance(r, dict) for r in rows):
        return None
    for field in ("id", "name"):
        keys_a = [r.get(field) for r in before]
        keys_b = [r.get(field) for r in after]
        if _usable(keys_a) and _usable(keys_b):
            return keys_a, keys_b
    # Rate-table rows: keyed by their text fields (`{category: electronics, rate: 0.12}`).
    keys_a = [_text_key(r) for r in before]
    keys_b = [_text_key(r) for r in after]
    if _usable(keys_a) and _usable(keys_b) and any(keys_a + keys_b):
        return keys_a, keys_b
    return list(range(len(before))), list(range(len(after)))


def _usable(keys: list[Any]) -> bool:
    return all(k is not None for k in keys) and len(set(map(repr, keys))) == len(keys)


def _cells_key(row: list[Any]) -> tuple[str, ...]:
    return tuple(cell for cell in row if isinstance(cell, str))


def _text_key(row: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in row.items() if isinstance(v, str)))


def _is_expression(parts: tuple[str | int, ...]) -> bool:
    return (len(parts) == 2 and parts[0] == "formulas") or (parts[-1:] == ("when",))


def _same(a: Any, b: Any, *, expression: bool = False) -> bool:
    if expression and isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        shape = _expression_shape(a)
        return shape is not None and shape == _expression_shape(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Decimal | int) and isinstance(b, Decimal | int):
        return Decimal(a) == Decimal(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _expression_shape(text: str) -> Any:
    expr, _ = parse(text, Location())
    return None if expr is None else _shape(expr)


def _shape(node: Any) -> Any:
    """An expression tree without column offsets, so layout does not count as a change."""
    if isinstance(node, Expr):
        return (
            type(node).__name__,
            *(_shape(getattr(node, f.name)) for f in dataclasses.fields(node) if f.name != "col"),
        )
    if isinstance(node, tuple):
        return tuple(_shape(n) for n in node)
    return node


def _row_label(key: Any) -> str:
    if isinstance(key, tuple):
        return ", ".join(
            f"{item[0]}={item[1]}" if isinstance(item, tuple) else str(item) for item in key
        )
    return str(key)


def _show(value: Any) -> Any:
    """Plain JSON: numbers as decimal text (as results carry them), dates as ISO text."""
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _show(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_show(v) for v in value]
    return value


# --- rendering ----------------------------------------------------------------------

_MARK = {"added": "+", "removed": "-", "changed": "~"}
MAX_SHOWN = 160


def render_diff(diff: PackDiff) -> str:
    a, b = diff.before, diff.after
    lines = [
        f"{a.ref} → {b.ref}",
        f"  before: {a.source} ({a.status}, {a.window})  sha256 {a.sha256[:16]}…",
        f"  after:  {b.source} ({b.status}, {b.window})  sha256 {b.sha256[:16]}…",
    ]
    if b.changelog and b.changelog != a.changelog:
        lines.append(f"  changelog of {b.ref}: {_one_line(b.changelog)}")
    if not diff.changes:
        lines += ["", "No changes in meaning: the two versions value every shipment alike."]
        return "\n".join(lines) + "\n"
    section = None
    for change in diff.changes:
        if change.section != section:
            section = change.section
            lines += ["", SECTIONS.get(section, section.replace("_", " ").capitalize())]
        lines.append(f"  {_MARK[change.kind]} {change.name}: {_describe(change)}")
        where = " → ".join(w for w in (change.before_at, change.after_at) if w)
        lines.append(f"      {where}")
    lines += [
        "",
        f"{len(diff.changes)} change(s): {diff.count('added')} added, "
        f"{diff.count('removed')} removed, {diff.count('changed')} changed",
    ]
    return "\n".join(lines) + "\n"


def _describe(change: Change) -> str:
    if change.kind == "added":
        return f"{_text(change.after)} (new)"
    if change.kind == "removed":
        return f"{_text(change.before)} (removed)"
    return f"{_text(change.before)} → {_text(change.after)}"


def _text(value: Any) -> str:
    if value is None:
        text = "(none)"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, list):
        text = "[" + ", ".join(_text(v) for v in value) + "]"
    else:
        text = _one_line(str(value))
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())
