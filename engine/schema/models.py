"""The shape of every rule file, as pydantic models; the JSON Schemas are generated from them.

In: plain data from `engine.loading.yamlfile`. Out: typed, frozen models. This
module says what a file may contain; whether its names and formulas make sense is
the compiler's job (`engine.compiling`).
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from engine.money import AMOUNT, parse_decimal, percent

Identifier = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$", description="lower_snake_case name")
]
PackId = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$", description="lower-kebab-case pack id")
]
SemVer = Annotated[
    str,
    Field(
        pattern=r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$",
        description="semantic version MAJOR.MINOR.PATCH",
    ),
]
Amount = Annotated[Decimal, Field(description="exact decimal; write it as a string or number")]


def _percent_literals(value: Any) -> Any:
    """`0.35%` (text in YAML) is the number 0.0035, exactly; other values pass unchanged."""
    if isinstance(value, str):
        found = percent(value)
        return value if found is None else found
    if isinstance(value, list):
        return [_percent_literals(item) for item in value]
    return value


# A number in a rule file: a YAML number, or a percent literal such as `0.3464%`.
Number = Annotated[Decimal, BeforeValidator(_percent_literals)]
ParameterValue = Annotated[
    Decimal | bool | str | list[Decimal] | list[str], BeforeValidator(_percent_literals)
]
RoundingMode = Literal["half_up", "half_even", "half_down", "up", "down", "ceiling", "floor"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


CodeKind = Literal[
    "country", "currency", "incoterm", "mode", "payment_method", "goods_category", "charge_type"
]


class Parameter(_Model):
    value: ParameterValue
    description: str | None = None
    source: str | None = Field(None, description="where the figure comes from")
    codes: CodeKind | None = Field(
        None,
        description="the kind of code the value holds, checked at load against the "
        "reference data; when absent, inferred from what the parameter is compared with",
    )


class ChargeType(_Model):
    """A charge type the pack knows: counted in a group, or excluded with a reason."""

    group: Identifier | None = Field(
        None, description="the group it counts in; formulas read charges.<group>"
    )
    excluded: str | None = Field(None, description="why it is not part of the insured value")
    description: str | None = None

    @model_validator(mode="after")
    def _one_treatment(self) -> ChargeType:
        if (self.group is None) == (self.excluded is None):
            raise ValueError("give a charge type either `group` or `excluded` (with the reason)")
        return self


class Rounding(_Model):
    mode: RoundingMode = Field("half_up", description="the mode round() uses")


class Rule(_Model):
    """`when` the condition holds, apply one effect."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")]
    for_: Literal["shipment", "charge", "goods"] = Field(
        "shipment",
        alias="for",
        description="what the condition looks at: the shipment, or each charge or goods line",
    )
    when: str = Field(description="condition over facts, parameters and formulas")
    decide: Literal["refer", "decline"] | None = None
    reject_charge: bool | None = Field(
        None, description="with `for: charge`: refuse the shipment's facts, naming the charge"
    )
    exclude_charge: bool | None = Field(
        None, description="with `for: charge`: leave the charge out of the insured value"
    )
    flag: Identifier | None = None
    reason: str = Field(description="said in the result whenever the rule fires")
    description: str | None = None
    source: str | None = None

    @model_validator(mode="after")
    def _one_effect(self) -> Rule:
        effects = [
            e
            for e in (
                self.decide,
                self.exclude_charge or None,
                self.reject_charge or None,
                self.flag,
            )
            if e
        ]
        if len(effects) != 1:
            raise ValueError(
                "a rule has exactly one effect: `decide`, `exclude_charge`, "
                "`reject_charge` or `flag`"
            )
        if (self.exclude_charge or self.reject_charge) and self.for_ != "charge":
            raise ValueError("`exclude_charge` and `reject_charge` need `for: charge`")
        return self


class ResultSpec(_Model):
    total_insured_value: Identifier = Field(description="the formula that is the TIV")
    components: list[Identifier] = Field(description="formulas reported as components")
    premium: Identifier | None = Field(None, description="the formula that is the premium")
    deductible: Identifier | None = Field(None, description="the formula that is the deductible")
    figures: list[Identifier] = Field(
        default_factory=list, description="other formulas to report (e.g. average_proportion)"
    )


class Table(_Model):
    """A rate table: rows of key cells and the value they give.

    Positional form: `rows` of key cells in the order of `keys`, then the value (a
    number). Named form (with `result`): the first row, of `rows` or of the CSV file
    `rows_from` names, is a header naming every key column and the result column; a key
    cell is `*`, a number, text, a comparison (`> 45`) or a range (`[10, 20)`, `10..20`),
    and the result is a number or text.
    """

    description: str | None = None
    match: Literal["first", "most_specific"] = Field(
        description="first: the first row that matches; most_specific: the matching row with "
        'the fewest "*" (the first of equals)'
    )
    on_gap: Literal["error", "refer"] = Field(
        description="when no row matches: an error, or a referral (never a zero rate)"
    )
    gap_reason: str | None = None
    keys: dict[Identifier, str] = Field(
        description="column -> the name whose value is looked up (e.g. shipment.mode)"
    )
    result: Identifier | None = Field(
        None,
        description="the name of the column the table gives; with it, the first row (of rows "
        "or of the rows_from file) is a header naming every column",
    )
    rows_from: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.csv$")] | None = Field(
        None,
        description="a CSV file beside the pack file holding the rows, header first (needs result)",
    )
    rows: list[list[str | Decimal]] = Field(
        default_factory=list,
        description="positional: key cells in the order of keys, then the value; named: a "
        "header row, then the rows",
    )
    source: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Table:
        if self.on_gap == "refer" and not self.gap_reason:
            raise ValueError("on_gap: refer needs a gap_reason")
        if self.result is not None:
            if self.result in self.keys:
                raise ValueError(f"the result column `{self.result}` is also a key column")
            if (self.rows_from is None) == (not self.rows):
                raise ValueError("give the rows (header first) or rows_from, not both")
            return self
        if self.rows_from is not None:
            raise ValueError("rows_from needs `result`, the name of the result column")
        if not self.rows:
            raise ValueError("the table has no rows")
        width = len(self.keys) + 1
        for index, row in enumerate(self.rows):
            if len(row) != width:
                raise ValueError(
                    f"row {index} has {len(row)} cells; the table has {width} "
                    f"columns ({', '.join(self.keys)}, value)"
                )
            last = row[-1]
            if not isinstance(last, Decimal) and percent(last) is None:
                raise ValueError(f"row {index}: the last cell, the value, must be a number")
        return self


class Loss(_Model):
    """What was lost: all of it, or part of it (a damage percentage or sound/damaged values)."""

    kind: Literal["total", "partial"]
    damage_percent: Decimal | None = Field(None, ge=0, le=100)
    gross_sound_value: Decimal | None = Field(None, gt=0)
    gross_damaged_value: Decimal | None = Field(None, ge=0)
    description: str | None = None

    @field_validator("damage_percent", "gross_sound_value", "gross_damaged_value", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Decimal | None:
        # As every amount of the facts: exact (no float, no exponent in text) and within
        # the facts' bounds, so no loss can overflow or slow the claims formulas.
        return None if value is None else parse_decimal(value, AMOUNT)

    @model_validator(mode="after")
    def _enough(self) -> Loss:
        if self.kind == "partial":
            values = self.gross_sound_value is not None and self.gross_damaged_value is not None
            if (self.damage_percent is None) == (not values):
                raise ValueError(
                    "a partial loss gives damage_percent, or gross_sound_value and "
                    "gross_damaged_value"
                )
        return self


class ClaimExpectation(_Model):
    indemnity: Amount | None = None
    components: dict[str, Amount] | None = None
    error: str | None = None


class ClaimExample(_Model):
    name: str
    shipment: str | dict[str, Any]
    loss: Loss
    expect: ClaimExpectation


class ClaimSpec(_Model):
    indemnity: Identifier = Field(description="the formula that is the indemnity")
    components: list[Identifier] = Field(default_factory=list)


class Claims(_Model):
    """How a loss is indemnified: formulas over the valuation's names and loss.*."""

    formulas: dict[Identifier, str]
    result: ClaimSpec
    examples: list[ClaimExample] = Field(default_factory=list)


class Expectation(_Model):
    total_insured_value: Amount | None = None
    components: dict[str, Amount] | None = None
    premium: Amount | None = Field(
        None, description="the premium; written as null, it expects none (a rating gap)"
    )
    deductible: Amount | None = Field(
        None, description="the deductible; written as null, it expects none"
    )
    figures: dict[str, Amount | None] | None = Field(
        None, description="figures the pack reports; null expects a null figure (a table gap)"
    )
    decision: Literal["accept", "refer", "decline"] | None = None
    reasons: list[str] | None = Field(None, description="ids of the rules that decided")
    flags: list[str] | None = None
    excluded_charges: list[str] | None = Field(None, description="charge types left out")
    error: str | None = Field(None, description="expected error code instead of a result")

    @model_validator(mode="after")
    def _something(self) -> Expectation:
        if not self.checked():
            raise ValueError("an example must expect something")
        if self.error is not None and self.checked() != {"error"}:
            raise ValueError("an example expects either an error or figures, not both")
        return self

    def checked(self) -> set[str]:
        """The keys this expectation checks: those given, and premium or deductible
        written as null (which expect none)."""
        given = {k for k, v in self.__dict__.items() if v is not None}
        return given | (self.model_fields_set & {"premium", "deductible"})


class Example(_Model):
    name: str
    shipment: str | dict[str, Any] = Field(
        description="the facts inline, or a path relative to this file"
    )
    as_of: datetime.date | None = None
    expect: Expectation


class Provenance(_Model):
    """Who wrote a version, who approved it, and why it exists. Required once published."""

    author: str
    approver: str | None = None
    approved_on: datetime.date | None = None
    changelog: str = Field(description="what changed from the previous version, and why")


class PolicyFile(_Model):
    """An insurer's policy pack, one version per file: policies/<id>/<version>.yaml."""

    kind: Literal["policy"]
    schema_version: Literal[1]
    id: PackId
    version: SemVer
    status: Literal["draft", "published"]
    effective_from: datetime.date
    effective_to: datetime.date | None = Field(
        None, description="first day it no longer applies; open-ended when absent"
    )
    title: str
    description: str
    provenance: Provenance | None = Field(
        None, description="author, approver, approval date, changelog; required when published"
    )
    extends: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*@[\^~]?[0-9]+(?:\.[0-9]+){0,2}$",
        description="base pack and version range (standard@^1, standard@~1.2, standard@1.0.0); "
        "this file overrides and adds to it",
    )
    parameters: dict[Identifier, Parameter | ParameterValue] = Field(default_factory=dict)
    charge_types: dict[Identifier, ChargeType] | None = None
    regions: dict[Identifier, list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]]] | None = Field(
        None,
        description='region -> countries; region(country) gives the region, or "rest_of_world"',
    )
    rounding: Rounding | None = None
    formulas: dict[Identifier, str] = Field(
        default_factory=dict,
        description="evaluated in order; each may use facts, parameters and earlier formulas",
    )
    tables: dict[Identifier, Table] = Field(default_factory=dict)
    result: ResultSpec | None = None
    rules: list[Rule] = Field(default_factory=list)
    claims: Claims | None = None
    examples: list[Example] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete_or_extends(self) -> PolicyFile:
        if self.extends is None:
            missing = [name for name in ("charge_types", "result") if getattr(self, name) is None]
            if missing or not self.formulas:
                raise ValueError(
                    "a pack that extends no other needs charge_types, formulas and result"
                )
        return self

    @model_validator(mode="after")
    def _published_needs_provenance(self) -> PolicyFile:
        if self.status == "published":
            given = self.provenance
            if given is None or given.approver is None or given.approved_on is None:
                raise ValueError(
                    "a published version needs provenance with author, approver, "
                    "approved_on and changelog"
                )
        return self

    @field_validator("effective_to")
    @classmethod
    def _after_start(cls, value: datetime.date | None, info: Any) -> datetime.date | None:
        start = info.data.get("effective_from")
        if value is not None and start is not None and value <= start:
            raise ValueError("effective_to must be after effective_from")
        return value


CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
HsPrefix = Annotated[
    str, Field(pattern=r"^[0-9]{2,10}$", description="HS code prefix, 2-10 digits")
]
Mode = Literal["ocean", "air", "rail", "road", "courier", "multimodal"]
Source = Annotated[
    str,
    Field(min_length=3, description="the regulation or official page, and the date it was checked"),
]


class _Dated(_Model):
    """Items inside one version that start or stop on their own dates (a fee's fiscal year)."""

    effective_from: datetime.date | None = None
    effective_to: datetime.date | None = Field(None, description="first day it no longer applies")

    def in_effect(self, day: datetime.date) -> bool:
        return (self.effective_from is None or self.effective_from <= day) and (
            self.effective_to is None or day < self.effective_to
        )


class ValuationBasis(_Model):
    basis: Literal["CIF", "FOB"] = Field(
        description="CIF: international freight and insurance enter the customs value"
    )
    insurance_rate: Number | None = Field(
        None,
        description="insurance cost when a shipment does not state it, as a share of "
        "insurance_base",
    )
    insurance_base: Literal["fob", "fob_and_freight"] = Field(
        "fob_and_freight", description="what insurance_rate is a share of"
    )
    source: Source
    notes: str | None = None


class DutyRate(_Model):
    hs: HsPrefix
    rate: Number
    description: str | None = None
    source: Source


class AdditionalDuty(_Dated):
    id: Identifier
    description: str
    origins: list[CountryCode] = Field(description="origin countries it applies to")
    hs: list[HsPrefix] | None = Field(None, description="HS prefixes; absent: all goods")
    rate: Number
    source: Source


class Duty(_Model):
    default_rate: Number = Field(description="for goods no prefix matches, or without hs_code")
    default_source: Source
    rates: list[DutyRate] = Field(default_factory=list, description="longest matching prefix wins")
    additional: list[AdditionalDuty] = Field(default_factory=list)


class AmountRounding(_Model):
    """How the authority states an amount: to `places` decimals of the country's currency."""

    places: Annotated[int, Field(ge=0, le=4, description="decimal places (2: to the cent)")]
    mode: RoundingMode = Field("half_up", description="how a half (or any rest) is rounded")


class Tax(_Dated):
    id: Identifier
    name: str
    rate: Number
    rounding: AmountRounding | None = Field(
        None,
        description="round the tax as the authority states it, in the country's currency; "
        "absent: not rounded",
    )
    base: str = Field(
        description="formula over customs_value, fob, freight, insurance, duty, "
        "fees and earlier taxes by id"
    )
    source: Source
    notes: str | None = None


class Fee(_Dated):
    id: Identifier
    name: str
    rate: Number
    base: str = "customs_value"
    minimum: Number | None = Field(None, description="in the country's currency")
    maximum: Number | None = Field(None, description="in the country's currency")
    rounding: AmountRounding | None = Field(
        None,
        description="round the fee (after minimum and maximum) as the authority states it, "
        "in the country's currency; absent: not rounded",
    )
    modes: list[Mode] | None = Field(None, description="transport modes it applies to; absent: all")
    waived_under_de_minimis: bool = Field(
        False, description="not charged when duty de minimis relief applies"
    )
    source: Source


class DeMinimis(_Dated):
    id: Identifier
    applies_to: Literal["duty", "tax", "duty_and_tax"]
    threshold: Number = Field(description="customs value at or below which relief applies")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    origins: list[CountryCode] | None = None
    exclude_origins: list[CountryCode] | None = Field(
        None, description="origins it does not apply to (e.g. after a suspension for them)"
    )
    modes: list[Mode] | None = None
    flat_duty_per_line: Number | None = Field(
        None, description="instead of full relief, a flat duty per goods line (country currency)"
    )
    duty_rate: Number | None = Field(
        None,
        description="instead of full relief, this duty rate on the customs value, in "
        "place of the tariff and additional duties (a flat-rate scheme for small consignments)",
    )
    relieves_taxes: list[Identifier] | None = Field(
        None,
        description="with applies_to tax or duty_and_tax: only these taxes (by id) are "
        "relieved; absent: all",
    )
    measure: Literal["customs_value", "duty"] = Field(
        "customs_value",
        description="what the threshold compares: the customs value, or the "
        "duty itself (a duty at or below the threshold is not collected)",
    )
    source: Source
    notes: str | None = None

    @model_validator(mode="after")
    def _one_kind_of_relief(self) -> DeMinimis:
        if self.flat_duty_per_line is not None and self.duty_rate is not None:
            raise ValueError("give flat_duty_per_line or duty_rate, not both")
        if self.measure == "duty" and (
            self.applies_to != "duty"
            or self.flat_duty_per_line is not None
            or self.duty_rate is not None
        ):
            raise ValueError("a threshold on the duty itself applies_to duty and waives it")
        return self


class CountryExpectation(_Model):
    total: Amount | None = None
    lines: dict[str, Amount] | None = Field(None, description="line id -> amount")
    de_minimis: list[str] | None = Field(None, description="ids of the reliefs that applied")
    error: str | None = None


class CountryExample(_Model):
    name: str
    shipment: str | dict[str, Any]
    fob: Amount = Field(description="FOB value in the valuation currency")
    freight: Amount = Field(description="international freight in the valuation currency")
    expect: CountryExpectation


class CountryFile(_Model):
    """Import duty and tax rules of a country or customs union: rules/countries/<ID>/<version>.yaml

    These estimate duties for insurance valuation; they are not a customs declaration.
    """

    kind: Literal["country"]
    schema_version: Literal[1]
    id: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    version: SemVer
    status: Literal["draft", "published"]
    effective_from: datetime.date
    effective_to: datetime.date | None = None
    title: str
    description: str
    provenance: Provenance | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    customs_union: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = Field(
        None, description="customs rules (basis, duty, duty de minimis) come from this union"
    )
    valuation_basis: ValuationBasis | None = None
    duty: Duty | None = None
    taxes: list[Tax] = Field(default_factory=list)
    fees: list[Fee] = Field(default_factory=list)
    de_minimis: list[DeMinimis] = Field(
        default_factory=list, description="first matching entry per kind applies"
    )
    notes: str | None = None
    examples: list[CountryExample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _customs_from_somewhere(self) -> CountryFile:
        if self.customs_union is None and (self.valuation_basis is None or self.duty is None):
            raise ValueError("give valuation_basis and duty, or name the customs_union")
        if self.customs_union is not None and (self.valuation_basis or self.duty):
            raise ValueError("a member of a customs union takes valuation_basis and duty from it")
        if self.status == "published" and (
            self.provenance is None
            or self.provenance.approver is None
            or self.provenance.approved_on is None
        ):
            raise ValueError(
                "a published version needs provenance with author, approver, "
                "approved_on and changelog"
            )
        return self


class Currency(_Model):
    name: str
    minor_units: Annotated[int, Field(ge=0, le=4)]


class CurrenciesFile(_Model):
    """ISO 4217 reference data: rules/reference/currencies.yaml."""

    kind: Literal["currencies"]
    title: str
    source: str
    notes: str | None = None
    currencies: dict[Annotated[str, Field(pattern=r"^[A-Z]{3}$")], Currency]


class Country(_Model):
    name: str


class CountriesFile(_Model):
    """ISO 3166-1 reference data: rules/reference/countries.yaml."""

    kind: Literal["countries"]
    title: str
    source: str
    notes: str | None = None
    countries: dict[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], Country]
    aliases: dict[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], CountryCode] = Field(
        default_factory=dict,
        description="codes that are not ISO 3166-1 codes but are written for one (UK for "
        "GB): rule files are told to write the ISO code instead",
    )


class Incoterm(_Model):
    includes: list[Literal["main_carriage", "insurance", "destination", "import_duties"]]
    description: str


class IncotermsFile(_Model):
    """What each Incoterms 2020 rule puts in the invoice price: rules/reference/incoterms.yaml."""

    kind: Literal["incoterms"]
    title: str
    source: str
    notes: str | None = None
    incoterms: dict[Annotated[str, Field(pattern=r"^[A-Z]{3}$")], Incoterm]


CategoryName = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$", description="lower_snake_case name")
]


class GoodsCategory(_Model):
    description: str
    synonyms: list[CategoryName] = Field(
        default_factory=list, description="other names facts may use; read as this category"
    )


class GoodsCategoriesFile(_Model):
    """One goods-category vocabulary, with synonyms: rules/reference/goods_categories.yaml."""

    kind: Literal["goods_categories"]
    title: str
    source: str
    notes: str | None = None
    categories: dict[CategoryName, GoodsCategory]


FILE_KINDS: dict[str, type[_Model]] = {
    "policy": PolicyFile,
    "country": CountryFile,
    "currencies": CurrenciesFile,
    "countries": CountriesFile,
    "incoterms": IncotermsFile,
    "goods_categories": GoodsCategoriesFile,
}
