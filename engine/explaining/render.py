"""Render a valuation's trace as text for a person.

In: a `Valuation` (with its trace). Out: lines of text, one per step, each citing the
`path:line` it came from; amounts with thousands separators and the currency, rates and
other plain numbers without one (`engine.explaining.dimensions` tells which is which).
JSON output needs no renderer: it is the Valuation model itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from engine.explaining.dimensions import guess_money_names, is_money_name, money_names
from engine.money import display, plain
from engine.result import Claim, TraceStep, Valuation

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _num(value: str | Decimal, currency: str = "", places: int | None = None) -> str:
    """Thousands separators; with `places`, at least that many decimals, no trailing zeros beyond.

    Only zeros are dropped or added, so the text still shows the exact value. Text that
    is not a number (a boolean, a category) is shown as it is.
    """
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value):
            return value
        try:
            value = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the regex admits only numbers
            return str(value)
    if places is None:
        return display(value, currency)
    exponent = value.normalize().as_tuple().exponent
    decimals = max(places, -exponent if isinstance(exponent, int) else 0)
    return display(value, currency, decimals)


class _Figures:
    """How one result's figures are shown: amounts with its currency, plain numbers bare."""

    def __init__(self, result: Valuation, money: dict[str, bool]) -> None:
        self.currency = result.currency
        self.places = result.currency_minor_units
        self.money = money

    def amount(self, value: str | Decimal) -> str:
        return _num(value, self.currency, self.places)

    def named(self, name: str, value: str | Decimal) -> str:
        """A formula's value: an amount with the currency, a rate or factor as it is."""
        return self.amount(value) if self.money.get(name, False) else _num(value)

    def inputs(self, step: TraceStep) -> str:
        # Inputs carry no currency (a converted amount's is not the valuation's); amounts
        # are shown to the currency's places, plain numbers exactly as computed.
        return ", ".join(
            f"{name} = {_num(value, '', self.places if self._is_amount(step, name) else None)}"
            for name, value in step.inputs.items()
        )

    def _is_amount(self, step: TraceStep, name: str) -> bool:
        if step.kind in ("formula", "claim"):
            return is_money_name(name, self.money)
        return name != "rate" and not name.startswith("fx.")


def _valuation_figures(result: Valuation) -> _Figures:
    steps = [(s.name, s.expression) for s in result.trace if s.kind == "formula"]
    return _Figures(result, money_names(steps))


def render_text(result: Valuation) -> str:
    policy = result.policy
    lines = [
        f"Shipment {result.shipment_id} valued under {policy.id}@{policy.version} "
        f"({policy.title}) as of {result.as_of.isoformat()}",
        f"  rules: {policy.source}  sha256 {policy.sha256[:16]}…  matcher: {result.matcher}"
        f"  engine {result.engine_version}",
    ]
    sections = {
        "duty": "Duties, taxes and fees (estimated from country rules)",
        "convert": "Currency conversions",
        "charge": "Charges",
        "formula": "Formulas",
        "rule": "Rules that fired",
        "decision": "Decision",
    }
    figures = _valuation_figures(result)
    width = max((len(s.name) for s in result.trace), default=8)
    current = ""
    for step in result.trace:
        # A table step (the row a lookup chose) belongs under the formula that looked it up.
        kind = "formula" if step.kind == "table" else step.kind
        if kind != current:
            current = kind
            lines.append("")
            lines.append(sections[kind])
        lines.append("  " + _step_line(step, width, figures))
    lines.append("")
    for reason in result.reasons:
        lines.append(
            f"  {reason.decision.upper()}: {reason.reason} [{reason.rule}, {reason.source}]"
        )
    for flag in result.flags:
        lines.append(f"  FLAG {flag.name}: {flag.reason} [{flag.rule}, {flag.source}]")
    # Components are what the TIV adds up: amounts, whatever the trace shows.
    comps = ", ".join(
        f"{name} {figures.amount(value)}" for name, value in result.components.items()
    )
    lines.append(f"Components: {comps}")
    lines.append(f"Decision: {result.decision.upper()}")
    lines.append(f"Total insured value: {figures.amount(result.total_insured_value)}")
    return "\n".join(lines) + "\n"


def _step_line(step: TraceStep, width: int, figures: _Figures) -> str:
    name = step.name.ljust(width)
    if step.kind in ("formula", "claim"):
        inputs = figures.inputs(step)
        return (
            f"{name} = {step.expression}"
            + (f"  [{inputs}]" if inputs else "")
            + f"  → {figures.named(step.name, step.value)}   {step.source}"
        )
    if step.kind == "charge":
        amount = figures.amount(step.inputs.get("amount", ""))
        return f"{name} {step.inputs.get('type', '')} {amount}: {step.expression}   {step.source}"
    if step.kind == "convert":
        return (
            f"{name} = {step.expression}  [{figures.inputs(step)}]  → {figures.amount(step.value)}"
        )
    if step.kind == "duty":
        # A de minimis step's value is whether the relief applies (1 or 0), not an amount.
        shown = _num(step.value) if step.name.startswith("de_minimis ") else None
        return (
            f"{name} {step.expression}  [{figures.inputs(step)}]  → "
            f"{shown or figures.amount(step.value)}   {step.source}"
        )
    if step.kind == "table":  # the row a lookup chose; its expression holds the result
        return f"{' ' * len(name)}   {step.expression}"
    if step.kind == "rule":
        return (
            f"{name} when {step.expression}  → {step.value} "
            f"({step.inputs.get('matched', '')})   {step.source}"
        )
    return f"{step.expression} → {step.value.upper()}"


def render_claim_text(result: Claim, formulas: Iterable[tuple[str, str]] = ()) -> str:
    """A settled claim for a person: the loss, each claims step with its line, the indemnity.

    `formulas`, the valuation's (name, expression) when the caller has the pack, tell which
    valuation figures the claims formulas read are amounts. Without them, a name read is an
    amount when it is a component or holds the TIV, the premium or the deductible.
    """
    valuation = result.valuation
    loss = result.loss
    figures = _claim_figures(result, formulas)
    detail = ", ".join(
        f"{key} {plain(value)}%" if key == "damage_percent" else f"{key} {figures.amount(value)}"
        for key, value in (
            ("damage_percent", loss.damage_percent),
            ("gross_sound_value", loss.gross_sound_value),
            ("gross_damaged_value", loss.gross_damaged_value),
        )
        if value is not None
    )
    policy = valuation.policy
    sum_insured = valuation.figures.get("sum_insured")
    lines = [
        f"Claim on shipment {result.shipment_id} under {policy.id}@{policy.version}: "
        f"{loss.kind} loss" + (f" ({detail})" if detail else ""),
        f"  insured value {figures.amount(valuation.total_insured_value)}"
        + (f", sum insured declared {figures.amount(sum_insured)}" if sum_insured else ""),
        "",
        "Claims formulas",
    ]
    width = max((len(s.name) for s in result.trace), default=8)
    for step in result.trace:
        lines.append("  " + _step_line(step, width, figures))
    lines.append("")
    comps = ", ".join(f"{n} {figures.named(n, v)}" for n, v in result.components.items())
    if comps:
        lines.append(f"Components: {comps}")
    lines.append(f"Indemnity: {figures.amount(result.indemnity)}")
    return "\n".join(lines) + "\n"


def _claim_figures(result: Claim, formulas: Iterable[tuple[str, str]]) -> _Figures:
    valuation = result.valuation
    steps = [(s.name, s.expression) for s in result.trace if s.kind == "claim"]
    known = money_names(formulas)
    if known:
        return _Figures(valuation, money_names(steps, known))
    # Without the pack: components, and names holding the TIV, the premium or the
    # deductible, are amounts; the other names read from the valuation are guessed.
    amounts = {
        v for v in (valuation.total_insured_value, valuation.premium, valuation.deductible) if v
    }
    claimed = {name for name, _ in steps}
    unknown = set()
    for step in result.trace:
        for name, text in step.inputs.items():
            if name in claimed or name in known or not _NUMBER.fullmatch(text):
                continue
            if is_money_name(name, {}) or name in valuation.components or Decimal(text) in amounts:
                known[name] = True
            elif name.startswith("loss."):
                known[name] = False
            else:
                unknown.add(name)
    return _Figures(valuation, guess_money_names(steps, known, unknown))
