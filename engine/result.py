"""The result contract: what a valuation returns, as pydantic models.

These models are the JSON of `tiv value --format json` and of the HTTP service. In
Python every amount, rate and percent is a `decimal.Decimal`, so results add up
(`total += r.total_insured_value`); in JSON each is decimal text ("1234.50"), never a
JSON number, so no consumer ever has to parse a binary float to read a figure.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
)

from engine.money import parse_decimal

Decision = Literal["accept", "refer", "decline"]


# The validation context key under which an audit record's mask marker is passed: a
# figure that repeated a masked fact is stored as that marker, and is read back as it.
MASKED = "masked"


def _read_exact(value: object, info: ValidationInfo) -> Decimal:
    """A Decimal, or decimal text: what JSON carries and what the engine itself makes.

    A JSON number or a Python float or int is refused, not converted: a float has lost
    its exact value already, and the JSON contract is text, so a number there is a
    mistake in whatever wrote it. The one exception is display-only: a masked audit
    record, read with `context={MASKED: marker}`, keeps its marker text where a figure was.
    """
    if isinstance(value, Decimal | str):
        if info.context and value == info.context.get(MASKED):
            return value  # type: ignore[return-value]  # the marker, shown as it is
        return parse_decimal(value)
    raise ValueError(
        f'expected a Decimal or decimal text such as "1234.50", got {type(value).__name__}'
    )


def _write_exact(value: Decimal) -> str:
    """Plain decimal text, never an exponent (`str` writes 1E+3 and 0E-8); no negative zero.

    The same text `engine.money.plain` gives, inlined: every amount of every JSON result
    comes through here.
    """
    text = format(value, "f")
    return text[1:] if text[0] == "-" and not value else text


# An exact figure: `Decimal` in Python, decimal text in JSON (written without an exponent,
# with the places the engine gave it: 9070.00 stays "9070.00").
ExactDecimal = Annotated[
    Decimal,
    PlainValidator(_read_exact),
    PlainSerializer(_write_exact, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}),
]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Model = TypeVar("Model", bound=_Out)

# The instance-dict slot pydantic's BaseModel declares: what `__dict__` means underneath the
# property `Valuation` puts over it.
_DICT_SLOT: Any = BaseModel.__dict__["__dict__"]
_get_dict: Callable[[Any], dict[str, Any]] = _DICT_SLOT.__get__
_set_dict: Callable[[Any, dict[str, Any]], None] = _DICT_SLOT.__set__
_new_object: Any = object.__new__
_set_fields_set: Callable[[Any, Any], None] = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra: Callable[[Any, Any], None] = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private: Callable[[Any, Any], None] = BaseModel.__dict__["__pydantic_private__"].__set__


_EVERY_FIELD: dict[type[BaseModel], set[str]] = {}


def built(cls: type[Model], **values: Any) -> Model:
    """A result model from values the engine itself computed, typed and complete.

    Every field is given, in declaration order, with the type validation would produce:
    validating it again would only cost time (pydantic's `model_construct` costs more
    still). Input from outside the engine is always validated.
    """
    model: Model = _new_object(cls)
    _set_dict(model, values)
    # Every field is set: one set per class serves all its instances, as for Valuation's
    # (pydantic copies a model's fields set before changing it).
    every = _EVERY_FIELD.get(cls)
    if every is None:
        every = _EVERY_FIELD[cls] = set(cls.model_fields)
    _set_fields_set(model, every if len(values) == len(every) else set(values))
    _set_extra(model, None)
    _set_private(model, None)
    return model


class FileRef(_Out):
    id: str
    version: str
    sha256: str
    source: str


class FunctionRef(_Out):
    name: str
    version: str


class PolicyRef(_Out):
    id: str
    version: str
    status: Literal["draft", "published"] = Field(description="a draft values only when asked")
    title: str
    sha256: str = Field(
        description="sha256 of the pack file's bytes; for a pack that "
        "extends others, of the list of its files' paths and hashes"
    )
    source: str = Field(description="path of the pack file, relative to the rule repository")
    files: list[FileRef] = Field(description="every file of the resolved pack, base first")
    functions: list[FunctionRef] = Field(description="custom functions the pack calls")


class ExcludedCharge(_Out):
    index: int = Field(description="position in the shipment's charges list")
    type: str
    amount: ExactDecimal = Field(description="in the valuation currency")
    reason: str
    rule: str
    source: str


class Reason(_Out):
    decision: Literal["refer", "decline"]
    rule: str
    reason: str
    source: str
    citation: str | None = Field(None, description="the regulation or page the rule applies")
    subjects: list[str] = Field(description="what matched: shipment, charges[1], goods[0]")


class Flag(_Out):
    name: str
    rule: str
    reason: str
    source: str
    citation: str | None = None
    subjects: list[str]


class RuleRef(_Out):
    id: str
    version: str
    sha256: str
    source: str


class DutyLine(_Out):
    id: str = Field(description="the figure's id in the country file, e.g. mpf, vat, duty")
    kind: Literal["duty", "additional_duty", "tax", "fee"]
    name: str
    subject: str = Field(description="shipment, or the goods line it applies to")
    base: ExactDecimal
    rate: ExactDecimal
    amount: ExactDecimal = Field(description="in the valuation currency")
    note: str = ""
    source: str = Field(description="`path:line` of the figure in the country file")
    citation: str = Field(description="the regulation or page the figure comes from")


class DutyEstimate(_Out):
    country: str
    rules: list[RuleRef] = Field(description="the country (and customs union) files used")
    basis: Literal["CIF", "FOB"]
    country_currency: str
    fob: ExactDecimal
    freight: ExactDecimal
    insurance: ExactDecimal
    customs_value: ExactDecimal
    de_minimis_applied: list[str]
    lines: list[DutyLine]
    total: ExactDecimal


class TraceStep(_Out):
    kind: Literal["convert", "charge", "formula", "rule", "decision", "duty", "claim", "table"]
    name: str
    expression: str
    inputs: dict[str, str]
    value: str
    source: str = Field(description="`path:line` of the rule text that made this figure")


# Where a valuation keeps the function that makes its deferred fields (a key no field has).
_DEFERRED = "\x00deferred"


class Valuation(_Out):
    """A valuation. The engine may defer its costlier fields (the trace, texts of figures).

    `deferred(...)` builds one whose instance dict holds the computed fields and, under a
    key no field has, a function making the rest. Reading `__dict__` (which is what
    pydantic's serializer, `==`, `repr`, `copy` and pickling all do) or a deferred field
    first merges that function's fields in, once: every reader sees the same complete,
    byte-identical model. Plain attribute reads of computed fields never trigger it, so a
    caller who only reads `decision` never pays for rendering the trace.
    """

    shipment_id: str
    currency: str
    currency_minor_units: int = Field(description="decimal places of the valuation currency")
    total_insured_value: ExactDecimal
    components: dict[str, ExactDecimal]
    premium: ExactDecimal | None = Field(None, description="when the pack rates a premium")
    deductible: ExactDecimal | None = None
    figures: dict[str, ExactDecimal | None] = Field(
        default_factory=dict,
        description="other figures the pack reports; null for a rate table gap",
    )
    excluded_charges: list[ExcludedCharge]
    decision: Decision
    reasons: list[Reason]
    flags: list[Flag]
    policy: PolicyRef
    as_of: datetime.date
    engine_version: str
    matcher: str = Field(description="which backend matched the rule conditions")
    duties_basis: Literal["declared", "estimated", "none"] = Field(
        description="declared duty lines, a country-rule estimate, or neither"
    )
    duty_estimate: DutyEstimate | None = None
    trace: list[TraceStep]
    audit_id: str | None = Field(None, description="the audit record, when one was written")

    @property
    def __dict__(self) -> dict[str, Any]:
        values = _get_dict(self)
        make = values.get(_DEFERRED)
        if make is None:
            return values
        # Serializers write fields in the dict's order: rebuild it in declaration order.
        made = make()
        values = {name: values[name] if name in values else made[name] for name in _FIELD_ORDER}
        _set_dict(self, values)
        return values

    @__dict__.setter
    def __dict__(self, values: dict[str, Any]) -> None:
        _set_dict(self, values)

    def __getattr__(self, name: str) -> Any:
        # Only reached for a name not in the instance dict: a deferred field, or an error.
        values = _get_dict(self)
        if _DEFERRED in values and name in _FIELD_NAMES:
            return self.__dict__[name]
        return super().__getattr__(name)  # type: ignore[misc]

    @classmethod
    def deferred(cls, make: Callable[[], dict[str, Any]], **values: Any) -> Valuation:
        """A valuation of `values` whose other fields `make()` returns when first needed.

        Like `built`, for values the engine computed itself: nothing is validated.
        """
        return deferred_valuation(make, values)


def deferred_valuation(make: Callable[[], dict[str, Any]], values: dict[str, Any]) -> Valuation:
    """`Valuation.deferred` taking the computed fields as a dict, which becomes the model's
    own (the caller hands it over): no keyword arguments to pack and unpack."""
    # Straight to object's constructor and BaseModel's slots: looking either up through
    # the model class (its metaclass, its `__dict__` property) costs more than the rest.
    model: Valuation = _new_object(Valuation)
    values[_DEFERRED] = make
    _set_dict(model, values)
    # Shared: pydantic copies a model's fields set before changing it (model_copy).
    _set_fields_set(model, _FIELDS_SET)
    _set_extra(model, None)
    _set_private(model, None)
    return model


_FIELD_ORDER = tuple(Valuation.model_fields)
_FIELD_NAMES = frozenset(_FIELD_ORDER)
_FIELDS_SET = set(_FIELD_ORDER)


class LossIn(_Out):
    kind: Literal["total", "partial"]
    damage_percent: ExactDecimal | None = None
    gross_sound_value: ExactDecimal | None = None
    gross_damaged_value: ExactDecimal | None = None


class Claim(_Out):
    """A settled claim: the indemnity, how it was reached, and the valuation under it."""

    shipment_id: str
    currency: str
    loss: LossIn
    indemnity: ExactDecimal
    components: dict[str, ExactDecimal]
    valuation: Valuation
    trace: list[TraceStep] = Field(description="the claims formulas, step by step")
    audit_id: str | None = None
