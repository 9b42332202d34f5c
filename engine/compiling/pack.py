"""Compile a validated policy file into an immutable `CompiledPack`.

In: a `PolicyFile` model, its `LoadedYaml` (for line marks), its sha256 and source path.
Out: a `CompiledPack` with every formula compiled to a closure and every rule's
condition compiled to durable_rules JSON, or every meaning problem: unknown names,
formulas used before they are defined, type errors, rules that look at what their
phase cannot see yet.

Rules run in two phases. `exclude_charge` rules decide which charges count, so they
run before the formulas and may only read facts, the charge and parameters. Every
other rule runs after the formulas and may read everything.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
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
from engine.errors import Location, Problem
from engine.evaluating.matcher import MatchRuleset
from engine.loading.yamlfile import LoadedYaml
from engine.names import DECLARED_DUTIES, DUTY_RULES, RESERVED, SCOPES, SHIPMENT, charge_symbols
from engine.schema.models import Example, Parameter, PolicyFile, ResultSpec

CHARGE_PHASE, DECISION_PHASE = "charges", "decision"


@dataclass(frozen=True)
class CompiledRule:
    id: str
    scope: str  # "shipment" | "charge" | "goods"
    phase: str
    effect: str  # "exclude_charge" | "refer" | "decline" | "flag"
    flag: str | None
    reason: str
    when: str
    condition: Condition
    where: Location


@dataclass(frozen=True)
class CompiledExample:
    example: Example
    where: Location
    facts: Mapping[str, Any] | str  # inline facts, or the text of the file it names
    facts_name: str  # where the facts came from, for error messages


@dataclass(frozen=True)
class CompiledPack:
    id: str
    version: str
    status: str
    effective_from: datetime.date
    effective_to: datetime.date | None
    title: str
    source: str
    sha256: str
    parameters: Mapping[str, Any]
    charge_types: Mapping[str, str | None]  # type -> group, None when excluded
    charge_sources: Mapping[str, Location]  # type -> its line in charge_types
    rounding_mode: str
    formulas: tuple[tuple[str, Formula], ...]
    rules: tuple[CompiledRule, ...]
    rulesets: Mapping[str, MatchRuleset]  # phase -> ruleset
    fields: Mapping[str, tuple[FieldSpec, ...]]  # phase -> fields its facts need
    result: ResultSpec
    examples: tuple[CompiledExample, ...]
    where: Location

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def in_effect(self, day: datetime.date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)

    def window(self) -> str:
        end = self.effective_to.isoformat() if self.effective_to else "open-ended"
        return f"{self.effective_from.isoformat()} to {end}"


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


def compile_policy(
    model: PolicyFile, loaded: LoadedYaml, sha256: str, functions: Mapping[str, Function]
) -> tuple[CompiledPack | None, list[Problem]]:
    problems: list[Problem] = []
    symbols: dict[str, Symbol] = {**SHIPMENT, **DECLARED_DUTIES, **DUTY_RULES}

    groups = sorted({t.group for t in model.charge_types.values() if t.group})
    for name in groups:
        if name in model.charge_types:
            problems.append(
                Problem(
                    "pack.name_clash",
                    f"charge group `{name}` has the name of "
                    "a charge type; charges.{name} would be ambiguous",
                    loaded.locate(f"charge_types.{name}", key=True),
                )
            )
    symbols.update(charge_symbols(groups, list(model.charge_types)))

    parameters: dict[str, Any] = {}
    for name, spec in model.parameters.items():
        where = loaded.locate(f"parameters.{name}", key=True)
        if name in RESERVED:
            problems.append(Problem("pack.reserved_name", f"`{name}` is reserved", where))
            continue
        value = spec.value if isinstance(spec, Parameter) else spec
        value = tuple(value) if isinstance(value, list) else value
        parameters[name] = value
        symbols[name] = _parameter_symbol(value, where)

    formulas: list[tuple[str, Formula]] = []
    seen: set[str] = set()
    for name, text in model.formulas.items():
        where = loaded.locate(f"formulas.{name}")
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
                    loaded.locate(f"formulas.{name}", key=True),
                )
            )
            continue
        expr, errs = parse(text, where)
        if expr is None:
            problems.extend(errs)
            continue
        used = [n.dotted for n in names_in(expr)]
        later = [n for n in used if n in model.formulas and (n not in seen or n == name)]
        if later:
            problems.append(
                Problem(
                    "pack.formula_order",
                    f"formula `{name}` uses `{later[0]}` before it is defined; "
                    "formulas are evaluated top to bottom",
                    where,
                )
            )
            continue
        formula, errs = compile_formula(expr, text, where, symbols, functions, model.rounding.mode)
        if formula is None:
            problems.extend(errs)
            continue
        formulas.append((name, formula))
        symbols[name] = Symbol(formula.type, where=where)

    formula_names = dict(formulas)
    for field_name, names in (
        ("total_insured_value", [model.result.total_insured_value]),
        ("components", model.result.components),
    ):
        for index, name in enumerate(names):
            path = (
                "result.total_insured_value"
                if field_name == "total_insured_value"
                else f"result.components[{index}]"
            )
            if name not in model.formulas:
                problems.append(
                    Problem(
                        "pack.unknown_formula",
                        f"`{name}` is not a formula of this pack",
                        loaded.locate(path),
                    )
                )
            elif name in formula_names and formula_names[name].type != NUMBER:
                problems.append(
                    Problem(
                        "pack.not_a_number",
                        f"`{name}` is a {formula_names[name].type}, results need numbers",
                        loaded.locate(path),
                    )
                )

    rules = _compile_rules(model, loaded, symbols, parameters, formula_names, problems)
    rulesets, fields = _rulesets(model, sha256, rules)

    if problems:
        return None, problems
    pack = CompiledPack(
        id=model.id,
        version=model.version,
        status=model.status,
        effective_from=model.effective_from,
        effective_to=model.effective_to,
        title=model.title,
        source=loaded.file,
        sha256=sha256,
        parameters=parameters,
        charge_types={name: t.group for name, t in model.charge_types.items()},
        charge_sources={
            name: loaded.locate(f"charge_types.{name}", key=True) for name in model.charge_types
        },
        rounding_mode=model.rounding.mode,
        formulas=tuple(formulas),
        rules=tuple(rules),
        rulesets=rulesets,
        fields=fields,
        result=model.result,
        examples=tuple(
            CompiledExample(
                ex, loaded.locate(f"examples[{i}]"), ex.shipment, f"{loaded.file} examples[{i}]"
            )
            for i, ex in enumerate(model.examples)
        ),
        where=loaded.locate(""),
    )
    return pack, []


def _compile_rules(
    model: PolicyFile,
    loaded: LoadedYaml,
    symbols: Mapping[str, Symbol],
    parameters: Mapping[str, Any],
    formulas: Mapping[str, Formula],
    problems: list[Problem],
) -> list[CompiledRule]:
    rules: list[CompiledRule] = []
    # Static exclusions from charge_types become rules too, so one mechanism (and one
    # trace format) explains every excluded charge.
    for name, treatment in model.charge_types.items():
        if treatment.excluded is None:
            continue
        where = loaded.locate(f"charge_types.{name}", key=True)
        text = f'charge.type == "{name}"'
        expr, _ = parse(text, where)
        assert expr is not None
        condition, errs = compile_condition(expr, where, "charge", {**symbols, **SCOPES["charge"]})
        assert condition is not None and not errs
        rules.append(
            CompiledRule(
                f"charge_types.{name}",
                "charge",
                CHARGE_PHASE,
                "exclude_charge",
                None,
                treatment.excluded,
                text,
                condition,
                where,
            )
        )

    seen: dict[str, Location] = {}
    for index, rule in enumerate(model.rules):
        where = loaded.locate(f"rules[{index}].when")
        if rule.id in seen:
            problems.append(
                Problem(
                    "pack.duplicate_rule",
                    f"rule id `{rule.id}` is already used at line {seen[rule.id].line}",
                    loaded.locate(f"rules[{index}].id"),
                )
            )
            continue
        seen[rule.id] = loaded.locate(f"rules[{index}].id")
        scope = rule.for_
        phase = CHARGE_PHASE if rule.exclude_charge else DECISION_PHASE
        visible = {**symbols, **SCOPES[scope]}
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
                        "counted; an exclude_charge rule can only read facts, the charge and "
                        "parameters",
                        where,
                    )
                )
                continue
        condition, errs = compile_condition(expr, where, scope, visible)
        if condition is None:
            problems.extend(errs)
            continue
        effect = "exclude_charge" if rule.exclude_charge else rule.decide or "flag"
        rules.append(
            CompiledRule(
                rule.id, scope, phase, effect, rule.flag, rule.reason, rule.when, condition, where
            )
        )
    return rules


def _needs_formulas(name: Name, formulas: Mapping[str, Formula]) -> bool:
    return name.dotted in formulas or name.parts[0] == "charges"


def _rulesets(
    model: PolicyFile, sha256: str, rules: list[CompiledRule]
) -> tuple[dict[str, MatchRuleset], dict[str, tuple[FieldSpec, ...]]]:
    rulesets: dict[str, MatchRuleset] = {}
    fields: dict[str, tuple[FieldSpec, ...]] = {}
    for phase in (CHARGE_PHASE, DECISION_PHASE):
        chosen = [r for r in rules if r.phase == phase]
        pairs = tuple((r.id, r.condition.json) for r in chosen)
        # durable_rules can never replace a ruleset, so the name carries the content.
        digest = hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()[:16]
        name = f"{model.id}@{model.version}#{sha256[:12]}.{digest}.{phase}"
        rulesets[phase] = MatchRuleset(name, pairs)
        specs: dict[str, FieldSpec] = {}
        for rule in chosen:
            for spec in rule.condition.fields:
                specs.setdefault(spec.key, spec)
        fields[phase] = tuple(specs.values())
    return rulesets, fields
