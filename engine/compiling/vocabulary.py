"""Typed codes in rule files: every code a pack writes must be a value of its field.

In: a pack's merged sections (parameters, regions, charge types, formulas, tables, rules,
claims formulas, each with the file it came from) and the `Vocabulary` of the rule
repository. Out: problems at `file:line:col`, one per code that is not a valid value of
the field it is compared with, listed for or looked up by, with "did you mean" and, for
small vocabularies, every allowed value.

Which names hold codes is declared in `engine.names.CODES`; the values come from
rules/reference/*.yaml and the facts contract (`engine.facts`), never from this module.
A formula has the kind of code it returns (`x if c else "general_cargo"` has the kind of
`x`); a parameter has the kind it declares (`codes: country`) or the kind of whatever it
is compared with or listed against (`shipment.destination.country in sanctioned` makes
`sanctioned` a list of countries). A parameter used as two kinds is a problem too.

This walks the expression trees again, after the formula and condition compilers: it
adds no runtime cost and sees nothing they have not already accepted as well-formed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, get_args

from engine.compiling.expressions import Call, Compare, Expr, IfElse, ListOf, Name, Text, parse
from engine.compiling.expressions import text_location as _at
from engine.compiling.tables import CompiledTable
from engine.errors import Location, Problem
from engine.facts import Mode, PaymentMethod
from engine.loading.yamlfile import LoadedYaml
from engine.names import CODES, FUNCTION_CODES

# What each kind of code is called in messages, and where its values are kept.
_WHAT = {
    "country": ("country code", "ISO 3166-1 alpha-2, rules/reference/countries.yaml"),
    "currency": ("currency code", "ISO 4217, rules/reference/currencies.yaml"),
    "incoterm": ("Incoterm", "Incoterms 2020, rules/reference/incoterms.yaml"),
    "mode": ("transport mode", "the facts contract, engine/facts.py"),
    "payment_method": ("payment method", "the facts contract, engine/facts.py"),
    "goods_category": ("goods category", "rules/reference/goods_categories.yaml"),
    "cost": ("cost an Incoterm includes", "rules/reference/incoterms.yaml"),
    "charge_type": ("charge type", "this pack's charge_types"),
    "charge_group": ("charge group", "the groups of this pack's charge_types"),
    "region": ("region", "this pack's regions, or rest_of_world"),
}
_LIST_ALL_UP_TO = 40  # vocabularies this small are listed whole in messages


@dataclass(frozen=True)
class Vocabulary:
    """The values of every kind of code, from the reference data and the facts contract."""

    countries: frozenset[str]
    currencies: frozenset[str]
    incoterms: frozenset[str]
    goods_categories: frozenset[str] | None  # None: no vocabulary, categories unchecked
    # Written for a code, never accepted in its place: UK for GB, art for fine_art.
    aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    costs: frozenset[str] = frozenset()

    def values(self, kind: str, pack: _PackCodes) -> frozenset[str] | None:
        if kind == "country":
            return self.countries
        if kind == "currency":
            return self.currencies
        if kind == "incoterm":
            return self.incoterms
        if kind == "goods_category":
            return self.goods_categories
        if kind == "cost":
            return self.costs
        if kind == "mode":
            return frozenset(get_args(Mode))
        if kind == "payment_method":
            return frozenset(get_args(PaymentMethod))
        return pack.own[kind]


@dataclass(frozen=True)
class _PackCodes:
    own: Mapping[str, frozenset[str]]  # charge_type, charge_group, region: from the pack


class MergedPack(Protocol):
    """What the checker reads of `engine.compiling.pack._Merged`."""

    @property
    def parameters(self) -> Mapping[str, tuple[Any, LoadedYaml]]: ...
    @property
    def charge_types(self) -> Mapping[str, tuple[Any, LoadedYaml]]: ...
    @property
    def formulas(self) -> Mapping[str, tuple[str, LoadedYaml]]: ...
    @property
    def tables(self) -> Mapping[str, tuple[Any, LoadedYaml, Mapping[str, bytes]]]: ...
    @property
    def rules(self) -> Mapping[str, tuple[Any, int, LoadedYaml]]: ...
    @property
    def claims(self) -> tuple[Any, LoadedYaml] | None: ...


@dataclass(frozen=True)
class LayerRegions:
    """One file's `regions`, with the file they are written in."""

    regions: Mapping[str, Sequence[str]]
    loaded: LoadedYaml


@dataclass
class _Expression:
    tree: Expr
    where: Location  # of the YAML scalar holding the text
    formula: str | None = None  # the formula it defines, if any


def check_codes(
    merged: MergedPack,
    regions: Sequence[LayerRegions],
    vocabulary: Vocabulary,
    tables: Mapping[str, CompiledTable],
) -> list[Problem]:
    """Every code of the pack that is not a value of its field, as a problem."""
    return _Checker(merged, regions, vocabulary, tables).run()


class _Checker:
    def __init__(
        self,
        merged: MergedPack,
        regions: Sequence[LayerRegions],
        vocabulary: Vocabulary,
        tables: Mapping[str, CompiledTable],
    ) -> None:
        self.merged = merged
        self.tables = tables
        self.regions = regions
        self.vocabulary = vocabulary
        groups = {t.group for t, _ in merged.charge_types.values() if t.group}
        region_names = {name for layer in regions for name in layer.regions}
        self.pack = _PackCodes(
            {
                "charge_type": frozenset(merged.charge_types),
                "charge_group": frozenset(groups),
                "region": frozenset({*region_names, "rest_of_world"}),
            }
        )
        self.expressions = list(self._expressions())
        self.formula_kinds: dict[str, str] = {}
        self.parameter_kinds: dict[str, str] = {}
        self.declared: set[str] = set()
        self.problems: list[Problem] = []

    # --- the expressions of the pack ---

    def _expressions(self) -> Iterator[_Expression]:
        merged = self.merged
        sections: list[tuple[str, Mapping[str, tuple[str, LoadedYaml]]]] = [
            ("formulas", merged.formulas)
        ]
        if merged.claims is not None:
            claims, loaded = merged.claims
            sections.append(
                ("claims.formulas", {n: (t, loaded) for n, t in claims.formulas.items()})
            )
        for section, texts in sections:
            for name, (text, loaded) in texts.items():
                where = loaded.locate(f"{section}.{name}")
                tree, _ = parse(text, where)  # the compilers report what does not parse
                if tree is not None:
                    yield _Expression(tree, where, name)
        for rule, index, loaded in merged.rules.values():
            where = loaded.locate(f"rules[{index}].when")
            tree, _ = parse(rule.when, where)
            if tree is not None:
                yield _Expression(tree, where)

    # --- kinds ---

    def kind(self, node: Expr) -> str | None:
        if isinstance(node, Name):
            dotted = node.dotted
            return (
                CODES.get(dotted)
                or self.formula_kinds.get(dotted)
                or self.parameter_kinds.get(dotted)
            )
        if isinstance(node, IfElse):
            return self.kind(node.then) or self.kind(node.otherwise)
        if isinstance(node, ListOf):
            for item in node.items:
                found = self.kind(item)
                if found:
                    return found
            return None
        if isinstance(node, Call) and node.func in FUNCTION_CODES:
            return FUNCTION_CODES[node.func][1]
        return None

    def _pairs(self, tree: Expr) -> Iterator[tuple[Expr, Expr]]:
        """(a, b) for every two expressions whose values must be of one kind of code."""
        for node in _walk(tree):
            if isinstance(node, Compare) and node.op in ("==", "!=", "in", "not in"):
                yield node.left, node.right
            elif isinstance(node, Call) and node.func == "overlaps" and len(node.args) == 2:
                yield node.args[0], node.args[1]
            elif isinstance(node, IfElse):
                yield node.then, node.otherwise
            if isinstance(node, Call) and node.func in FUNCTION_CODES:
                wanted = FUNCTION_CODES[node.func][0]
                for arg, kind in zip(node.args, wanted, strict=False):
                    if kind:
                        yield _Kinded(arg.col, kind, node.func), arg

    def _kind_of(self, node: Expr) -> str | None:
        return node.kind if isinstance(node, _Kinded) else self.kind(node)

    def _infer(self) -> None:
        """Kinds of formulas and parameters, until nothing more is learnt (a few rounds)."""
        parameters = self.merged.parameters
        for name, (spec, _) in parameters.items():
            declared = getattr(spec, "codes", None)
            if declared:
                self.parameter_kinds[name] = declared
                self.declared.add(name)
        for _ in range(len(self.expressions) + 1):
            before = (dict(self.formula_kinds), dict(self.parameter_kinds))
            for expression in self.expressions:
                if expression.formula is not None:
                    found = self.kind(expression.tree)
                    if found:
                        self.formula_kinds[expression.formula] = found
                for a, b in self._pairs(expression.tree):
                    for one, other in ((a, b), (b, a)):
                        kind = self._kind_of(one)
                        if kind is None:
                            continue
                        for name in _names_listed(other):
                            if name in parameters and name not in self.parameter_kinds:
                                self.parameter_kinds[name] = kind
            if before == (self.formula_kinds, self.parameter_kinds):
                break

    # --- checks ---

    def run(self) -> list[Problem]:
        self._infer()
        for expression in self.expressions:
            for a, b in self._pairs(expression.tree):
                for one, other in ((a, b), (b, a)):
                    kind = self._kind_of(one)
                    if kind is None:
                        continue
                    against = (
                        f"given to {one.function}()"
                        if isinstance(one, _Kinded)
                        else f"compared with {_described(one)}"
                    )
                    self._check_literals(other, kind, expression.where, against)
                    self._check_uses(other, kind, expression.where)
        self._check_parameters()
        self._check_regions()
        self._check_tables()
        return list(dict.fromkeys(self.problems))

    def _check_literals(self, node: Expr, kind: str, where: Location, against: str) -> None:
        for text in _literals(node):
            self._check(text.value, kind, _at(where, 1, text.col), against)

    def _check_uses(self, node: Expr, kind: str, where: Location) -> None:
        """A parameter declared (or first used) as one kind, used here as another."""
        for name in _names_listed(node):
            held = self.parameter_kinds.get(name)
            if name in self.merged.parameters and held is not None and held != kind:
                how = "declares" if name in self.declared else "is used as"
                self.problems.append(
                    Problem(
                        "pack.code_kind",
                        f"parameter `{name}` {how} {_WHAT[held][0]}s, but here it is compared "
                        f"with a {_WHAT[kind][0]}",
                        _at(where, 1, node.col),
                    )
                )

    def _check_parameters(self) -> None:
        for name, (spec, loaded) in self.merged.parameters.items():
            kind = self.parameter_kinds.get(name)
            if kind is None:
                continue
            wrapped = hasattr(spec, "value")
            value = spec.value if wrapped else spec
            base = f"parameters.{name}.value" if wrapped else f"parameters.{name}"
            against = f"in parameter `{name}`"
            if isinstance(value, str):
                self._check(value, kind, loaded.locate(base), against)
            elif isinstance(value, list | tuple):
                for index, item in enumerate(value):
                    if isinstance(item, str):
                        self._check(item, kind, loaded.locate(f"{base}[{index}]"), against)

    def _check_regions(self) -> None:
        for layer in self.regions:
            for region, countries in layer.regions.items():
                for index, code in enumerate(countries):
                    where = layer.loaded.locate(f"regions.{region}[{index}]")
                    self._check(code, "country", where, f"in region `{region}`")

    def _check_tables(self) -> None:
        # The compiled rows, whatever form they were written in (positional, a header row,
        # or rows from a CSV file): each cell keeps the place it was written.
        for name, compiled in self.tables.items():
            loaded = self.merged.tables[name][1]
            for column, key in compiled.keys:
                tree, _ = parse(key, loaded.locate(f"tables.{name}.keys.{column}"))
                kind = self.kind(tree) if isinstance(tree, Name) else None
                if kind is None:
                    continue
                position = compiled.columns.index(column)
                against = f"in column `{column}` of table `{name}`, looked up by `{key}`"
                for row in compiled.rows:
                    cell = row.cells[position]
                    if cell.kind == "text":
                        self._check(cell.text, kind, cell.where, against)

    def _check(self, value: str, kind: str, where: Location, against: str) -> None:
        allowed = self.vocabulary.values(kind, self.pack)
        if allowed is None or value in allowed:
            return
        what, home = _WHAT[kind]
        alias = self.vocabulary.aliases.get(kind, {}).get(value)
        if alias is not None and kind == "goods_category":
            hint = f"; it is a synonym of `{alias}`, and facts are read as `{alias}`: write that"
        elif alias is not None:
            hint = f"; did you mean `{alias}`?"
        else:
            hint = _suggestion(value, allowed)
        listed = (
            f" (allowed: {', '.join(sorted(allowed))})" if len(allowed) <= _LIST_ALL_UP_TO else ""
        )
        article = "an" if what[0] in "AEIOUaeiou" else "a"
        self.problems.append(
            Problem(
                "pack.unknown_code",
                f"`{value}` is not {article} {what} ({home}), {against}{hint}{listed}",
                where,
            )
        )


@dataclass(frozen=True)
class _Kinded(Expr):
    """A function's argument position, which wants one kind of code."""

    kind: str
    function: str


def _walk(tree: Expr) -> Iterator[Expr]:
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for value in vars(node).values():
            if isinstance(value, Expr):
                stack.append(value)
            elif isinstance(value, tuple):
                stack.extend(item for item in value if isinstance(item, Expr))


def _values(node: Expr) -> Iterator[Expr]:
    """The expressions whose value is a value of `node`: itself, or its list items and
    if/else branches, all the way down."""
    if isinstance(node, ListOf):
        for item in node.items:
            yield from _values(item)
    elif isinstance(node, IfElse):
        yield from _values(node.then)
        yield from _values(node.otherwise)
    else:
        yield node


def _literals(node: Expr) -> Iterator[Text]:
    """The text literals that are a value of `node`."""
    return (value for value in _values(node) if isinstance(value, Text))


def _names_listed(node: Expr) -> Iterator[str]:
    """The names whose value is a value of `node`."""
    return (value.dotted for value in _values(node) if isinstance(value, Name))


def _described(node: Expr) -> str:
    if isinstance(node, Name):
        return f"`{node.dotted}`"
    if isinstance(node, Call):
        return f"{node.func}()"
    return "the other side"


def _suggestion(value: str, allowed: frozenset[str]) -> str:
    for candidate in (value.upper(), value.lower()):
        if candidate in allowed:
            return f"; did you mean `{candidate}`?"
    # A small vocabulary has few near misses, so a looser match is still a fair guess
    # (`sea` -> `ocean`); among 249 country codes it would be noise.
    cutoff = 0.5 if len(allowed) <= _LIST_ALL_UP_TO else 0.6
    close = difflib.get_close_matches(value, sorted(allowed), n=1, cutoff=cutoff)
    if not close:
        close = difflib.get_close_matches(value.upper(), sorted(allowed), n=1, cutoff=cutoff)
    return f"; did you mean `{close[0]}`?" if close else ""


def read_synonyms(
    merged: WritableMergedPack, regions: Sequence[LayerRegions], vocabulary: Vocabulary
) -> None:
    """Write each goods-category synonym a pack compares with a category as its category.

    Facts read a synonym as its category (`art` as `fine_art`), so a pack's `goods.category
    == "art"` must mean `fine_art` too, or it would silently never hold. A literal is
    rewritten in a formula's text or a rule's `when` only when every literal of that value
    in the expression is compared with a category; anything else is left to `check_codes`,
    which refuses a synonym it still finds. Parameter lists of categories read the same way.
    Table cells are not rewritten: they are refused with the category to write.
    """
    synonyms = vocabulary.aliases.get("goods_category") or {}
    if not synonyms:
        return
    checker = _Checker(merged, regions, vocabulary, {})
    checker._infer()

    def rewritten(text: str, where: Location) -> str:
        tree, _ = parse(text, where)
        if tree is None:
            return text
        in_category: dict[str, int] = {}
        for a, b in checker._pairs(tree):
            for one, other in ((a, b), (b, a)):
                if checker._kind_of(one) == "goods_category":
                    for literal in _literals(other):
                        if literal.value in synonyms:
                            in_category[literal.value] = in_category.get(literal.value, 0) + 1
        if not in_category:
            return text
        everywhere: dict[str, int] = {}
        for node in _walk(tree):
            if isinstance(node, Text) and node.value in in_category:
                everywhere[node.value] = everywhere.get(node.value, 0) + 1
        for synonym, count in in_category.items():
            if everywhere[synonym] != count:
                continue  # also used as something else: left as written, and refused
            quoted = [q + synonym + q for q in ('"', "'")]
            if sum(text.count(q) for q in quoted) != count:
                continue
            for q in quoted:
                text = text.replace(q, f'"{synonyms[synonym]}"')
        return text

    for name, (text, loaded) in list(merged.formulas.items()):
        merged.formulas[name] = (rewritten(text, loaded.locate(f"formulas.{name}")), loaded)
    for rule_id, (rule, index, loaded) in list(merged.rules.items()):
        when = rewritten(rule.when, loaded.locate(f"rules[{index}].when"))
        if when != rule.when:
            merged.rules[rule_id] = (rule.model_copy(update={"when": when}), index, loaded)
    for name, (spec, loaded) in list(merged.parameters.items()):
        if checker.parameter_kinds.get(name) != "goods_category":
            continue
        wrapped = hasattr(spec, "value")
        value = spec.value if wrapped else spec
        if isinstance(value, str):
            value = synonyms.get(value, value)
        elif isinstance(value, list | tuple):
            value = [synonyms.get(item, item) if isinstance(item, str) else item for item in value]
        spec = spec.model_copy(update={"value": value}) if wrapped else value
        merged.parameters[name] = (spec, loaded)


class WritableMergedPack(Protocol):
    """What `read_synonyms` rewrites of `engine.compiling.pack._Merged`."""

    parameters: dict[str, tuple[Any, LoadedYaml]]
    charge_types: dict[str, tuple[Any, LoadedYaml]]
    formulas: dict[str, tuple[str, LoadedYaml]]
    tables: dict[str, tuple[Any, LoadedYaml, Mapping[str, bytes]]]
    rules: dict[str, tuple[Any, int, LoadedYaml]]
    claims: tuple[Any, LoadedYaml] | None
