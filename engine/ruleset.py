"""Load a whole rule repository once: load -> validate -> compile, reporting every problem.

In: a `RuleSource`. Out: an immutable `RuleSet` holding every compiled pack version and
the reference data, or one `RulesError` listing every problem in every file, sorted by
location. Valuing against a RuleSet never rereads or recompiles anything.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.compiling.country import CompiledCountry, compile_country
from engine.compiling.formulas import BUILTINS, Function
from engine.compiling.pack import CompiledPack, Layer, compile_policy
from engine.compiling.tables import csv_path
from engine.compiling.vocabulary import Vocabulary
from engine.errors import EvaluationError, Location, Problem, RulesError, SelectionError
from engine.facts import FactsReference
from engine.loading.sources import RuleSource
from engine.loading.yamlfile import LoadedYaml, load_yaml
from engine.schema import validate_document
from engine.schema.models import (
    CountriesFile,
    CountryFile,
    CurrenciesFile,
    GoodsCategoriesFile,
    IncotermsFile,
    PolicyFile,
)

_POLICY_PATH = re.compile(r"policies/([^/]+)/([^/]+)\.yaml")
_COUNTRY_PATH = re.compile(r"rules/countries/([^/]+)/([^/]+)\.yaml")
Versioned = TypeVar("Versioned", CompiledPack, CompiledCountry)
REFERENCE_FILES = {
    "rules/reference/incoterms.yaml": "incoterms",
    "rules/reference/currencies.yaml": "currencies",
    "rules/reference/countries.yaml": "countries",
}
# Reference files a repository may go without: one made before the goods-category
# vocabulary existed (and the replay of a record made then) leaves categories unchecked.
OPTIONAL_REFERENCE_FILES = {"rules/reference/goods_categories.yaml": "goods_categories"}


@dataclass(frozen=True)
class RuleFile:
    path: str
    kind: str
    sha256: str
    status: str | None = None  # "draft" | "published" for versioned files; None for reference


@dataclass(frozen=True)
class RuleSet:
    """Every compiled rule file of a repository. Build it with `load_ruleset`."""

    source: str
    packs: Mapping[str, tuple[CompiledPack, ...]]  # id -> versions, oldest first
    currencies: Mapping[str, int]
    countries: frozenset[str]
    files: tuple[RuleFile, ...]
    functions: Mapping[str, Function] = field(default_factory=dict)
    duty_rules: Mapping[str, tuple[CompiledCountry, ...]] = field(default_factory=dict)
    incoterms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Goods category or synonym -> its category (rules/reference/goods_categories.yaml);
    # None for a repository without that file (as every one was before it existed, and as
    # an audit record made then is replayed): categories are then not checked.
    goods_categories: Mapping[str, str] | None = None
    # What valuations reuse, built on first use: pack id -> the facts reference with every
    # charge type of its versions (facts are read before the date picks a version).
    _references: dict[str, FactsReference] = field(default_factory=dict, compare=False, repr=False)
    # (policy, day, allow_draft) -> the version `select` picked: a rule set never changes,
    # and a stream of shipments repeats few dates. Bounded: cleared when it grows large.
    # Not an init field: a copy made with dataclasses.replace starts with its own.
    _selected: dict[tuple[str, datetime.date, bool], CompiledPack] = field(
        default_factory=dict, compare=False, repr=False, init=False
    )
    # (country, day) -> what `duty_rules_for` found, as `_selected` for packs.
    _duty_selected: dict[
        tuple[str, datetime.date], tuple[CompiledCountry | None, CompiledCountry | None]
    ] = field(default_factory=dict, compare=False, repr=False, init=False)
    # Policy -> engine.api's plain road for it (or False: no version values plain facts;
    # see evaluating.straightline.plain_line), made on first use.
    plain_roads: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, init=False)

    def duty_rules_for(
        self, country: str, day: datetime.date
    ) -> tuple[CompiledCountry | None, CompiledCountry | None]:
        """(country rules, its customs union's rules) published and in effect on `day`."""
        key = (country, day)
        found = self._duty_selected.get(key)
        if found is None:
            found = self._duty_rules_for(country, day)  # an error is raised every time
            if len(self._duty_selected) >= _SELECTED_MAX:
                self._duty_selected.clear()
            self._duty_selected[key] = found
        return found

    def _duty_rules_for(
        self, country: str, day: datetime.date
    ) -> tuple[CompiledCountry | None, CompiledCountry | None]:
        own = _in_effect(self.duty_rules.get(country, ()), day)
        if own is None or own.customs_union is None:
            return own, None
        union = _in_effect(self.duty_rules.get(own.customs_union, ()), day)
        if union is None:
            raise EvaluationError(
                Problem(
                    "duties.no_union_rules",
                    f"{own.ref} takes customs rules from "
                    f"{own.customs_union}, which has no published version in effect on {day}",
                    own.where.at("customs_union"),
                )
            )
        return own, union

    def pack_versions(self, pack_id: str) -> tuple[CompiledPack, ...]:
        try:
            return self.packs[pack_id]
        except KeyError:
            known = ", ".join(sorted(self.packs)) or "none"
            raise SelectionError(
                Problem("policy.unknown", f"no policy pack `{pack_id}` (packs: {known})")
            ) from None

    def select(self, policy: str, on: datetime.date, *, allow_draft: bool = False) -> CompiledPack:
        """`standard` -> the published version in effect on `on`; `standard@1.0.0` -> that one."""
        key = (policy, on, allow_draft)
        found = self._selected.get(key)
        if found is not None:
            return found
        found = self._select(policy, on, allow_draft)
        if len(self._selected) >= _SELECTED_MAX:
            self._selected.clear()
        self._selected[key] = found
        return found

    def _select(self, policy: str, on: datetime.date, allow_draft: bool) -> CompiledPack:
        pack_id, _, version = policy.partition("@")
        versions = self.pack_versions(pack_id)
        if version:
            for pack in versions:
                if pack.version == version:
                    if pack.status != "published" and not allow_draft:
                        raise SelectionError(
                            Problem(
                                "policy.draft",
                                f"{pack.ref} is a draft; drafts value only "
                                "when asked for explicitly (--allow-draft)",
                            )
                        )
                    return pack
            listed = ", ".join(p.version for p in versions)
            raise SelectionError(
                Problem(
                    "policy.unknown_version",
                    f"{pack_id} has no version {version} (versions: {listed})",
                )
            )
        usable = [p for p in versions if p.status == "published" or allow_draft]
        for pack in reversed(usable):
            if pack.in_effect(on):
                return pack
        listed = "; ".join(f"{p.version} ({p.status}, {p.window()})" for p in versions)
        raise SelectionError(
            Problem(
                "policy.not_in_effect",
                f"no published version of {pack_id} is in effect on "
                f"{on.isoformat()}; versions: {listed}. Pin one with {pack_id}@VERSION or use "
                "--as-of with a date inside a window",
            )
        )

    def pack_facts_reference(self, pack_id: str) -> FactsReference:
        """Facts checked against every charge type of any version of `pack_id`."""
        found = self._references.get(pack_id)
        if found is None:
            versions = self.pack_versions(pack_id)
            charge_types = frozenset(t for p in versions for t in p.charge_types)
            found = FactsReference(
                self.currencies, self.countries, charge_types, self.goods_categories
            )
            self._references[pack_id] = found
        return found

    def facts_reference(self, pack: CompiledPack) -> FactsReference:
        return FactsReference(
            self.currencies, self.countries, frozenset(pack.charge_types), self.goods_categories
        )


_SELECTED_MAX = 4096


def _in_effect(versions: tuple[CompiledCountry, ...], day: datetime.date) -> CompiledCountry | None:
    for version in reversed(versions):
        if version.status == "published" and version.in_effect(day):
            return version
    return None


def load_ruleset(source: RuleSource, functions: Mapping[str, Function] | None = None) -> RuleSet:
    """Load, validate and compile every rule file; raise RulesError listing all problems."""
    table = {**BUILTINS, **(functions or {})}
    problems: list[Problem] = []
    files: list[RuleFile] = []
    packs: dict[str, list[CompiledPack]] = {}
    currencies: dict[str, int] = {}
    countries: frozenset[str] = frozenset()
    duty_rules: dict[str, list[CompiledCountry]] = {}
    incoterms: dict[str, tuple[str, ...]] = {}
    categories: dict[str, str] | None = None  # None: the repository has no vocabulary
    country_aliases: dict[str, str] = {}
    policies: list[tuple[Layer, str]] = []

    for path in source.paths():
        raw = source.read(path)
        sha = hashlib.sha256(raw).hexdigest()
        kind = _kind_of(path)
        if kind is None:
            problems.append(
                Problem(
                    "repo.unknown_file",
                    "not a known kind of rule file "
                    "(policies/<id>/<version>.yaml or rules/reference/...)",
                    Location(path),
                )
            )
            continue
        record = RuleFile(path, kind, sha)
        loaded, errs = _load(raw, path)
        if loaded is None:
            files.append(record)
            problems.extend(errs)
            continue
        model, errs = validate_document(loaded, kind)
        if model is None:
            files.append(record)
            problems.extend(errs)
            continue
        files.append(dataclasses.replace(record, status=getattr(model, "status", None)))
        if isinstance(model, CurrenciesFile):
            currencies = {code: c.minor_units for code, c in model.currencies.items()}
        elif isinstance(model, CountriesFile):
            countries = frozenset(model.countries)
            country_aliases = dict(model.aliases)
            problems.extend(_check_aliases(model, loaded))
        elif isinstance(model, GoodsCategoriesFile):
            categories, errs = _read_categories(model, loaded)
            problems.extend(errs)
        elif isinstance(model, IncotermsFile):
            incoterms = {code: tuple(term.includes) for code, term in model.incoterms.items()}
        elif isinstance(model, CountryFile):
            errs = _check_versioned_path(model.id, model.version, loaded, path, _COUNTRY_PATH)
            country, compile_errs = compile_country(model, loaded, sha)
            problems.extend(errs + compile_errs)
            if country is not None and not errs:
                country, example_errs = _read_examples(country, source)
                problems.extend(example_errs)
                duty_rules.setdefault(country.id, []).append(country)
        elif isinstance(model, PolicyFile):
            errs = _check_versioned_path(model.id, model.version, loaded, path, _POLICY_PATH)
            problems.extend(errs)
            if not errs:
                attachments = _read_attachments(model, loaded, source, files, problems)
                policies.append((Layer(model, loaded, sha, attachments), path))

    # Packs compile once every file is read: a pack may extend any other, and its codes
    # are checked against the reference data.
    vocabulary = Vocabulary(
        countries=countries,
        currencies=frozenset(currencies),
        incoterms=frozenset(incoterms),
        goods_categories=None if categories is None else frozenset(categories.values()),
        aliases={
            "country": country_aliases,
            "goods_category": {name: c for name, c in (categories or {}).items() if name != c},
        },
        costs=frozenset(cost for includes in incoterms.values() for cost in includes),
    )
    for layer, _ in policies:
        layers, errs = _resolve(layer, [entry for entry, _ in policies])
        problems.extend(errs)
        if layers is None:
            continue
        pack, compile_errs = compile_policy(layers, table, vocabulary)
        problems.extend(compile_errs)
        if pack is not None:
            pack, example_errs = _read_examples(pack, source)
            problems.extend(example_errs)
            packs.setdefault(pack.id, []).append(pack)

    for required, kind in REFERENCE_FILES.items():
        if required not in {f.path for f in files}:
            problems.append(
                Problem(
                    "repo.missing_reference",
                    f"the rule repository needs {required} ({kind})",
                    Location(required),
                )
            )
    ordered = {
        pid: tuple(sorted(vs, key=lambda p: _semver(p.version)))
        for pid, vs in sorted(packs.items())
    }
    by_country = {
        cid: tuple(sorted(vs, key=lambda c: _semver(c.version)))
        for cid, vs in sorted(duty_rules.items())
    }
    for pack_versions in ordered.values():
        problems.extend(_overlaps(pack_versions))
    for country_versions in by_country.values():
        problems.extend(_overlaps(country_versions))
    for versions in by_country.values():
        for country in versions:
            if country.customs_union and country.customs_union not in by_country:
                problems.append(
                    Problem(
                        "country.unknown_union",
                        f"customs union {country.customs_union} has no "
                        f"rules (rules/countries/{country.customs_union}/)",
                        country.where.at("customs_union"),
                    )
                )
            if country.currency not in currencies and currencies:
                problems.append(
                    Problem(
                        "country.currency",
                        f"unknown currency {country.currency}",
                        country.where.at("currency"),
                    )
                )
    if problems:
        raise RulesError(problems)
    return RuleSet(
        source.name,
        ordered,
        currencies,
        countries,
        tuple(files),
        table,
        by_country,
        incoterms,
        categories,
    )


def _read_attachments(
    model: PolicyFile,
    loaded: LoadedYaml,
    source: RuleSource,
    files: list[RuleFile],
    problems: list[Problem],
) -> dict[str, bytes]:
    """The CSV files the pack's tables read rows from (`rows_from`), beside the pack file.

    Each is a rule file of its own kind ("table") with the pack's status, so rules.lock
    records a published pack's CSV and a changed CSV is caught as a changed pack is.
    """
    found: dict[str, bytes] = {}
    for name, table in model.tables.items():
        if table.rows_from is None:
            continue
        path = csv_path(loaded.file, table.rows_from)
        if path in found:
            continue
        try:
            data = source.read(path)
        except RulesError as exc:
            problems.extend(exc.problems)
            continue
        except OSError as exc:
            why = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror or exc
            problems.append(
                Problem(
                    "table.rows_from",
                    f"cannot read {path}: {why}",
                    loaded.locate(f"tables.{name}.rows_from"),
                )
            )
            continue
        found[path] = data
        files.append(RuleFile(path, "table", hashlib.sha256(data).hexdigest(), model.status))
    return found


def _read_categories(
    model: GoodsCategoriesFile, loaded: LoadedYaml
) -> tuple[dict[str, str], list[Problem]]:
    """Category or synonym -> category; a synonym that is a category or repeated is a problem."""
    names = {name: name for name in model.categories}
    problems = []
    for name, category in model.categories.items():
        for index, synonym in enumerate(category.synonyms):
            taken = names.get(synonym)
            if taken is not None:
                already = "a category" if taken == synonym else f"a synonym of `{taken}`"
                problems.append(
                    Problem(
                        "reference.synonym",
                        f"synonym `{synonym}` of `{name}` is already {already}",
                        loaded.locate(f"categories.{name}.synonyms[{index}]"),
                    )
                )
                continue
            names[synonym] = name
    return names, problems


def _check_aliases(model: CountriesFile, loaded: LoadedYaml) -> list[Problem]:
    problems = []
    for alias, code in model.aliases.items():
        if alias in model.countries or code not in model.countries:
            why = (
                "is itself a country code"
                if alias in model.countries
                else f"names {code}, which is not a country code"
            )
            problems.append(
                Problem(
                    "reference.alias", f"alias {alias} {why}", loaded.locate(f"aliases.{alias}")
                )
            )
    return problems


def _load(raw: bytes, path: str) -> tuple[LoadedYaml | None, list[Problem]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            Problem(
                "yaml.encoding",
                f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                Location(path),
            )
        ]
    try:
        return load_yaml(text, path), []
    except RulesError as exc:
        return None, list(exc.problems)


def _resolve(layer: Layer, every: list[Layer]) -> tuple[list[Layer] | None, list[Problem]]:
    """The layers of a pack, base first, following `extends`; cycles and gaps are problems."""
    chain = [layer]
    while chain[0].model.extends is not None:
        child = chain[0]
        spec = child.model.extends
        assert spec is not None  # the loop's condition
        base_id, _, wanted = spec.partition("@")
        where = child.loaded.locate("extends")
        matching = [
            c for c in every if c.model.id == base_id and _satisfies(c.model.version, wanted)
        ]
        candidates, by = matching, ""
        if child.model.status == "published":
            # A published pack's base is exact: the highest published match that had taken
            # effect when the pack took effect. A base version published later never reaches
            # it (rules.lock records the resolution; compliance/lock.py checks it).
            start = child.model.effective_from
            by = f" taking effect by {start}"
            candidates = [
                c
                for c in matching
                if c.model.status == "published" and c.model.effective_from <= start
            ]
        if matching and any(c.model.id == base_id for c in chain):  # whatever the dates
            top = max(matching, key=lambda c: _semver(c.model.version))
            cycle = " -> ".join(
                [
                    *(f"{c.model.id}@{c.model.version}" for c in chain),
                    f"{base_id}@{top.model.version}",
                ]
            )
            return None, [
                Problem("pack.extends_cycle", f"extends goes round in a cycle: {cycle}", where)
            ]
        if not candidates:
            known = (
                ", ".join(
                    sorted(
                        f"{c.model.id}@{c.model.version}" for c in every if c.model.id == base_id
                    )
                )
                or "none"
            )
            kind = "published " if child.model.status == "published" else ""
            return None, [
                Problem(
                    "pack.missing_base",
                    f"no {kind}version of `{base_id}` matches {wanted}{by} (versions: {known})",
                    where,
                )
            ]
        base = max(candidates, key=lambda c: _semver(c.model.version))
        chain.insert(0, base)
    return chain, []


def _satisfies(version: str, wanted: str) -> bool:
    """Version ranges: 1.2.3 exactly; ^1 or ^1.2 (same major); ~1.2 (same major and minor)."""
    have = _semver(version)
    if wanted[0] in "^~":
        parts = tuple(int(p) for p in wanted[1:].split("."))
        fixed = 1 if wanted[0] == "^" else min(2, len(parts))
        return have[:fixed] == parts[:fixed] and have[: len(parts)] >= parts
    return version == wanted


def _read_examples(pack: Versioned, source: RuleSource) -> tuple[Versioned, list[Problem]]:
    """Read the facts files examples name, relative to the file that holds the example."""
    problems: list[Problem] = []
    pack = dataclasses.replace(pack, examples=_read_cases(pack.examples, source, problems))
    if isinstance(pack, CompiledPack) and pack.claims is not None:  # countries have none
        cases = _read_cases(pack.claims.examples, source, problems)
        pack = dataclasses.replace(pack, claims=dataclasses.replace(pack.claims, examples=cases))
    return pack, problems


def _read_cases(
    cases: tuple[Any, ...], source: RuleSource, problems: list[Problem]
) -> tuple[Any, ...]:
    done = []
    for case in cases:
        if isinstance(case.facts, str):
            target = posixpath.normpath(
                posixpath.join(posixpath.dirname(case.where.file), case.facts)
            )
            where = case.where.at("shipment")
            if target.startswith("../"):
                problems.append(
                    Problem("example.path", f"{case.facts} is outside the rule repository", where)
                )
                continue
            try:
                text = source.read(target).decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(
                    Problem(
                        "example.path",
                        f"cannot read {target}: {getattr(exc, 'strerror', None) or exc}",
                        where,
                    )
                )
                continue
            case = dataclasses.replace(case, facts=text, facts_name=target)
        done.append(case)
    return tuple(done)


def _kind_of(path: str) -> str | None:
    if _POLICY_PATH.fullmatch(path):
        return "policy"
    if _COUNTRY_PATH.fullmatch(path):
        return "country"
    return REFERENCE_FILES.get(path) or OPTIONAL_REFERENCE_FILES.get(path)


def _check_versioned_path(
    file_id: str, version: str, loaded: LoadedYaml, path: str, pattern: re.Pattern[str]
) -> list[Problem]:
    match = pattern.fullmatch(path)
    assert match is not None
    folder, stem = match.groups()
    problems = []
    if folder != file_id:
        problems.append(
            Problem(
                "pack.path",
                f"id `{file_id}` does not match its folder {path.rsplit('/', 2)[0]}/{folder}/",
                loaded.locate("id"),
            )
        )
    if stem != version:
        problems.append(
            Problem(
                "pack.path",
                f"version {version} does not match the file name {stem}.yaml",
                loaded.locate("version"),
            )
        )
    return problems


def _semver(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _overlaps(versions: tuple[Versioned, ...]) -> list[Problem]:
    published = sorted(
        (p for p in versions if p.status == "published"), key=lambda p: p.effective_from
    )
    problems = []
    for earlier, later in itertools.pairwise(published):
        if earlier.effective_to is None or earlier.effective_to > later.effective_from:
            problems.append(
                Problem(
                    "pack.overlap",
                    f"published {later.ref} ({later.window()}) overlaps "
                    f"{earlier.ref} ({earlier.window()}) in {earlier.source}; end the earlier "
                    "version with effective_to",
                    later.where.at("effective_from"),
                )
            )
    return problems
