"""Shipment facts in, a validated and frozen `Shipment` out: the facts contract.

In: the facts as YAML or JSON text (`str` or `bytes`), a file (`pathlib.Path` or any
other `os.PathLike`), or a mapping from a library caller; and a `FactsReference`
holding the currency, country and charge-type lists, which come from rule files.
Out: a `Shipment`. On bad input: one `FactsError` carrying every problem, each naming
the JSON path (`charges[2].amount`) and, for text and files, the file name (`name`
for text); YAML input also gives the line and column. Mappings give the path only.

Format: a name ending in `.json` is JSON, `.yaml`/`.yml` is YAML; any other name is
JSON when the text's first non-blank character is `{`, YAML otherwise.

Amounts are read exactly, never through a binary float: JSON numbers become Decimal
from their text, YAML numbers come from `engine.loading.yamlfile`, strings must be
plain decimals, and Python floats are refused. Nothing is rounded here. Amounts with
no `currency` inherit one: the invoice the valuation currency, each goods line the
invoice currency, charges and duties the valuation currency; the Shipment holds the
inherited codes, so every amount's currency is explicit downstream.

`Shipment.model_validate` alone checks the shape only; `read_facts` also checks codes
against the reference and that every foreign currency has an fx rate.
"""

from __future__ import annotations

import decimal
import difflib
import functools
import operator
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import PurePath
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import pydantic.main
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError, SchemaValidator, core_schema

from engine import firstuse
from engine.errors import FactsError, Location, Problem, json_path
from engine.loading import jsontext
from engine.loading.yamlfile import (
    LoadedYaml,
    check_input_size,
    max_input_bytes,
    parse_yaml_data,
)
from engine.money import AMOUNT, FX_RATE, Bound, OutOfBounds, parse_decimal, plain

Incoterm = Literal["EXW", "FCA", "FAS", "FOB", "CFR", "CIF", "CPT", "CIP", "DAP", "DPU", "DDP"]
Mode = Literal["ocean", "air", "rail", "road", "courier", "multimodal"]
PaymentMethod = Literal["prepaid", "collect"]
DutyType = Literal["import_duty", "tax", "customs_fee"]
INCOTERMS: tuple[str, ...] = get_args(Incoterm)  # Incoterms 2020
MODES: tuple[str, ...] = get_args(Mode)


@dataclass(frozen=True)
class FactsReference:
    """What facts are checked against; every list comes from rule files, not code."""

    currencies: Mapping[str, int]  # ISO 4217 code -> minor units
    countries: frozenset[str]  # ISO 3166-1 alpha-2 codes
    charge_types: frozenset[str] | None = None  # the pack's charge types; None = unchecked
    # Goods category or synonym -> its category (rules/reference/goods_categories.yaml);
    # a synonym is read as its category. None = unchecked.
    categories: Mapping[str, str] | None = None
    # The validators compiled from these codes (see `_compiled_for`), made on first
    # use and kept here, with the codes they were made from.
    compiled: _Compiled = field(
        default_factory=lambda: _Compiled(), init=False, repr=False, compare=False
    )


class _Compiled:
    """A reference's own compiled validators, one per valuation currency, for Python
    input and for JSON text; `uses` counts reads, so that a reference made for one read
    does not pay for compiling; `hint` is the last valuation currency read from a
    mapping, the one tried first for JSON text (whose currency is not known before it
    is parsed)."""

    __slots__ = ("hint", "json", "plain", "python", "uses")

    def __init__(self) -> None:
        self.python: dict[str, SchemaValidator | None] = {}
        self.json: dict[str, SchemaValidator | None] = {}
        self.plain: dict[str, SchemaValidator | None] = {}  # see `read_plain`
        self.uses = 0
        self.hint: str | None = None

    def __reduce__(self) -> tuple[type[_Compiled], tuple[()]]:
        # A copy (pickled to a worker, say) starts empty: a validator unpickled from its
        # schema would be rebuilt while the models are complete, i.e. from their own
        # validators (see `_build`).
        return (_Compiled, ())


# --- field types --------------------------------------------------------------------
# Validators raise PydanticCustomError(code, message): the code becomes the Problem code
# (`facts.<code>`) and the message is shown as is. Messages go through the context
# because pydantic treats `{...}` in a template as a placeholder.


def _fail(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, "{message}", {"message": message})


def _reference(info: ValidationInfo) -> FactsReference | None:
    context = info.context
    reference = context.get("reference") if isinstance(context, Mapping) else None
    return reference if isinstance(reference, FactsReference) else None


def _number(value: Any, bound: Bound) -> Decimal:
    try:
        return parse_decimal(value, bound)
    except OutOfBounds as error:
        raise _fail("number_bounds", str(error)) from None
    except ValueError as error:
        raise _fail("number", str(error)) from None


def _non_negative(value: Any) -> Decimal:
    number = _number(value, AMOUNT)
    if number < 0:
        raise _fail("negative", f"must not be negative, got {plain(number)}")
    return number


def _positive(value: Any) -> Decimal:
    number = _number(value, FX_RATE)
    if number <= 0:
        raise _fail("not_positive", f"must be greater than zero, got {plain(number)}")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str):
        quotable = isinstance(value, int | Decimal) and not isinstance(value, bool)
        hint = "; put it in quotes" if quotable else ""
        raise _fail("text", f"must be text, got {_describe(value)}{hint}")
    if not value.strip():
        raise _fail("empty", "must not be empty")
    return value


def _category(value: Any, info: ValidationInfo) -> str:
    text = _text(value)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", text):
        raise _fail(
            "category",
            f"{_describe(text)} is not a category name: use lowercase letters, "
            "digits and underscores, starting with a letter (e.g. 'consumer_electronics')",
        )
    reference = _reference(info)
    known = reference.categories if reference else None
    if known is None:
        return text
    found = known.get(text)
    if found is None:
        close = difflib.get_close_matches(text, list(known), n=1, cutoff=0.6)
        hint = f"; did you mean '{known[close[0]]}'?" if close else ""
        listed = ", ".join(sorted(set(known.values())))
        raise _fail(
            "unknown_category",
            f"unknown goods category {_describe(text)}{hint} (categories: {listed}; "
            "synonyms in rules/reference/goods_categories.yaml)",
        )
    return found


def _hs_code(value: Any) -> str:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        written = _describe(value)
        raise _fail(
            "hs_code",
            f'write the HS code in quotes ("{written}"): read as a '
            "number, a code loses its leading zeros",
        )
    text = _text(value)
    if not re.fullmatch(r"[0-9]{2,10}", text):
        raise _fail(
            "hs_code",
            f"{_describe(text)} is not an HS code: write 2 to 10 digits with no "
            'dots or spaces, e.g. "847130"',
        )
    return text


def _iso_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise _fail("date", f"{_describe(value)} is not a calendar date") from None
    raise _fail("date", f"must be a date written YYYY-MM-DD, got {_describe(value)}")


def _code(
    value: Any, *, letters: int, what: str, known: Mapping[str, Any] | frozenset[str] | None
) -> str:
    kind = "currency" if letters == 3 else "country"
    if not isinstance(value, str):
        raise _fail(kind, f"must be an {what} code as text, got {_describe(value)}")
    if known is not None and value not in known and value.upper() in known:
        raise _fail(kind, f"write {what} codes in capitals: {value.upper()!r}")
    if not re.fullmatch(f"[A-Z]{{{letters}}}", value):
        raise _fail(kind, f"{_describe(value)} is not an {what} code ({letters} capital letters)")
    if known is not None and value not in known:
        raise _fail(
            f"unknown_{kind}",
            f"unknown {kind} {_describe(value)}: not in the reference list of {what} codes",
        )
    return value


def _currency(value: Any, info: ValidationInfo) -> str:
    reference = _reference(info)
    return _code(
        value,
        letters=3,
        what="ISO 4217 currency",
        known=reference.currencies if reference else None,
    )


def _country(value: Any, info: ValidationInfo) -> str:
    reference = _reference(info)
    return _code(
        value,
        letters=2,
        what="ISO 3166-1 alpha-2 country",
        known=reference.countries if reference else None,
    )


def _charge_type(value: Any, info: ValidationInfo) -> str:
    text = _text(value)
    reference = _reference(info)
    if reference and reference.charge_types is not None and text not in reference.charge_types:
        known = ", ".join(sorted(reference.charge_types))
        raise _fail(
            "unknown_charge_type", f"unknown charge type {_describe(text)}; known types: {known}"
        )
    return text


def _describe(value: Any) -> str:
    """A short, one-line rendering of an input value for messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Decimal):
        return plain(value) if value.is_finite() else str(value)
    if isinstance(value, int) and value.bit_length() > 200:
        return "a number with too many digits"  # repr() itself has a digit limit
    if isinstance(value, str | int):
        text = repr(value)
        return text if len(text) <= 60 else text[:56] + "...'"
    kinds: dict[type, str] = {dict: "a mapping", list: "a list"}
    return kinds.get(type(value), type(value).__name__)


def _bounded_text(bound: Bound) -> str:
    """Plain decimal text within `bound` (leading zeros aside, which the models allow)."""
    return rf"^[0-9]{{1,{bound.digits}}}(\.[0-9]{{1,{bound.places}}})?$"


def _bounds_text(bound: Bound) -> str:
    return (
        f"at most {bound.digits} digits before the decimal point and {bound.places} after it "
        "(as text: plain decimal notation, no exponent; as a JSON number: an exponent is "
        "read exactly, and the number must still be within these bounds)"
    )


_AMOUNT_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": _bounded_text(AMOUNT)},
        {"type": "number", "minimum": 0, "exclusiveMaximum": 10**AMOUNT.digits},
    ],
    "description": "a non-negative decimal; a string keeps every digit exactly; "
    + _bounds_text(AMOUNT),
}
_RATE_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": _bounded_text(FX_RATE)},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10**FX_RATE.digits},
    ],
    "description": "the value of one unit of the currency in the valuation currency; "
    + _bounds_text(FX_RATE),
}

Amount = Annotated[Decimal, PlainValidator(_non_negative), WithJsonSchema(_AMOUNT_SCHEMA)]
Rate = Annotated[Decimal, PlainValidator(_positive), WithJsonSchema(_RATE_SCHEMA)]
Text = Annotated[str, PlainValidator(_text), WithJsonSchema({"type": "string", "minLength": 1})]
Category = Annotated[
    str,
    PlainValidator(_category),
    WithJsonSchema({"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}),
]
HsCode = Annotated[
    str, PlainValidator(_hs_code), WithJsonSchema({"type": "string", "pattern": "^[0-9]{2,10}$"})
]
IsoDate = Annotated[
    date, PlainValidator(_iso_date), WithJsonSchema({"type": "string", "format": "date"})
]
Currency = Annotated[
    str, PlainValidator(_currency), WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$"})
]
Country = Annotated[
    str, PlainValidator(_country), WithJsonSchema({"type": "string", "pattern": "^[A-Z]{2}$"})
]
ChargeType = Annotated[
    str, PlainValidator(_charge_type), WithJsonSchema({"type": "string", "minLength": 1})
]
# A bound of the facts contract like those of money.AMOUNT: far beyond any transit.
MAX_DAYS = 99_999
Days = Annotated[StrictInt, Field(ge=0, le=MAX_DAYS)]


# --- models -------------------------------------------------------------------------


class _Facts(BaseModel):
    # Deferred so that the compiled validator below is built from our schema rather
    # than the class's own (see _COMPILED); pydantic builds its own at first use.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Place(_Facts):
    country: Country
    port: Text | None = None


class Invoice(_Facts):
    amount: Amount
    currency: Currency | None = None  # set to the valuation currency when absent


class Dimensions(_Facts):
    length: Amount
    width: Amount
    height: Amount


class GoodsItem(_Facts):
    """One goods line. Only the description is always required: a pack's rules say
    which of the other facts they read, and reading an absent one is an error there."""

    description: Text
    hs_code: HsCode | None = None
    quantity: Amount | None = None
    weight_kg: Amount | None = None
    dimensions_cm: Dimensions | None = None
    value: Amount | None = None
    currency: Currency | None = None  # set to the invoice currency when absent
    category: Category | None = None


class Charge(_Facts):
    type: ChargeType
    amount: Amount
    currency: Currency | None = None  # set to the valuation currency when absent


class Duty(_Facts):
    type: DutyType
    amount: Amount
    currency: Currency | None = None  # set to the valuation currency when absent


class Shipment(_Facts):
    """One shipment's facts. Amounts are Decimal; sequences are tuples (the model is frozen)."""

    id: Text
    date: IsoDate
    currency: Currency  # the valuation currency
    incoterm: Incoterm | None = None
    mode: Mode
    origin: Place
    destination: Place
    payment_method: PaymentMethod = "prepaid"
    expected_transit_days: Days | None = None
    invoice: Invoice
    # Optional: the insured value comes from the invoice and charges; goods lines
    # matter to rules that look at categories and HS codes.
    goods: tuple[GoodsItem, ...] = ()
    charges: tuple[Charge, ...] = ()
    duties: tuple[Duty, ...] | None = None  # None: not given; (): given as none
    fx: dict[Currency, Rate] = Field(default_factory=dict)
    sum_insured: Amount | None = None  # in the valuation currency
    transit_countries: tuple[Country, ...] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _inherit_currencies(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        shipment = handler(data)
        if isinstance(data, Mapping) and isinstance(shipment, Shipment) and shipment is not data:
            _give_currencies(shipment, data)
        return shipment

    def canonical(self) -> dict[str, Any]:
        """A JSON-ready dict: Decimals as plain decimal strings (the written precision
        kept), dates as ISO strings, keys in model order, fx sorted by code, absent
        optional fields as None. Equal facts written alike give equal dicts."""
        return _canonical(self)  # type: ignore[no-any-return]

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the facts input (amounts as string or number)."""
        return cls.model_json_schema()


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {name: _canonical(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, tuple | list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


# --- the compiled validator -----------------------------------------------------------
# The models above, with their Python validators, are the contract and word every
# message. Valid facts take a faster road: a pydantic-core validator compiled from the
# same models, whose checks run in Rust (strict types, patterns, literals). A reference
# read more than once has its own, one per valuation currency, that also check the
# codes and give inherited currencies (see `_compiled_for`); otherwise a shared one is
# followed by one Python pass for what needs the reference or the parent (`_finish`).
# Each accepts a subset of what the models accept and builds an equal `Shipment`;
# whatever they refuse goes the models' way, so problems are found and worded exactly
# as before. tests/test_facts.py checks both halves of that promise on generated input.

# Numbers as text: plain decimal text with no sign or spaces, within its bound
# (`_bounded_text`); the models also accept " 12", "-0" and leading zeros, which take
# the slower road. Rust's `$` matches only at the very end of the text.
# Rust's `\s` is Unicode White_Space; Python's str.strip() also strips U+001C..U+001F,
# so those count as blank here too (a text field must hold something else).
_SOMETHING = r"[^\s\x1c-\x1f]"
_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


# The context amounts are read in: more digits than any number within its bound has
# (money.AMOUNT and FX_RATE), so nothing is ever rounded; its flags are never read.
_READING = decimal.Context(
    prec=max(AMOUNT.digits + AMOUNT.places, FX_RATE.digits + FX_RATE.places) + 1,
    traps=[decimal.InvalidOperation],
)


def _exact_number(*, python: bool, positive: bool) -> core_schema.CoreSchema:
    """Plain decimal text or an int (not bool), and from Python a Decimal; never a
    float. Text becomes Decimal(text), an int Decimal(int); a Decimal is kept.
    At least zero, or with `positive` greater than zero (an fx rate); within the
    bound of an amount, or with `positive` of an fx rate (money.AMOUNT, FX_RATE).

    From JSON, numbers with a fraction or exponent are refused here (pydantic-core
    would read them through a binary float) and take the slow road, whose parser
    gives Decimal(text). Text is tried first: JSON and YAML give most amounts as text.
    """
    zero = Decimal(0)
    bound = FX_RATE if positive else AMOUNT
    # A context's create_decimal (C, no Python code) turns checked text or an int into the
    # number: faster than calling the Decimal type, or pydantic-core's decimal validator
    # calling it for us. Exact: its precision is above any bounded number's digits.
    exact = core_schema.no_info_plain_validator_function(_READING.create_decimal)
    branches: list[core_schema.CoreSchema] = [
        core_schema.chain_schema(
            [
                core_schema.str_schema(strict=True, pattern=_bounded_text(bound)),
                # The pattern has no sign, so only "greater than zero" is left to check.
                core_schema.decimal_schema(gt=zero) if positive else exact,
            ]
        ),
        core_schema.chain_schema(
            [
                core_schema.int_schema(strict=True, gt=0, lt=10**bound.digits)
                if positive
                else core_schema.int_schema(strict=True, ge=0, lt=10**bound.digits),
                exact,
            ]
        ),
    ]
    if python:
        branches.append(
            core_schema.chain_schema(
                [
                    core_schema.decimal_schema(strict=True, allow_inf_nan=False, gt=zero)
                    if positive
                    else core_schema.decimal_schema(strict=True, allow_inf_nan=False, ge=zero),
                    # The bound as the models check it (a ValueError here: the slow road).
                    core_schema.no_info_plain_validator_function(bound.check),
                ]
            )
        )
    return core_schema.union_schema(list(branches), mode="left_to_right")


def _field_schemas(*, python: bool) -> dict[Any, core_schema.CoreSchema]:
    """The core schema of each field type, keyed by its Python validator. Codes are
    checked for their form here and against the reference in `_finish`, so one
    compiled validator serves every reference."""
    text = core_schema.str_schema(strict=True, pattern=_SOMETHING)
    day: core_schema.CoreSchema = core_schema.chain_schema(
        [core_schema.str_schema(strict=True, pattern=_ISO_DATE), core_schema.date_schema()]
    )
    if python:  # a date object too, but not a datetime (strict refuses it)
        day = core_schema.union_schema(
            [day, core_schema.date_schema(strict=True)], mode="left_to_right"
        )
    return {
        _non_negative: _exact_number(python=python, positive=False),
        _positive: _exact_number(python=python, positive=True),
        _text: text,
        _category: core_schema.str_schema(strict=True, pattern=r"^[a-z][a-z0-9_]*$"),
        _hs_code: core_schema.str_schema(strict=True, pattern=r"^[0-9]{2,10}$"),
        _iso_date: day,
        _currency: core_schema.str_schema(strict=True, pattern=r"^[A-Z]{3}$"),
        _country: core_schema.str_schema(strict=True, pattern=r"^[A-Z]{2}$"),
        _charge_type: text,
    }


@dataclass(frozen=True)
class _Plan:
    """What a compiled validator is made of, beyond the models themselves."""

    fields: Mapping[Any, core_schema.CoreSchema]  # field type's validator -> its schema
    # A field's schema (default included) in place of its type's, by (model, name).
    overrides: Mapping[tuple[type[_Facts], str], core_schema.CoreSchema] = field(
        default_factory=dict
    )
    # JSON text may let pydantic-core skip unknown keys: the count of ':' in
    # `_fast_from_json` finds them (each is one more ':' than the keys read), and
    # ignoring is cheaper than forbidding. A mapping must forbid them.
    extra: Literal["forbid", "ignore"] = "forbid"
    # Plain dicts instead of models (see `read_plain`): the same checks, no instances.
    plain: bool = False


def _type_schema(hint: Any, plan: _Plan) -> core_schema.CoreSchema:
    """The core schema of one annotation; TypeError for one the compiler does not know,
    so a new field type fails at import instead of being validated loosely."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        for extra in hint.__metadata__:
            if isinstance(extra, PlainValidator) and extra.func in plan.fields:
                return plan.fields[extra.func]
        if hint == Days:
            return core_schema.int_schema(strict=True, ge=0, le=MAX_DAYS)
    elif origin is Literal:
        return core_schema.literal_schema(list(args))
    elif origin in (Union, UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return core_schema.nullable_schema(_type_schema(inner, plan))
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return core_schema.tuple_schema([_type_schema(args[0], plan)], variadic_item_index=0)
    elif origin is dict:
        return core_schema.dict_schema(_type_schema(args[0], plan), _type_schema(args[1], plan))
    elif isinstance(hint, type) and issubclass(hint, _Facts):
        return _dict_schema(hint, plan) if plan.plain else _model_schema(hint, plan)
    raise TypeError(f"no compiled validator for the facts type {hint!r}")


def _field_schema(model: type[_Facts], name: str, plan: _Plan) -> core_schema.CoreSchema:
    """One field's schema, its default included."""
    if (model, name) in plan.overrides:
        return plan.overrides[model, name]
    info = model.model_fields[name]
    schema = _type_schema(get_type_hints(model, include_extras=True)[name], plan)
    if info.default_factory is not None:
        return core_schema.with_default_schema(schema, default_factory=info.default_factory)
    if not info.is_required():
        return core_schema.with_default_schema(schema, default=info.default)
    return schema


def _dict_schema(model: type[_Facts], plan: _Plan) -> core_schema.CoreSchema:
    """`model`'s fields as a dict's keys, as given: an absent optional field stays absent
    (its default is the model's), so the dict is the input with its values checked and
    converted, and reads as the same `Shipment`."""
    fields = {}
    for name, info in model.model_fields.items():
        schema = _field_schema(model, name, plan)
        if schema["type"] == "default":
            schema = schema["schema"]
        fields[name] = core_schema.typed_dict_field(schema, required=info.is_required())
    return core_schema.typed_dict_schema(fields, extra_behavior=plan.extra)


def _model_schema(model: type[_Facts], plan: _Plan) -> core_schema.CoreSchema:
    compiled = {
        name: core_schema.model_field(_field_schema(model, name, plan))
        for name in model.model_fields
    }
    return core_schema.model_schema(
        model,
        core_schema.model_fields_schema(
            compiled, model_name=model.__name__, extra_behavior=plan.extra
        ),
        config=core_schema.CoreConfig(extra_fields_behavior=plan.extra),
        frozen=True,
    )


# Built while the model classes are still deferred (see _Facts): pydantic-core reuses
# a complete model class's own validator for any schema that names the class
# (pydantic-core src/common/prebuilt.rs), which would bring the Python validators back.
_FROM_PYTHON = SchemaValidator(_model_schema(Shipment, _Plan(_field_schemas(python=True))))
_FROM_JSON = SchemaValidator(
    _model_schema(Shipment, _Plan(_field_schemas(python=False), extra="ignore"))
)

# --- validators compiled for one reference and one valuation currency ----------------
# The validators above check the codes' form only and leave the rest to `_finish`, a
# Python pass. A reference read more than once gets validators of its own, one per
# valuation currency, that leave nothing to Python: every code must be one of the
# reference's (a literal in pydantic-core, a hash lookup), every amount's currency the
# valuation currency, and an absent one is given that currency as the field's default.
# Facts they refuse (another currency, say) take the road above, then the models'.


# Which reference codes each kind of code field is checked against: the validator of
# the field type, the FactsReference attribute holding the codes, and the form that
# validator requires of a code (a code of another form is never accepted by it, so it
# must not be accepted here either). One more kind of code is one more row.
def _category_names(reference: FactsReference) -> Iterable[str] | None:
    """Every name a goods line may give: the categories and their synonyms."""
    return reference.categories


# A kind of code the reference checks: (the field type's validator, the reference's codes
# of that kind, or None when unchecked, the form a code must have to be a literal).
_CODE_KINDS: tuple[tuple[Any, Callable[[FactsReference], Iterable[Any] | None], Any], ...] = (
    (_currency, operator.attrgetter("currencies"), re.compile("[A-Z]{3}").fullmatch),
    (_country, operator.attrgetter("countries"), re.compile("[A-Z]{2}").fullmatch),
    (_charge_type, operator.attrgetter("charge_types"), str.strip),
    (_category, _category_names, re.compile("[a-z][a-z0-9_]*").fullmatch),
)
_CURRENCY_FORM = _CODE_KINDS[0][2]
_COMPILE_AFTER = 2  # reads of a reference before it gets its own validators
# Valuation currencies per reference (and per input kind) with a validator of their
# own: each costs ~8 ms to make and ~0.3 MB to keep, and facts come in few currencies.
# Facts in any other currency take the shared road, a little slower.
_OWN_MAX = 8


def _compiled_for(
    reference: FactsReference, valuation: Any, *, python: bool
) -> SchemaValidator | None:
    """The reference's own validator for facts valued in `valuation`, made on first
    need; None while the reference is new, when `valuation` is not a valid code, and
    for currencies beyond the first `_OWN_MAX`.

    It takes every amount to be in the valuation currency, which is exactly what the
    models accept when the facts give no fx rates. Facts with rates go the shared road
    without trying it: trying first would cost a refusal on every multi-currency input.
    """
    if type(valuation) is not str:
        return None
    compiled = reference.compiled
    table = compiled.python if python else compiled.json
    found = table.get(valuation)
    if found is not None or valuation in table:
        return found
    compiled.uses += 1
    if (
        compiled.uses < _COMPILE_AFTER
        or len(table) >= _OWN_MAX
        or valuation not in reference.currencies
        or not _CURRENCY_FORM(valuation)
    ):
        return None
    started = time.monotonic_ns()
    made = table[valuation] = _compile(reference, valuation, python=python)
    firstuse.made(started)
    return made


def _compile(
    reference: FactsReference, valuation: str, *, python: bool, plain: bool = False
) -> SchemaValidator | None:
    fields = dict(_field_schemas(python=python))
    for check, codes_of, form in _CODE_KINDS:
        codes = codes_of(reference)
        if codes is None:
            continue
        known = sorted(code for code in codes if isinstance(code, str) and form(code))
        if not known:
            return None  # nothing could pass: let the models say why
        fields[check] = core_schema.literal_schema(known)
        if check is _category and reference.categories is not None:
            # A synonym is read as its category (a C-level dict lookup, no Python frame).
            fields[check] = core_schema.no_info_after_validator_function(
                reference.categories.__getitem__, fields[check]
            )
    own = core_schema.literal_schema([valuation])
    overrides: dict[tuple[type[_Facts], str], core_schema.CoreSchema] = {
        (Shipment, "currency"): own
    }
    for model in (Invoice, GoodsItem, Charge, Duty):
        overrides[model, "currency"] = core_schema.with_default_schema(own, default=valuation)
    plan = _Plan(fields, overrides, "forbid" if python else "ignore", plain)
    return _build(_dict_schema(Shipment, plan) if plain else _model_schema(Shipment, plan))


# pydantic's own lock for (re)building models, so no model is rebuilt meanwhile.
_BUILDING: Any = getattr(pydantic.main, "_rebuild_lock", None) or threading.RLock()


def _build(schema: core_schema.CoreSchema) -> SchemaValidator:
    """A validator from our schema even though the model classes are complete: they
    are marked incomplete while it is built, so pydantic-core does not take their own
    validators instead (see above); pydantic marks a model so while rebuilding it."""
    models = (Shipment, Place, Invoice, Dimensions, GoodsItem, Charge, Duty)
    with _BUILDING:
        complete = [model for model in models if model.__dict__.get("__pydantic_complete__")]
        for model in complete:
            model.__pydantic_complete__ = False
        try:
            return SchemaValidator(schema)
        finally:
            for model in complete:
                model.__pydantic_complete__ = True


def _fast_from_mapping(data: Any, reference: FactsReference) -> Shipment | None:
    """The Shipment the models would build from `data`, or None to let them decide."""
    if type(data) is not dict:
        return None
    valuation = data.get("currency")
    compiled = reference.compiled
    own = None
    if not data.get("fx"):  # see `_compiled_for`: with rates, other currencies are valid
        # The common case inline: a str is hashable, and a validator made is never dropped.
        own = compiled.python.get(valuation) if type(valuation) is str else None
        if own is None:
            own = _compiled_for(reference, valuation, python=True)
    if own is not None:
        compiled.hint = valuation
        try:
            # No rates were given, so there is no valuation-currency rate to check.
            return own.validate_python(data)  # type: ignore[no-any-return]
        except ValidationError:
            pass  # a currency written as null, say: the road below decides
    try:
        shipment = _FROM_PYTHON.validate_python(data)
    except ValidationError:
        return None
    return _finish(shipment, data, reference)


def read_plain(data: Any, reference: FactsReference) -> dict[str, Any] | None:
    """The facts of `data` as plain dicts and tuples, or None to read them as a `Shipment`.

    For the straight line's fastest road: the checks of the reference's own validator
    (see `_compiled_for`), and no model built. An absent optional field stays absent:
    its value is the model field's default. Only for a dict whose amounts are all in its
    valuation currency (no fx) and whose reference already has its own validator;
    anything the validator refuses is None, not an error: `read_facts` then reads it and
    words any problem.
    `read_facts(result, reference)` gives the `Shipment` `read_facts(data, ...)` gives.
    """
    if type(data) is not dict or data.get("fx"):
        return None
    valuation = data.get("currency")
    if type(valuation) is not str:
        return None
    table = reference.compiled.plain
    validator = table.get(valuation)
    if validator is None:
        if valuation in table or _compiled_for(reference, valuation, python=True) is None:
            return None  # the reference is new, or the currency has no validator of its own
        started = time.monotonic_ns()
        validator = table[valuation] = _compile(reference, valuation, python=True, plain=True)
        firstuse.made(started)
        if validator is None:
            return None
    try:
        return validator.validate_python(data)  # type: ignore[no-any-return]
    except ValidationError:
        return None


def _fast_from_json(text: str | bytes, reference: FactsReference) -> Shipment | None:
    """The Shipment the slow road (json.loads, then the models) would build from JSON
    text, or None to let it decide.

    pydantic-core's JSON reader keeps the last of repeated keys, which the slow road
    refuses. So duplicates are ruled out by counting: outside strings, a JSON text has
    one ':' per key, and every key of a valid shipment is a field set on a model or
    an fx code, while the only strings that may hold ':' are the text fields, stored
    as written. With no backslash (no escapes) in the text, the count of ':' equals
    the keys read plus the ':' in those values exactly when no key was repeated.
    (A currency given as its field's default is not a key read, and not counted.)
    """
    backslash, fx = (b"\\", b'"fx"') if isinstance(text, bytes) else ("\\", '"fx"')
    if backslash in text:  # type: ignore[operator]
        return None
    shipment: Shipment | None = None
    hint = reference.compiled.hint
    # No "fx" anywhere (no escapes either): no rates given, see `_fast_from_mapping`.
    if hint is not None and fx not in text:  # type: ignore[operator]
        own = _compiled_for(reference, hint, python=False)
        if own is not None:
            try:
                shipment = own.validate_json(text)
            except ValidationError:
                shipment = None  # valued in another currency, say: the road below decides
    if shipment is None:
        try:
            shipment = _FROM_JSON.validate_json(text)
        except ValidationError:
            return None
        if _finish(shipment, None, reference) is None:
            return None
        reference.compiled.hint = shipment.currency
    colons = text.count(b":" if isinstance(text, bytes) else ":")  # type: ignore[arg-type]
    keys = _keys_read(shipment)
    # As many ':' as keys read: none left over for a repeated key. Otherwise the ones
    # left over must all be in text values.
    if colons != keys and colons != keys + _colons_in_text(shipment):
        return None
    return shipment


def _keys_read(shipment: Shipment) -> int:
    """Keys read into `shipment`: the fields set on its models, and the fx codes."""
    count = len(shipment.__pydantic_fields_set__) + len(shipment.fx)
    count += len(shipment.origin.__pydantic_fields_set__)
    count += len(shipment.destination.__pydantic_fields_set__)
    count += len(shipment.invoice.__pydantic_fields_set__)
    for good in shipment.goods:
        count += len(good.__pydantic_fields_set__)
        if good.dimensions_cm is not None:
            count += len(good.dimensions_cm.__pydantic_fields_set__)
    for charge in shipment.charges:
        count += len(charge.__pydantic_fields_set__)
    for duty in shipment.duties or ():
        count += len(duty.__pydantic_fields_set__)
    return count


def _colons_in_text(shipment: Shipment) -> int:
    """The ':' in the text fields of `shipment`, which are stored as written."""
    count = shipment.id.count(":")
    for place in (shipment.origin, shipment.destination):
        count += (place.port or "").count(":")
    for good in shipment.goods:
        count += good.description.count(":")
    for charge in shipment.charges:
        count += charge.type.count(":")
    return count


def _finish(
    shipment: Shipment, data: Mapping[str, Any] | None, reference: FactsReference
) -> Shipment | None:
    """Check the codes against the reference and every foreign currency for a rate,
    as `_code`, `_charge_type`, `_category` and `_fx_problems` do (None if any fails),
    and give amounts their inherited currency (`_give_currencies`).

    `data` is the mapping validated, None for JSON (where every item is a mapping).
    An inherited currency is the valuation's or the invoice's, so checking the
    written ones is checking them all.
    """
    currencies, countries = reference.currencies, reference.countries
    valuation, rates = shipment.currency, shipment.fx
    if valuation not in currencies:
        return None
    if rates:
        if valuation in rates and rates[valuation] != 1:
            return None
        for code in rates:
            if code not in currencies:
                return None
    if shipment.origin.country not in countries or shipment.destination.country not in countries:
        return None
    if shipment.transit_countries and not all(
        country in countries for country in shipment.transit_countries
    ):
        return None
    charge_types = reference.charge_types
    if charge_types is not None:
        for charge in shipment.charges:
            if charge.type not in charge_types:
                return None
    categories = reference.categories
    if categories is not None:
        for good in shipment.goods:
            # A synonym is read as its category; an unknown name takes the models' road,
            # which refuses it with a suggestion.
            category = good.category
            if category is not None:
                found = categories.get(category)
                if found is None:
                    return None
                if found != category:
                    good.__dict__["category"] = found
    for models in ((shipment.invoice,), shipment.goods, shipment.charges, shipment.duties or ()):
        for model in models:
            written = model.currency
            if (
                written is not None
                and written != valuation
                and (written not in currencies or written not in rates)
            ):
                return None
    _give_currencies(shipment, data)
    return shipment


def _give_currencies(shipment: Shipment, data: Mapping[str, Any] | None) -> None:
    """Give each amount without a currency the one it inherits (see module doc): the
    invoice the valuation currency, goods lines the invoice's, charges and duties the
    valuation's. `data` is the mapping the shipment was built from, None for JSON.

    Only models built from a mapping are given a currency, never a model the caller
    passed in; those are new and unshared, so setting the field on the frozen model
    is safe. The field is not marked as set: the input did not set it.
    """
    valuation = shipment.currency
    invoice = shipment.invoice
    invoice_currency = valuation
    if data is None or isinstance(data.get("invoice"), Mapping):
        if invoice.currency is None:
            invoice.__dict__["currency"] = valuation
        else:
            invoice_currency = invoice.currency
    groups: tuple[tuple[str, Sequence[GoodsItem | Charge | Duty], str], ...] = (
        ("goods", shipment.goods, invoice_currency),
        ("charges", shipment.charges, valuation),
        ("duties", shipment.duties or (), valuation),
    )
    for name, models, inherited in groups:
        if not models:
            continue
        items = None if data is None else data.get(name)
        # `type(...) is` first: the usual list of dicts skips the slower ABC checks.
        if not (items is None or type(items) is list or isinstance(items, list | tuple)):
            continue
        for index, model in enumerate(models):
            if model.currency is None and (
                items is None or type(items[index]) is dict or isinstance(items[index], Mapping)
            ):
                model.__dict__["currency"] = inherited


# --- reading ------------------------------------------------------------------------


def read_facts(
    source: str | bytes | os.PathLike[str] | Mapping[str, Any],
    reference: FactsReference,
    *,
    name: str = "<input>",
) -> Shipment:
    """Read and check shipment facts; raise FactsError with every problem found.

    `source`: a `str` or `bytes` is the text itself (named `name` in messages), an
    `os.PathLike` is a file to read, a Mapping is already-parsed data (problems then
    carry the path only). A `str` is never taken as a file name.
    """
    marks: LoadedYaml | None = None
    data: Any
    file = ""
    try:
        # A dict first (the usual library call), then text: both cheaper to ask about
        # than the Mapping ABC.
        if type(source) is dict:
            fast = _fast_from_mapping(source, reference)
            return fast if fast is not None else _validate_by_models(source, reference, None, "")
        if isinstance(source, str | bytes):
            file = name
            _within_the_limit(source, name)
            fast = _fast_json_text(source, reference, name)
            if fast is not None:
                return fast
            text = source if isinstance(source, str) else _decode(source, name)
            data, marks = _parse_text(text, name)
        elif isinstance(source, Mapping):
            data = source
        elif isinstance(source, os.PathLike):
            file = os.fsdecode(source)
            data, marks = load_facts_document(source)
        else:
            raise TypeError(f"read_facts takes text, a path or a mapping, not {type(source)}")
        return _validate(data, reference, marks, file)
    except RecursionError:
        raise FactsError(
            Problem("facts.too_deep", "the facts nest too deeply to read", Location(file))
        ) from None


def _within_the_limit(source: str | bytes, name: str) -> None:
    """FactsError for text over the input limit, before it is parsed (as a file's size is
    checked before it is read): a 140 MB text took the library a second and 300 MB."""
    limit = max_input_bytes(FactsError)
    if len(source) > (limit if isinstance(source, bytes) else limit // 4):
        # A character is 1 to 4 bytes in UTF-8: encode only when it can matter.
        size = (
            len(source)
            if isinstance(source, bytes)
            else len(source.encode("utf-8", "surrogatepass"))
        )
        check_input_size(size, name, FactsError)


def load_facts_document(path: os.PathLike[str] | str) -> tuple[Any, LoadedYaml | None]:
    """Read a facts file into raw data, plus its marks when it is YAML.

    Here a `str` is a file name. Raises FactsError if the file cannot be read, is over
    the input size limit (refused before it is read: --max-input, $TIV_MAX_INPUT_BYTES),
    is not UTF-8, or is not well-formed YAML or JSON (duplicate keys and NaN included).
    """
    file = os.fsdecode(path)
    try:
        with open(file, "rb") as handle:
            limit = max_input_bytes(FactsError)
            check_input_size(os.fstat(handle.fileno()).st_size, file, FactsError)
            # Read no more than the limit allows, whatever the size said (a pipe, a file
            # still growing): one byte over is enough to refuse it.
            raw = handle.read(limit + 1)
            check_input_size(len(raw), file, FactsError)
    except OSError as error:
        reason = error.strerror or str(error)
        raise FactsError(
            Problem("facts.unreadable", f"cannot read the facts file: {reason}", Location(file))
        ) from None
    return _parse_text(_decode(raw, file), file)


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise FactsError(
            Problem(
                "facts.encoding",
                f"not UTF-8 text (byte {raw[error.start]:#04x}); save the file as UTF-8",
                Location(file, line),
            )
        ) from None


def _parse_text(text: str, file: str) -> tuple[Any, LoadedYaml | None]:
    text = text.removeprefix("\ufeff")
    suffix = _suffix(file)
    if suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip()[:1] == "{"):
        return _parse_json(text, file), None
    loaded = parse_yaml_data(text, file)
    return loaded.data, loaded


@functools.lru_cache(maxsize=256)
def _suffix(file: str) -> str:
    return PurePath(file).suffix.lower()


def _fast_json_text(source: str | bytes, reference: FactsReference, name: str) -> Shipment | None:
    """`read_facts` on JSON text by the compiled validator, or None for the slow road.

    Decides JSON or YAML as `_parse_text` does; for bytes, only ASCII whitespace is
    skipped, so text that starts otherwise (a BOM, say) takes the slow road.
    """
    suffix = _suffix(name)
    if suffix in (".yaml", ".yml"):
        return None
    if suffix != ".json" and source.lstrip()[:1] not in ("{", b"{"):
        return None
    return _fast_from_json(source, reference)


def _parse_json(text: str, file: str) -> Any:
    try:
        data = jsontext.parse(text)
    except (RecursionError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise FactsError(jsontext.syntax_problem(error, file)) from None
    problems = jsontext.problems(data, file)
    if problems:
        raise FactsError(problems)
    return data


def _validate(
    data: Any, reference: FactsReference, marks: LoadedYaml | None, file: str
) -> Shipment:
    fast = _fast_from_mapping(data, reference)
    return fast if fast is not None else _validate_by_models(data, reference, marks, file)


def _validate_by_models(
    data: Any, reference: FactsReference, marks: LoadedYaml | None, file: str
) -> Shipment:
    """The models' road: slower, and the one that finds and words every problem."""

    def where(parts: tuple[str | int, ...], *, key: bool = False) -> Location:
        path = json_path(parts)
        return marks.locate(path, key=key) if marks else Location(file, path=path)

    if data is None:
        raise FactsError(
            Problem(
                "facts.empty_document",
                "the facts are empty; expected a mapping of "
                "shipment fields (id, date, currency, ...)",
                where(()),
            )
        )
    problems: list[Problem] = []
    shipment: Shipment | None = None
    try:
        shipment = Shipment.model_validate(data, context={"reference": reference})
    except ValidationError as error:
        for detail in error.errors(include_url=False):
            loc = tuple(detail["loc"])
            is_key = detail["type"] == "extra_forbidden" or loc[-1:] == ("[key]",)
            loc = loc[:-1] if loc[-1:] == ("[key]",) else loc
            code, message = _explain(detail, loc, data)
            problems.append(Problem(code, message, where(loc, key=is_key)))
    for parts, code, message in _fx_problems(data, reference):
        problems.append(Problem(code, message, where(parts, key=parts[0] == "fx")))
    if problems:
        raise FactsError(_one_per_path(problems))
    assert shipment is not None
    return shipment


def _one_per_path(problems: list[Problem]) -> list[Problem]:
    seen: set[str] = set()
    kept = []
    for found in problems:
        if found.location.path not in seen:
            seen.add(found.location.path)
            kept.append(found)
    return kept


def _explain(detail: Any, loc: tuple[Any, ...], data: Any) -> tuple[str, str]:
    """A pydantic error as (problem code, one-line message a person understands)."""
    kind = detail["type"]
    context = detail.get("ctx") or {}
    if "message" in context and len(context) == 1:  # raised by our validators
        return f"facts.{kind}", str(context["message"])
    if kind == "missing":
        return "facts.required", "is required"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        model = _model_at(loc[:-1])
        fields = list(model.model_fields) if model else []
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.7)
        hint = (
            f"; did you mean '{close[0]}'?"
            if close
            else (f"; known fields: {', '.join(fields)}" if fields else "")
        )
        return "facts.unknown_field", f"unknown field {_describe(name)}{hint}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if not loc:
            hint = (
                "; to read a file, pass a pathlib.Path, not a str"
                if isinstance(data, str) and "\n" not in data.strip()
                else ""
            )
            return "facts.type", (
                "the facts must be a mapping of shipment fields (id, date, "
                f"currency, ...), got {_describe(data)}{hint}"
            )
        return "facts.type", f"must be a mapping of fields, got {_describe(detail['input'])}"
    if kind in ("tuple_type", "list_type"):
        return "facts.type", f"must be a list, got {_describe(detail['input'])}"
    if kind == "literal_error":
        return "facts.choice", (
            f"must be one of {context.get('expected', '?')}, got {_describe(detail['input'])}"
        )
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "facts.type", f"must be a whole number, got {_describe(detail['input'])}"
    if kind == "greater_than_equal":
        return "facts.range", f"must be at least {context.get('ge')}"
    if kind == "string_type":
        return "facts.type", f"must be text, got {_describe(detail['input'])}"
    message = str(detail.get("msg", "is invalid"))
    return f"facts.{kind}", message[:1].lower() + message[1:]


def _model_at(parts: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at `parts` (list indices skipped)."""
    model: type[BaseModel] = Shipment
    for part in parts:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        nested = _model_in(field.annotation) if field else None
        if nested is None:
            return None
        model = nested
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _fx_problems(
    data: Any, reference: FactsReference
) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Foreign currencies with no fx rate, and a valuation-currency rate other than 1.

    Works on the raw input (not the model), so these are reported alongside shape
    problems. Only explicitly written currencies are checked: an inherited one is
    either the valuation currency or the invoice's, which is checked where written.
    """
    if not isinstance(data, Mapping):
        return []
    valuation = data.get("currency")
    if not (isinstance(valuation, str) and valuation in reference.currencies):
        return []
    fx = data.get("fx")
    rates = fx if isinstance(fx, Mapping) else {}
    found: list[tuple[tuple[str | int, ...], str, str]] = []

    def check(parts: tuple[str | int, ...], currency: Any) -> None:
        if (
            isinstance(currency, str)
            and currency in reference.currencies
            and currency != valuation
            and currency not in rates
        ):
            found.append(
                (
                    parts,
                    "facts.no_fx_rate",
                    f"no fx rate for {currency}; add "
                    f"fx.{currency}, the value of one {currency} in {valuation}",
                )
            )

    invoice = data.get("invoice")
    if isinstance(invoice, Mapping):
        check(("invoice", "currency"), invoice.get("currency"))
    for name in ("goods", "charges", "duties"):
        items = data.get(name)
        if isinstance(items, list | tuple):
            for index, item in enumerate(items):
                if isinstance(item, Mapping):
                    check((name, index, "currency"), item.get("currency"))
    if valuation in rates:
        try:
            own = parse_decimal(rates[valuation])
        except ValueError:
            own = Decimal(1)  # reported by the model as a malformed rate
        if own != 1:
            found.append(
                (
                    ("fx", valuation),
                    "facts.fx_valuation",
                    f"the valuation currency's own rate must be 1, got {plain(own)}; "
                    f"remove fx.{valuation}",
                )
            )
    return found
