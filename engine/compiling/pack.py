"""Compile validated policy files into an immutable `CompiledPack`.

In: the layers of a pack, base first: every file it `extends`, then the file itself,
each a `PolicyFile` model with its `LoadedYaml` (for line marks) and sha256. Out: a
`CompiledPack` whose formulas are closures, whose rules' conditions are closures over
the typed environment and checked durable_rules JSON (one `PhasePlan` per phase), whose
rate tables and claim formulas are ready to run, or every meaning problem: unknown names,
formulas used before they are defined, type errors, rules that look at what their phase
cannot see yet, conditions a matcher backend would refuse, tables with unknown keys,
codes that are not values of their field (`vocabulary`), names a reason does not have
(`reasons`).

Layers merge section by section: a later file overrides parameters, charge types,
formulas, tables and rules (by name or id) and adds new ones; rounding, result and
claims are taken whole from the last file that gives them. Every item keeps the file
and line it came from, so traces cite the file that really holds the text.

Rules run in two phases. `exclude_charge` and `reject_charge` rules decide which
charges count, so they run before the formulas and may only read facts, the charge
and parameters. Every other rule runs after the formulas and may read everything.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.compiling.conditions import Condition, FieldSpec, compile_condition
from engine.compiling.expressions import Name, names_in, parse
from engine.compiling.formulas import (
    ANY,
    BOOL,
    LIST,
    NUMBER,
    TEXT,
    Formula,
    Function,
    Symbol,
    compile_formula,
)
from engine.compiling.reasons import ReasonTemplate, compile_reason
from engine.compiling.tables import CompiledTable, compile_table
from engine.compiling.versioned import EffectiveWindow, ExampleCase
from engine.compiling.vocabulary import LayerRegions, Vocabulary, check_codes, read_synonyms
from engine.errors import Location, Problem
from engine.loading.yamlfile import LoadedYaml
from engine.matching.grammar import MatchRuleset, prepare
from engine.matching.plan import PhasePlan
from engine.names import (
    DECLARED_DUTIES,
    DUTY_RULES,
    LOSS,
    RESERVED,
    SCOPES,
    SHIPMENT,
    charge_symbols,
)
from engine.result import FileRef as PolicyFileRef
from engine.result import FunctionRef, PolicyRef
from engine.schema.models import (
    ChargeType,
    ClaimExample,
    ClaimSpec,
    Example,
    Parameter,
    PolicyFile,
    ResultSpec,
    Rule,
    Table,
)

__all__ = ["CompiledPack", "CompiledRule", "CompiledTable", "Layer", "compile_policy"]

CompiledExample = ExampleCase[Example]
CompiledClaimExample = ExampleCase[ClaimExample]

CHARGE_PHASE, DECISION_PHASE = "charges", "decision"
REST_OF_WORLD = "rest_of_world"


@dataclass(frozen=True)
class Layer:
    """One file of a pack: the pack itself or a pack it extends."""

    model: PolicyFile
    loaded: LoadedYaml
    sha256: str
    # Files the pack's tables read their rows from (`rows_from`), path -> bytes.
    attachments: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class CompiledRule:
    id: str
    scope: str  # "shipment" | "charge" | "goods"
    phase: str
    effect: str  # "exclude_charge" | "reject_charge" | "refer" | "decline" | "flag"
    flag: str | None
    reason: str
    when: str
    condition: Condition
    where: Location
    citation: str | None = None  # the rule's `source:`, the regulation it applies
    template: ReasonTemplate | None = None  # when the reason names formulas

    def reason_in(self, values: Mapping[str, Any]) -> str:
        """The reason with the figures of one valuation written in."""
        return self.reason if self.template is None else self.template.render(values)

    @property
    def source(self) -> str:
        """`path:line` of the rule, as results cite it (computed once, not per valuation)."""
        cached: str | None = self.__dict__.get("_source")
        if cached is None:
            cached = self.where.source
            object.__setattr__(self, "_source", cached)
        return cached


@dataclass(frozen=True)
class CompiledClaims:
    formulas: tuple[tuple[str, Formula], ...]
    result: ClaimSpec
    examples: tuple[CompiledClaimExample, ...]
    where: Location


@dataclass(frozen=True)
class FileRef:
    id: str
    version: str
    sha256: str
    source: str


@dataclass(frozen=True)
class CompiledPack(EffectiveWindow):
    id: str
    version: str
    status: str
    effective_from: datetime.date
    effective_to: datetime.date | None
    title: str
    source: str
    sha256: str  # of the file; or, for a pack that extends others, of all its files
    files: tuple[FileRef, ...]  # every file of the resolved pack, base first
    parameters: Mapping[str, Any]
    charge_types: Mapping[str, str | None]  # type -> group, None when excluded
    charge_sources: Mapping[str, Location]  # type -> its line in charge_types
    rounding_mode: str
    formulas: tuple[tuple[str, Formula], ...]
    tables: Mapping[str, CompiledTable]
    rules: tuple[CompiledRule, ...]
    plans: Mapping[str, PhasePlan]  # phase -> its rules, ready for every matcher
    result: ResultSpec
    claims: CompiledClaims | None
    functions_used: tuple[tuple[str, str], ...]  # custom functions (name, version)
    examples: tuple[CompiledExample, ...]
    where: Location
    policy: PolicyRef  # what every result of this pack says about it, built once
    charge_source_texts: Mapping[str, str]  # type -> `path:line` of its charge_types entry
    # Every function its formulas may call (built-in, custom, and its own `region`): the
    # straight-line evaluator (engine.evaluating.straightline) calls them directly.
    functions: Mapping[str, Function] = field(default_factory=dict, compare=False, repr=False)

    def warnings(self) -> list[Problem]:
        """What `tiv validate` warns about in this pack's own tables (a base's tables warn
        with the base): rows never chosen, overlapping rows, gaps. Computed on demand."""
        return [
            warning
            for table in self.tables.values()
            if table.where.file == self.source
            for warning in table.warnings()
        ]


@dataclass
class _Merged:
    """The sections of all layers merged, each item with the layer it came from."""

    parameters: dict[str, tuple[Any, LoadedYaml]] = field(default_factory=dict)
    charge_types: dict[str, tuple[ChargeType, LoadedYaml]] = field(default_factory=dict)
    formulas: dict[str, tuple[str, LoadedYaml]] = field(default_factory=dict)
    tables: dict[str, tuple[Table, LoadedYaml, Mapping[str, bytes]]] = field(default_factory=dict)
    rules: dict[str, tuple[Rule, int, LoadedYaml]] = field(default_factory=dict)
    regions: dict[str, list[str]] = field(default_factory=dict)
    rounding: tuple[str, LoadedYaml] | None = None
    result: tuple[ResultSpec, LoadedYaml] | None = None
    claims: tuple[Any, LoadedYaml] | None = None


def _merge(layers: list[Layer], problems: list[Problem]) -> _Merged:
    merged = _Merged()
    for layer in layers:
        model, loaded = layer.model, layer.loaded
        for name, spec in model.parameters.items():
            merged.parameters[name] = (spec, loaded)
        for name, treatment in (model.charge_types or {}).items():
            merged.charge_types[name] = (treatment, loaded)
        for name, text in model.formulas.items():
            merged.formulas[name] = (text, loaded)  # an override keeps the base's position
        for name, table in model.tables.items():
            merged.tables[name] = (table, loaded, layer.attachments)
        seen: dict[str, int] = {}
        for index, rule in enumerate(model.rules):
            if rule.id in seen:
                problems.append(
                    Problem(
                        "pack.duplicate_rule",
                        f"rule id `{rule.id}` is already used at line {seen[rule.id]}",
                        loaded.locate(f"rules[{index}].id"),
                    )
                )
                continue
            seen[rule.id] = loaded.locate(f"rules[{index}].id").line
            merged.rules[rule.id] = (rule, index, loaded)
        merged.regions.update(model.regions or {})
        if model.rounding is not None:
            merged.rounding = (model.rounding.mode, loaded)
        if model.result is not None:
            merged.result = (model.result, loaded)
        if model.claims is not None:
            merged.claims = (model.claims, loaded)
    return merged


def _parameter_symbol(value: Any, where: Location) -> Symbol:
    if isinstance(value, bool):
        return Symbol(BOOL, where=where, constant=value)
    if isinstance(value, Decimal):
        return Symbol(NUMBER, where=where, constant=value)
    if isinstance(value, str):
        return Symbol(TEXT, where=where, constant=value)
    items = tuple(value)
    element = NUMBER if items and isinstance(items[0], Decimal) else TEXT
    return Symbol(LIST, element=element, where=where, constant=items)


def _region_function(regions: Mapping[str, list[str]]) -> Function:
    lookup = {country: region for region, countries in regions.items() for country in countries}

    def check(kinds: list[str]) -> str:
        if kinds not in ([TEXT], [ANY]):
            raise TypeError("takes one country code")
        return TEXT

    return Function(
        "region",
        check,
        lambda country: lookup.get(country, REST_OF_WORLD),
        signature=f"region(country): the pack's region of a country, or {REST_OF_WORLD}",
    )


def compile_policy(
    layers: list[Layer], functions: Mapping[str, Function], vocabulary: Vocabulary | None = None
) -> tuple[CompiledPack | None, list[Problem]]:
    problems: list[Problem] = []
    own = layers[-1]
    merged = _merge(layers, problems)
    if merged.result is None or not merged.charge_types or not merged.formulas:
        problems.append(
            Problem(
                "pack.incomplete",
                "the resolved pack has no result, charge_types or formulas",
                own.loaded.locate(""),
            )
        )
        return None, problems
    if vocabulary is not None:
        # Before anything compiles: every backend and the trace read the rewritten texts.
        regions = [LayerRegions(layer.model.regions or {}, layer.loaded) for layer in layers]
        read_synonyms(merged, regions, vocabulary)
    result, result_loaded = merged.result
    rounding_mode = merged.rounding[0] if merged.rounding else "half_up"
    table: dict[str, Function] = {**functions, "region": _region_function(merged.regions)}

    symbols: dict[str, Symbol] = {**SHIPMENT, **DECLARED_DUTIES, **DUTY_RULES}
    charge_types = {name: t for name, (t, _) in merged.charge_types.items()}
    groups = sorted({t.group for t in charge_types.values() if t.group})
    for name in groups:
        if name in charge_types:
            problems.append(
                Problem(
                    "pack.name_clash",
                    f"charge group `{name}` has the name of "
                    f"a charge type; charges.{name} would be ambiguous",
                    merged.charge_types[name][1].locate(f"charge_types.{name}", key=True),
                )
            )
    symbols.update(charge_symbols(groups, list(charge_types)))

    parameters: dict[str, Any] = {}
    for name, (spec, loaded) in merged.parameters.items():
        where = loaded.locate(f"parameters.{name}", key=True)
        if name in RESERVED:
            problems.append(Problem("pack.reserved_name", f"`{name}` is reserved", where))
            continue
        value = spec.value if isinstance(spec, Parameter) else spec
        value = tuple(value) if isinstance(value, list) else value
        parameters[name] = value
        symbols[name] = _parameter_symbol(value, where)

    tables = _compile_tables(merged, problems)
    formulas = _compile_formulas(
        merged.formulas, symbols, table, rounding_mode, tables, set(parameters), problems
    )
    formula_map = dict(formulas)
    _check_result(result, result_loaded, formula_map, merged.formulas, problems)
    rules = _compile_rules(
        merged, symbols, formula_map, problems, table, tables, rounding_mode, parameters
    )
    claims = _compile_claims(merged, symbols, table, rounding_mode, tables, problems)
    functions_used = _custom_functions_used(
        [f for _, f in formulas] + ([f for _, f in claims.formulas] if claims else []), functions
    )

    # The files a table reads its rows from are part of the pack: its sha256 covers them.
    attached = [
        f"{path} {hashlib.sha256(data).hexdigest()}"
        for layer in layers
        for path, data in sorted(layer.attachments.items())
    ]
    sha256 = (
        own.sha256
        if len(layers) == 1 and not attached
        else hashlib.sha256(
            "\n".join(
                [f"{layer.loaded.file} {layer.sha256}" for layer in layers] + attached
            ).encode()
        ).hexdigest()
    )
    plans = _plans(own.model, sha256, rules, own.loaded.locate(""), problems)
    if vocabulary is not None:
        regions = [LayerRegions(layer.model.regions or {}, layer.loaded) for layer in layers]
        problems.extend(check_codes(merged, regions, vocabulary, tables))
    if problems:
        return None, problems
    model = own.model
    pack = CompiledPack(
        id=model.id,
        version=model.version,
        status=model.status,
        effective_from=model.effective_from,
        effective_to=model.effective_to,
        title=model.title,
        source=own.loaded.file,
        sha256=sha256,
        files=tuple(
            FileRef(layer.model.id, layer.model.version, layer.sha256, layer.loaded.file)
            for layer in layers
        ),
        parameters=parameters,
        charge_types={name: t.group for name, t in charge_types.items()},
        charge_sources={
            name: loaded.locate(f"charge_types.{name}", key=True)
            for name, (_, loaded) in merged.charge_types.items()
        },
        rounding_mode=rounding_mode,
        formulas=tuple(formulas),
        tables=tables,
        rules=tuple(rules),
        plans=plans,
        result=result,
        claims=claims,
        functions_used=functions_used,
        examples=tuple(
            CompiledExample(
                ex,
                own.loaded.locate(f"examples[{i}]"),
                ex.shipment,
                f"{own.loaded.file} examples[{i}]",
            )
            for i, ex in enumerate(model.examples)
        ),
        where=own.loaded.locate(""),
        charge_source_texts={
            name: loaded.locate(f"charge_types.{name}", key=True).source
            for name, (_, loaded) in merged.charge_types.items()
        },
        policy=PolicyRef(
            id=model.id,
            version=model.version,
            status=model.status,
            title=model.title,
            sha256=sha256,
            source=own.loaded.file,
            files=[
                PolicyFileRef(
                    id=layer.model.id,
                    version=layer.model.version,
                    sha256=layer.sha256,
                    source=layer.loaded.file,
                )
                for layer in layers
            ],
            functions=[FunctionRef(name=n, version=v) for n, v in functions_used],
        ),
        functions=table,
    )
    return pack, []


def _compile_tables(merged: _Merged, problems: list[Problem]) -> dict[str, CompiledTable]:
    tables = {}
    for name, (spec, loaded, attachments) in merged.tables.items():
        table, errs = compile_table(name, spec, loaded, attachments)
        problems.extend(errs)
        tables[name] = table
    return tables


def _compile_formulas(
    texts: Mapping[str, tuple[str, LoadedYaml]],
    symbols: dict[str, Symbol],
    functions: Mapping[str, Function],
    rounding_mode: str,
    tables: Mapping[str, CompiledTable],
    parameters: set[str],
    problems: list[Problem],
    section: str = "formulas",
) -> list[tuple[str, Formula]]:
    formulas: list[tuple[str, Formula]] = []
    seen: set[str] = set()
    for name, (text, loaded) in texts.items():
        where = loaded.locate(f"{section}.{name}")
        seen.add(name)
        # A formula that fails still counts as defined (of unknown type), so the
        # formulas using it report their own problems, not a cascade of this one.
        symbols[name] = Symbol(ANY, where=where)
        if name in RESERVED or name in parameters:
            what = "a parameter" if name in parameters else "reserved"
            problems.append(
                Problem(
                    "pack.name_clash",
                    f"formula `{name}` clashes: the name is {what}",
                    loaded.locate(f"{section}.{name}", key=True),
                )
            )
            continue
        expr, errs = parse(text, where)
        if expr is None:
            problems.extend(errs)
            continue
        used = [n.dotted for n in names_in(expr)]
        later = [n for n in used if n in texts and (n not in seen or n == name)]
        if later:
            problems.append(
                Problem(
                    "pack.formula_order",
                    f"formula `{name}` uses `{later[0]}` "
                    "before it is defined; formulas are evaluated top to bottom",
                    where,
                )
            )
            continue
        formula, errs = compile_formula(
            expr, text, where, symbols, functions, rounding_mode, tables
        )
        if formula is None:
            problems.extend(errs)
            continue
        formulas.append((name, formula))
        symbols[name] = Symbol(formula.type, where=where)
    return formulas


def _check_result(
    result: ResultSpec,
    loaded: LoadedYaml,
    formulas: Mapping[str, Formula],
    texts: Mapping[str, Any],
    problems: list[Problem],
) -> None:
    named = [("result.total_insured_value", result.total_insured_value)]
    named += [(f"result.components[{i}]", name) for i, name in enumerate(result.components)]
    named += [
        (f"result.{key}", getattr(result, key))
        for key in ("premium", "deductible")
        if getattr(result, key)
    ]
    named += [(f"result.figures[{i}]", name) for i, name in enumerate(result.figures)]
    for path, name in named:
        if name not in texts:
            problems.append(
                Problem(
                    "pack.unknown_formula",
                    f"`{name}` is not a formula of this pack",
                    loaded.locate(path),
                )
            )
        elif name in formulas and formulas[name].type not in (NUMBER, ANY):
            problems.append(
                Problem(
                    "pack.not_a_number",
                    f"`{name}` is a {formulas[name].type}, results need numbers",
                    loaded.locate(path),
                )
            )


def _compile_rules(
    merged: _Merged,
    symbols: Mapping[str, Symbol],
    formulas: Mapping[str, Formula],
    problems: list[Problem],
    functions: Mapping[str, Function],
    tables: Mapping[str, CompiledTable],
    rounding_mode: str,
    parameters: Mapping[str, Any],
) -> list[CompiledRule]:
    rules: list[CompiledRule] = []
    # Static exclusions from charge_types become rules too, so one mechanism (and one
    # trace format) explains every excluded charge.
    for name, (treatment, loaded) in merged.charge_types.items():
        if treatment.excluded is None:
            continue
        where = loaded.locate(f"charge_types.{name}", key=True)
        text = f'charge.type == "{name}"'
        expr, _ = parse(text, where)
        assert expr is not None
        condition, errs = compile_condition(expr, where, "charge", {**symbols, **SCOPES["charge"]})
        assert condition is not None and not errs
        reason, _, errs = compile_reason(
            treatment.excluded,
            loaded.locate(f"charge_types.{name}.excluded"),
            parameters,
            formulas,
            formulas_allowed=False,
        )
        problems.extend(errs)
        rules.append(
            CompiledRule(
                f"charge_types.{name}",
                "charge",
                CHARGE_PHASE,
                "exclude_charge",
                None,
                reason,
                text,
                condition,
                where,
            )
        )

    for rule, index, loaded in merged.rules.values():
        where = loaded.locate(f"rules[{index}].when")
        scope = rule.for_
        charge_rule = bool(rule.exclude_charge or rule.reject_charge)
        phase = CHARGE_PHASE if charge_rule else DECISION_PHASE
        expr, errs = parse(rule.when, where)
        if expr is None:
            problems.extend(errs)
            continue
        if phase == CHARGE_PHASE:
            late = [n for n in names_in(expr) if _needs_formulas(n, formulas)]
            if late:
                problems.append(
                    Problem(
                        "pack.rule_phase",
                        f"`{late[0].dotted}` is computed after charges are "
                        "counted; a charge rule can only read facts, the charge and parameters",
                        where,
                    )
                )
                continue
        condition, errs = compile_condition(
            expr, where, scope, {**symbols, **SCOPES[scope]}, functions, tables, rounding_mode
        )
        if condition is None:
            problems.extend(errs)
            continue
        refused = _refused(rule.id, condition)
        if refused:
            problems.append(Problem("condition.limit", refused, where))
            continue
        reason, template, errs = compile_reason(
            rule.reason,
            loaded.locate(f"rules[{index}].reason"),
            parameters,
            formulas,
            formulas_allowed=phase != CHARGE_PHASE,
        )
        if errs:
            problems.extend(errs)
            continue
        effect = (
            "exclude_charge"
            if rule.exclude_charge
            else "reject_charge"
            if rule.reject_charge
            else rule.decide or "flag"
        )
        rules.append(
            CompiledRule(
                rule.id,
                scope,
                phase,
                effect,
                rule.flag,
                reason,
                rule.when,
                condition,
                where,
                rule.source,
                template,
            )
        )
    return rules


def _compile_claims(
    merged: _Merged,
    symbols: dict[str, Symbol],
    functions: Mapping[str, Function],
    rounding_mode: str,
    tables: Mapping[str, CompiledTable],
    problems: list[Problem],
) -> CompiledClaims | None:
    if merged.claims is None:
        return None
    claims, loaded = merged.claims
    visible = {**symbols, **LOSS}
    texts = {name: (text, loaded) for name, text in claims.formulas.items()}
    formulas = _compile_formulas(
        texts, visible, functions, rounding_mode, tables, set(), problems, section="claims.formulas"
    )
    names = dict(formulas)
    spec = claims.result
    for path, name in [
        ("claims.result.indemnity", spec.indemnity),
        *((f"claims.result.components[{i}]", n) for i, n in enumerate(spec.components)),
    ]:
        if name not in texts:
            problems.append(
                Problem(
                    "pack.unknown_formula", f"`{name}` is not a claims formula", loaded.locate(path)
                )
            )
        elif name in names and names[name].type != NUMBER:
            problems.append(
                Problem("pack.not_a_number", f"`{name}` must be a number", loaded.locate(path))
            )
    return CompiledClaims(
        tuple(formulas),
        spec,
        tuple(
            CompiledClaimExample(
                ex,
                loaded.locate(f"claims.examples[{i}]"),
                ex.shipment,
                f"{loaded.file} claims.examples[{i}]",
            )
            for i, ex in enumerate(claims.examples)
        ),
        loaded.locate("claims"),
    )


def _custom_functions_used(
    formulas: list[Formula], functions: Mapping[str, Function]
) -> tuple[tuple[str, str], ...]:
    used: dict[str, str] = {}
    for formula in formulas:
        for name in formula.calls:
            function = functions.get(name)
            if function is not None and function.version:
                used[name] = function.version
    return tuple(sorted(used.items()))


def _needs_formulas(name: Name, formulas: Mapping[str, Formula]) -> bool:
    return name.dotted in formulas or name.parts[0] == "charges"


def _refused(rule_id: str, condition: Condition) -> str | None:
    """Why a matcher backend would refuse this condition (grammar, limits), or None."""
    try:
        prepare(MatchRuleset(rule_id, ((rule_id, condition.json),)))
    except (ValueError, TypeError) as exc:
        reason = str(exc).split(f"rule {rule_id}: ", 1)[-1]
        return f"the durable_rules matcher cannot run this condition: {reason}"
    return None


def _plans(
    model: PolicyFile,
    sha256: str,
    rules: list[CompiledRule],
    where: Location,
    problems: list[Problem],
) -> dict[str, PhasePlan]:
    plans: dict[str, PhasePlan] = {}
    for phase in (CHARGE_PHASE, DECISION_PHASE):
        chosen = [r for r in rules if r.phase == phase]
        pairs = tuple((r.id, r.condition.json) for r in chosen)
        # durable_rules can never replace a ruleset, so the name carries the content.
        digest = hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()[:16]
        name = f"{model.id}@{model.version}#{sha256[:12]}.{digest}.{phase}"
        ruleset = MatchRuleset(name, pairs)
        try:
            prepared = prepare(ruleset)
        except (ValueError, TypeError) as exc:
            problems.append(Problem("condition.limit", str(exc), where))
            continue
        specs: dict[str, FieldSpec] = {}
        for rule in chosen:
            for spec in rule.condition.fields:
                specs.setdefault(spec.key, spec)
        fields = tuple(specs.values())
        plans[phase] = PhasePlan(
            phase=phase,
            rule_ids=tuple(r.id for r in chosen),
            scopes=tuple(r.scope for r in chosen),
            tests=tuple(r.condition.test for r in chosen),
            ruleset=ruleset,
            prepared=prepared,
            fields=fields,
            ordered_text=frozenset(
                f.key for f in fields if f.encoding == "text" and f.key in prepared.ordered_fields
            ),
            text_keys=tuple(f.key for f in fields if f.encoding == "text"),
            scope_fields={
                scope: tuple(
                    dict.fromkeys(
                        spec for r in chosen if r.scope == scope for spec in r.condition.fields
                    )
                )
                for scope in dict.fromkeys(r.scope for r in chosen)
            },
        )
    return plans
