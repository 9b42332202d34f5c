"""Compile a validated country rule file into an immutable `CompiledCountry`.

In: a `CountryFile` model, its `LoadedYaml` (for line marks), sha256 and path. Out: a
`CompiledCountry` with duty rates ordered longest prefix first, tax and fee bases
compiled into formulas, and the line of every figure, or every meaning problem
(duplicate prefixes or ids, unknown names in a base, a CIF basis without an insurance
rate).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.compiling.expressions import parse
from engine.compiling.formulas import BUILTINS, NUMBER, Formula, Symbol, compile_formula
from engine.compiling.versioned import EffectiveWindow, ExampleCase
from engine.errors import Location, Problem
from engine.loading.yamlfile import LoadedYaml
from engine.schema.models import (
    CountryExample,
    CountryFile,
    Fee,
    Tax,
)

# Names a tax or fee base may read; taxes may also read earlier taxes by id.
BASE_NAMES = ("customs_value", "fob", "freight", "insurance", "cif", "duty", "fees")


@dataclass(frozen=True)
class Located:
    """A figure from the file and the line it is written on."""

    item: Any
    where: Location


@dataclass(frozen=True)
class Charged:
    """A tax or fee with its base compiled."""

    item: Tax | Fee
    base: Formula
    where: Location


CountryExampleCase = ExampleCase[CountryExample]


@dataclass(frozen=True)
class CompiledCountry(EffectiveWindow):
    id: str
    version: str
    status: str
    effective_from: datetime.date
    effective_to: datetime.date | None
    title: str
    source: str
    sha256: str
    currency: str
    customs_union: str | None
    basis: Located | None  # ValuationBasis
    default_rate: Located | None  # the Duty section: default_rate and default_source
    rates: tuple[Located, ...]  # DutyRate, longest prefix first
    additional: tuple[Located, ...]  # AdditionalDuty
    taxes: tuple[Charged, ...]
    fees: tuple[Charged, ...]
    de_minimis: tuple[Located, ...]  # DeMinimis, in file order
    examples: tuple[CountryExampleCase, ...]
    where: Location

    def rate_for(self, hs_code: str | None) -> Located | None:
        """The longest prefix of `hs_code` the file lists, else None (the default applies)."""
        if hs_code:
            for entry in self.rates:
                if hs_code.startswith(entry.item.hs):
                    return entry
        return None


def compile_country(
    model: CountryFile, loaded: LoadedYaml, sha256: str
) -> tuple[CompiledCountry | None, list[Problem]]:
    problems: list[Problem] = []
    basis = None
    if model.valuation_basis is not None:
        basis = Located(model.valuation_basis, loaded.locate("valuation_basis.basis"))
        if model.valuation_basis.basis == "CIF" and model.valuation_basis.insurance_rate is None:
            problems.append(
                Problem(
                    "country.insurance_rate",
                    "a CIF basis needs insurance_rate "
                    "(the insurance cost when a shipment does not state it)",
                    loaded.locate("valuation_basis"),
                )
            )

    rates: list[Located] = []
    additional: list[Located] = []
    default_rate = None
    if model.duty is not None:
        default_rate = Located(model.duty, loaded.locate("duty.default_rate"))
        seen: dict[str, int] = {}
        for index, rate in enumerate(model.duty.rates):
            where = loaded.locate(f"duty.rates[{index}]")
            if rate.hs in seen:
                problems.append(
                    Problem(
                        "country.duplicate_prefix",
                        f"HS prefix {rate.hs} is already listed at line {seen[rate.hs]}",
                        where,
                    )
                )
                continue
            seen[rate.hs] = where.line
            rates.append(Located(rate, where))
        rates.sort(key=lambda entry: -len(entry.item.hs))
        additional = [
            Located(item, loaded.locate(f"duty.additional[{i}]"))
            for i, item in enumerate(model.duty.additional)
        ]

    taxes = _charged(model.taxes, "taxes", loaded, problems, with_taxes=True)
    fees = _charged(model.fees, "fees", loaded, problems, with_taxes=False)
    de_minimis = [
        Located(item, loaded.locate(f"de_minimis[{i}]")) for i, item in enumerate(model.de_minimis)
    ]
    _unique_ids([*additional, *taxes, *fees, *de_minimis], problems)
    if problems:
        return None, problems
    return CompiledCountry(
        id=model.id,
        version=model.version,
        status=model.status,
        effective_from=model.effective_from,
        effective_to=model.effective_to,
        title=model.title,
        source=loaded.file,
        sha256=sha256,
        currency=model.currency,
        customs_union=model.customs_union,
        basis=basis,
        default_rate=default_rate,
        rates=tuple(rates),
        additional=tuple(additional),
        taxes=tuple(taxes),
        fees=tuple(fees),
        de_minimis=tuple(de_minimis),
        examples=tuple(
            CountryExampleCase(
                ex, loaded.locate(f"examples[{i}]"), ex.shipment, f"{loaded.file} examples[{i}]"
            )
            for i, ex in enumerate(model.examples)
        ),
        where=loaded.locate(""),
    ), []


def _charged(
    items: Sequence[Tax | Fee],
    section: str,
    loaded: LoadedYaml,
    problems: list[Problem],
    *,
    with_taxes: bool,
) -> list[Charged]:
    symbols: dict[str, Symbol] = {name: Symbol(NUMBER) for name in BASE_NAMES}
    compiled = []
    for index, item in enumerate(items):
        where = loaded.locate(f"{section}[{index}].base")
        expr, errs = parse(item.base, where)
        formula = None
        if expr is not None:
            formula, errs = compile_formula(expr, item.base, where, symbols, BUILTINS, "half_up")
        if formula is None:
            problems.extend(errs)
        elif formula.type != NUMBER:
            problems.append(
                Problem(
                    "country.base_type",
                    f"the base of {item.id} must be a number, not a {formula.type}",
                    where,
                )
            )
        else:
            compiled.append(Charged(item, formula, loaded.locate(f"{section}[{index}]")))
        if with_taxes:  # later taxes may build on this one (Brazil's cascade)
            symbols[item.id] = Symbol(NUMBER)
    return compiled


def _unique_ids(entries: list[Located | Charged], problems: list[Problem]) -> None:
    """An id names one figure at a time: the same id twice needs windows that do not overlap."""
    seen: dict[str, list[Located | Charged]] = {}
    for entry in entries:
        item = entry.item
        if item.id in BASE_NAMES:
            problems.append(
                Problem(
                    "country.reserved_id",
                    f"`{item.id}` is a name bases read; choose another id",
                    entry.where,
                )
            )
        for other in seen.get(item.id, []):
            if _overlap(item, other.item):
                problems.append(
                    Problem(
                        "country.duplicate_id",
                        f"id `{item.id}` is already "
                        f"used at line {other.where.line} for an overlapping "
                        "period; give each its effective dates",
                        entry.where,
                    )
                )
        seen.setdefault(item.id, []).append(entry)


def _overlap(a: Any, b: Any) -> bool:
    far_past, far_future = datetime.date.min, datetime.date.max
    a_from, a_to = a.effective_from or far_past, a.effective_to or far_future
    b_from, b_to = b.effective_from or far_past, b.effective_to or far_future
    return a_from < b_to and b_from < a_to
