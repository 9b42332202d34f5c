"""The certificate of insurance of a bound policy: as JSON (`Certificate`) and as PDF.

The certificate states the cover and carries `record_sha256`, the sha256 of the canonical
JSON (sorted keys, no whitespace, UTF-8) of the policy record it was issued from, which
the JSON certificate includes as `record`: anyone holding the record can recompute the
hash and compare it with the one printed on the PDF.

PDF: fpdf2, pure Python and maintained, writes a small, text-extractable PDF with the
core fonts and no system dependency (reportlab would do too, but is larger and its
open-source part is maintained less openly). The core fonts are Latin-1, so text outside
it is transliterated rather than refused: the JSON certificate keeps the exact text.
"""

from __future__ import annotations

import datetime
import unicodedata
from typing import Any

from engine import RuleSet, TivError
from engine.applications.errors import ApplicationError
from engine.applications.models import Certificate, GoodsLine, Policy, Route


def build(policy: Policy, rules: RuleSet) -> Certificate:
    """The certificate of `policy`; ApplicationError for a cancelled policy."""
    if policy.state != "in_force":
        raise ApplicationError(
            "certificate.cancelled",
            f"policy {policy.id} was cancelled on {policy.cancelled_at}: it has no certificate",
        )
    facts = policy.facts
    try:
        pack = rules.select(
            f"{policy.policy.id}@{policy.policy.version}",
            datetime.date.fromisoformat(facts["date"]),
            allow_draft=True,
        )
        insurer = pack.title
    except TivError:
        insurer = policy.policy.id
    return Certificate(
        certificate_number=policy.certificate_number,
        policy_id=policy.id,
        insured=policy.insured,
        goods=[_goods(g) for g in facts.get("goods") or []],
        conveyance=_conveyance(facts, policy.conveyance),
        route=Route(
            origin=_place(facts["origin"]),
            destination=_place(facts["destination"]),
            via=list(facts.get("transit_countries") or []),
            mode=facts["mode"],
            departure=datetime.date.fromisoformat(facts["date"]),
            expected_transit_days=facts.get("expected_transit_days"),
        ),
        currency=policy.currency,
        sum_insured=policy.sum_insured,
        total_insured_value=policy.total_insured_value,
        premium=policy.premium,
        deductible=policy.deductible,
        clauses=policy.clauses,
        conditions=policy.conditions,
        effective_date=policy.effective_date,
        insurer=insurer,
        pack=policy.policy,
        record_sha256=policy.record_sha256(),
        record=policy.record(),
    )


def render_pdf(cert: Certificate) -> bytes:
    """One A4 page (more when the goods list is long), every figure as text."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(f"Certificate of insurance {cert.certificate_number}")
    pdf.set_creator("tiv")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def line(label: str, text: str) -> None:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(45, 6, _latin1(label))
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(width - 45, 6, _latin1(text), new_x="LMARGIN", new_y="NEXT")

    def heading(text: str) -> None:
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(width, 7, _latin1(text), new_x="LMARGIN", new_y="NEXT")

    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(width, 10, "CERTIFICATE OF INSURANCE", new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(width, 6, _latin1(cert.insurer), new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.ln(3)
    line("Certificate number", cert.certificate_number)
    line("Policy", cert.policy_id)
    line("Insured", cert.insured)
    line("Effective date", cert.effective_date.isoformat())

    heading("Goods")
    for item in cert.goods:
        parts = [item.description]
        if item.quantity is not None:
            parts.append(f"quantity {item.quantity}")
        if item.weight_kg is not None:
            parts.append(f"{item.weight_kg} kg")
        if item.dimensions_cm is not None:
            parts.append(f"{item.dimensions_cm} cm")
        if item.value is not None:
            parts.append(f"value {item.value}")
        line("-", ", ".join(parts))

    heading("Conveyance and route")
    line("Conveyance", cert.conveyance)
    route = cert.route
    line("From", route.origin)
    line("To", route.destination)
    if route.via:
        line("Via", ", ".join(route.via))
    line("Departure", route.departure.isoformat())
    if route.expected_transit_days is not None:
        line("Expected transit", f"{route.expected_transit_days} days")

    heading(f"Cover ({cert.currency})")
    line("Sum insured", f"{cert.currency} {cert.sum_insured}")
    line("Total insured value", f"{cert.currency} {cert.total_insured_value}")
    line("Premium", f"{cert.currency} {cert.premium}")
    line("Deductible", f"{cert.currency} {cert.deductible}" if cert.deductible else "none")

    heading("Clauses")
    for clause in cert.clauses:
        line("-", clause)
    if cert.conditions:
        line("Conditions", cert.conditions)

    heading("Verification")
    line("Rules", f"{cert.pack.id}@{cert.pack.version}")
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(width, 5, "sha256 of the pack file:", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Courier", "", 9)
    pdf.multi_cell(width, 5, cert.pack.sha256, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(
        width,
        5,
        "sha256 of the policy record (canonical JSON, sorted keys, no whitespace, UTF-8):",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font("Courier", "", 9)
    pdf.multi_cell(width, 5, cert.record_sha256, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _goods(item: dict[str, Any]) -> GoodsLine:
    dims = item.get("dimensions_cm")
    return GoodsLine(
        description=item["description"],
        quantity=_opt(item.get("quantity")),
        weight_kg=_opt(item.get("weight_kg")),
        dimensions_cm=(f"{dims['length']} x {dims['width']} x {dims['height']}" if dims else None),
        value=_opt(item.get("value")),
    )


def _conveyance(facts: dict[str, Any], named: str | None) -> str:
    mode = str(facts["mode"])
    return f"{mode}: {named}" if named else mode


def _place(place: dict[str, Any]) -> str:
    port = place.get("port")
    return f"{place['country']} ({port})" if port else str(place["country"])


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _latin1(text: str) -> str:
    """The core PDF fonts are Latin-1: keep what fits, spell out the rest."""
    try:
        text.encode("latin-1")
        return text
    except UnicodeEncodeError:
        decomposed = unicodedata.normalize("NFKD", text)
        return decomposed.encode("latin-1", "replace").decode("latin-1")
