"""Exact money: the one Decimal context tiv computes in, exact parsing, rounding, display.

Figures (minor units per currency, rounding modes chosen by a pack) live in rule
files; this module only provides the mechanisms. Nothing here accepts a binary float.

The context: 34 significant digits (IEEE 754 decimal128), ROUND_HALF_EVEN for the
inexact results of division, and traps on invalid operations, division by zero and
overflow, so a bad formula fails loudly instead of producing NaN or Infinity.
Rounding to currency units is never implicit: it happens only where a rule file asks.
"""

from __future__ import annotations

import decimal
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal

PRECISION = 34

CONTEXT = decimal.Context(
    prec=PRECISION,
    rounding=decimal.ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
    flags=[],
)

# The context the hottest road (evaluating.valuation.evaluate_plain) sets itself, then
# sets the caller's back: `with exact()` copies CONTEXT on every entry, which costs a
# twentieth of that road's valuation. Shared, so its flags collect every signal raised
# under it: tiv reads no flags (every signal that matters is a trap), and nothing may
# change its traps or settings.
RUNNING = CONTEXT.copy()

ROUNDING_MODES: dict[str, str] = {
    "half_up": decimal.ROUND_HALF_UP,
    "half_even": decimal.ROUND_HALF_EVEN,
    "half_down": decimal.ROUND_HALF_DOWN,
    "up": decimal.ROUND_UP,
    "down": decimal.ROUND_DOWN,
    "ceiling": decimal.ROUND_CEILING,
    "floor": decimal.ROUND_FLOOR,
}

# Plain decimal notation only: no exponent, no sign but a leading minus, no
# thousands separators, no "NaN"/"Infinity". Amounts arrive from people and systems;
# anything cleverer is more likely a mistake than a number.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
# A percent literal in a rule file: `0.35%`, `-2%`; the digits as written, then `%`.
_PERCENT_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)%")


def exact() -> AbstractContextManager[decimal.Context]:
    """Run a block under tiv's context, whatever the caller's thread default is.

    The block gets its own copy of CONTEXT (whose flags are never set: it is only ever
    copied), so flags raised inside it stay inside it. decimal's own context manager,
    not a generator: entering it is a quarter of the cost, and every valuation enters it.
    """
    return decimal.localcontext(CONTEXT)


def percent(text: str) -> Decimal | None:
    """`0.35%` -> Decimal("0.0035") exactly (the digits moved two places, nothing
    rounded); None when `text` is not a percent literal."""
    text = text.strip()
    if not _PERCENT_TEXT.fullmatch(text):
        return None
    with exact():
        return Decimal(text[:-1]).scaleb(-2)


@dataclass(frozen=True)
class Bound:
    """How large and how fine a number of one kind may be, as written: at most `digits`
    digits before the decimal point and `places` after it.

    Mechanism, not a figure: every bound is far beyond any real shipment, and together
    they keep a number within the context's 34 significant digits (so reading it never
    rounds) and a valuation's arithmetic far from the context's exponent limits (so no
    accepted input can overflow it, or make it slow: `1e-999999999` is 12 bytes).
    """

    what: str  # "an amount": how a message names the kind
    digits: int
    places: int

    def check(self, value: Decimal) -> Decimal:
        """`value` if it is within the bound, else OutOfBounds saying which side is not."""
        _, numerals, exponent = value.as_tuple()
        if not isinstance(exponent, int):  # NaN or Infinity: parse_decimal refused them
            raise OutOfBounds(f"expected a finite number, got {value}")
        places = -exponent if exponent < 0 else 0
        # Digits before the point, leading zeros not counted (0.5 has none, 1E+3 has 4).
        whole = len(numerals) + exponent if value else 0
        if whole > self.digits or places > self.places:
            shown = plain(value) if len(numerals) <= 40 else f"a {len(numerals)}-digit number"
            if len(shown) > 48:
                shown = shown[:44] + "..."
            raise OutOfBounds(
                f"{shown} is beyond what {self.what} may be: at most {self.digits} digits "
                f"before the decimal point and {self.places} after it"
            )
        return value


class OutOfBounds(ValueError):
    """A number outside its kind's `Bound` (a ValueError, as every parse_decimal refusal)."""


# The bounds of the facts contract (README "Bounds of the facts"; the JSON Schema of
# `tiv schema shipment` says the same). Amounts, quantities, weights and dimensions:
# below 10^20 with at most 10 places. fx rates: below 10^12 with at most 20 places.
AMOUNT = Bound("an amount, quantity or measure", 20, 10)
FX_RATE = Bound("an fx rate", 12, 20)


def parse_decimal(value: object, bound: Bound | None = None) -> Decimal:
    """Read a number exactly, or raise ValueError with a message fit for a person.

    Accepts Decimal (finite), int (not bool) and strings in plain decimal notation (no
    exponent: text with one is refused whatever its size). Rejects floats: by the time a
    float exists, its exact value is already lost. With `bound`, a number beyond it is
    refused too (OutOfBounds), however it was given.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"expected a finite number, got {value}")
        number = value
    elif isinstance(value, int):
        if bound is not None and value.bit_length() > 4 * (bound.digits + 1):
            # Converting a huge int costs time of its own (and repr has a digit limit).
            raise OutOfBounds(
                f"a number of some {value.bit_length() * 3 // 10} digits is beyond what "
                f"{bound.what} may be: at most {bound.digits} digits before the decimal point"
            )
        number = Decimal(value)
    elif isinstance(value, float):
        raise ValueError(
            f"got the binary float {value!r}; pass amounts as strings, ints or Decimal "
            "so no precision is lost"
        )
    elif isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            shown = repr(value) if len(value) <= 40 else repr(value[:36]) + "..."
            raise ValueError(f'{shown} is not a decimal number (write e.g. "1234.50")')
        number = Decimal(text)
    else:
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return number if bound is None else bound.check(number)


def round_to(value: Decimal, places: int, mode: str) -> Decimal:
    """Round to `places` decimal places with a named mode from ROUNDING_MODES."""
    try:
        rounding = ROUNDING_MODES[mode]
    except KeyError:
        raise ValueError(f"unknown rounding mode {mode!r}") from None
    quantum = _QUANTA[places] if 0 <= places < len(_QUANTA) else Decimal(1).scaleb(-places)
    with exact():
        return value.quantize(quantum, rounding=rounding)


# 1, 0.1, 0.01, ... made once: the places of round() are 0 to 12, a currency's 0 to 4.
_QUANTA = tuple(Decimal(1).scaleb(-places) for places in range(13))


def plain(value: Decimal) -> str:
    """Decimal as text with no exponent: what JSON output and traces carry."""
    text = format(value, "f")
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]
    return text


def display(value: Decimal, currency: str = "", places: int | None = None) -> str:
    """`561,709.00 USD`: thousands separators, fixed places when known."""
    if places is not None:
        text = f"{value:,.{places}f}"
    else:
        integral, _, fraction = plain(value).partition(".")
        sign = "-" if integral.startswith("-") else ""
        text = f"{sign}{int(integral.lstrip('-')):,}" + (f".{fraction}" if fraction else "")
    return f"{text} {currency}" if currency else text
