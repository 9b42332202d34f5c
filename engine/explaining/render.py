"""Render a valuation's trace as text for a person.

In: a `Valuation` (with its trace). Out: lines of text, one per step, amounts with
thousands separators and the currency, each citing the `path:line` it came from.
JSON output needs no renderer: it is the Valuation model itself.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from engine.money import display
from engine.result import Claim, TraceStep, Valuation

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _num(text: str, currency: str = "", places: int | None = None) -> str:
    """Thousands separators; with `places`, at least that many decimals, no trailing zeros beyond.

    Only zeros are dropped or added, so the text still shows the exact value.
    """
    if not _NUMBER.fullmatch(text):
        return text
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only numbers
        return text
    if places is None:
        return display(value, currency)
    exponent = value.normalize().as_tuple().exponent
    decimals = max(places, -exponent if isinstance(exponent, int) else 0)
    return display(value, currency, decimals)


def _inputs(step: TraceStep, places: int) -> str:
    return ", ".join(f"{name} = {_num(value, '', places)}" for name, value in step.inputs.items())


def _money(text: str, result: Valuation) -> str:
    return _num(text, result.currency, result.currency_minor_units)


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
    width = max((len(s.name) for s in result.trace), default=8)
    current = ""
    for step in result.trace:
        # A table step (the row a lookup chose) belongs under the formula that looked it up.
        kind = "formula" if step.kind == "table" else step.kind
        if kind != current:
            current = kind
            lines.append("")
            lines.append(sections[kind])
        lines.append("  " + _step_line(step, width, result))
    lines.append("")
    for reason in result.reasons:
        lines.append(
            f"  {reason.decision.upper()}: {reason.reason} [{reason.rule}, {reason.source}]"
        )
    for flag in result.flags:
        lines.append(f"  FLAG {flag.name}: {flag.reason} [{flag.rule}, {flag.source}]")
    comps = ", ".join(
        f"{name} {_money(value, result)}" for name, value in result.components.items()
    )
    lines.append(f"Components: {comps}")
    lines.append(f"Decision: {result.decision.upper()}")
    lines.append(f"Total insured value: {_money(result.total_insured_value, result)}")
    return "\n".join(lines) + "\n"


def _step_line(step: TraceStep, width: int, result: Valuation) -> str:
    name = step.name.ljust(width)
    places = result.currency_minor_units
    if step.kind in ("formula", "claim"):
        inputs = _inputs(step, places)
        return (
            f"{name} = {step.expression}"
            + (f"  [{inputs}]" if inputs else "")
            + f"  → {_money(step.value, result)}   {step.source}"
        )
    if step.kind == "charge":
        amount = _money(step.inputs.get("amount", ""), result)
        return f"{name} {step.inputs.get('type', '')} {amount}: {step.expression}   {step.source}"
    if step.kind == "convert":
        return (
            f"{name} = {step.expression}  [{_inputs(step, places)}]  → {_money(step.value, result)}"
        )
    if step.kind == "duty":
        return (
            f"{name} {step.expression}  [{_inputs(step, places)}]  → "
            f"{_money(step.value, result)}   {step.source}"
        )
    if step.kind == "table":  # the row a lookup chose; its expression holds the result
        return f"{' ' * len(name)}   {step.expression}"
    if step.kind == "rule":
        return (
            f"{name} when {step.expression}  → {step.value} "
            f"({step.inputs.get('matched', '')})   {step.source}"
        )
    return f"{step.expression} → {step.value.upper()}"


def render_claim_text(result: Claim) -> str:
    """A settled claim for a person: the loss, each claims step with its line, the indemnity."""
    valuation = result.valuation
    loss = result.loss
    detail = ", ".join(
        f"{k} {_money(v, valuation) if k != 'damage_percent' else v + '%'}"
        for k, v in loss.model_dump(exclude_none=True).items()
        if k != "kind"
    )
    policy = valuation.policy
    lines = [
        f"Claim on shipment {result.shipment_id} under {policy.id}@{policy.version}: "
        f"{loss.kind} loss" + (f" ({detail})" if detail else ""),
        f"  insured value {_money(valuation.total_insured_value, valuation)}"
        + (
            f", sum insured declared {_money(valuation.figures['sum_insured'] or '', valuation)}"
            if valuation.figures.get("sum_insured")
            else ""
        ),
        "",
        "Claims formulas",
    ]
    width = max((len(s.name) for s in result.trace), default=8)
    for step in result.trace:
        lines.append("  " + _step_line(step, width, valuation))
    lines.append("")
    comps = ", ".join(f"{n} {_money(v, valuation)}" for n, v in result.components.items())
    if comps:
        lines.append(f"Components: {comps}")
    lines.append(f"Indemnity: {_money(result.indemnity, valuation)}")
    return "\n".join(lines) + "\n"
