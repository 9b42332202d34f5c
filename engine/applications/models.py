"""What the workflow returns: quotes, policies, endorsements and certificates, as pydantic models.

Amounts are decimal strings in the quote's currency, as in `engine.Valuation`, so no
consumer reads a figure through a binary float. These models are the JSON of the CLI's
`--format json` and of the HTTP endpoints.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine import Valuation
from engine.compliance.audit import (
    canonical_json,  # the one canonical form: audit records, policy records
)

DecimalText = str
QuoteState = Literal["accepted", "referred", "approved", "declined", "bound"]
PolicyState = Literal["in_force", "cancelled"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PackRef(_Out):
    id: str
    version: str
    sha256: str = Field(description="of the pack's bytes, as in the valuation's policy")


class QuoteReason(_Out):
    decision: Literal["refer", "decline"]
    rule: str
    reason: str
    source: str = Field(description="`path:line` of the rule")


class Review(_Out):
    decision: Literal["approve", "decline"]
    by: str = Field(description="the underwriter")
    reason: str
    at: str = Field(description="UTC, ISO 8601")
    rule_premium: DecimalText | None = Field(description="the premium the rules computed")
    override_premium: DecimalText | None = Field(
        None, description="the premium the underwriter set instead, when overridden"
    )
    conditions: str | None = Field(None, description="conditions the underwriter added")


class Quote(_Out):
    id: str
    created_at: str = Field(description="UTC, ISO 8601")
    state: QuoteState
    insured: str
    conveyance: str | None = None
    policy: PackRef = Field(description="the pack version that priced it")
    rules_id: str = Field(description="digest of every rule file loaded when it was priced")
    as_of: datetime.date = Field(description="the date the pack version was selected for")
    valid_until: datetime.date = Field(description="the last day it may be bound")
    shipment_id: str
    currency: str
    total_insured_value: DecimalText
    premium: DecimalText | None = Field(description="the rules' premium")
    deductible: DecimalText | None
    decision: Literal["accept", "refer", "decline"] = Field(description="the rules' decision")
    reasons: list[QuoteReason]
    review: Review | None = None
    premium_due: DecimalText | None = Field(
        description="what binding costs: the override premium if any, else the rules'"
    )
    policy_id: str | None = Field(None, description="the policy bound from it")
    audit_id: str | None = Field(None, description="the audit record of the quote")


class Payment(_Out):
    reference: str
    amount: DecimalText


class Endorsement(_Out):
    seq: int
    kind: Literal["endorse", "cancel"]
    at: str
    by: str | None = None
    reason: str | None = None
    changes: dict[str, Any] = Field(description="the shipment facts changed")
    total_insured_value: DecimalText | None = None
    rule_premium_before: DecimalText | None = None
    rule_premium_after: DecimalText | None = None
    premium_before: DecimalText
    premium_after: DecimalText
    premium_change: DecimalText = Field(description="+ additional premium, - returned premium")
    audit_id: str | None = None


class Policy(_Out):
    id: str
    quote_id: str
    certificate_number: str
    state: PolicyState
    insured: str
    conveyance: str | None = None
    policy: PackRef
    bound_at: str
    effective_date: datetime.date
    payment: Payment
    currency: str
    facts: dict[str, Any] = Field(description="the shipment facts, endorsements applied")
    total_insured_value: DecimalText
    sum_insured: DecimalText = Field(description="the declared sum insured, else the TIV")
    premium: DecimalText = Field(description="charged so far: bound premium and endorsements")
    rule_premium: DecimalText | None
    deductible: DecimalText | None
    clauses: list[str]
    conditions: str | None = None
    endorsements: list[Endorsement]
    cancelled_at: str | None = None
    returned_premium: DecimalText | None = None

    def record(self) -> dict[str, Any]:
        """The policy record the certificate's hash covers: this model as JSON."""
        return self.model_dump(mode="json")

    def record_sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.record()).encode("utf-8")).hexdigest()


class GoodsLine(_Out):
    description: str
    quantity: DecimalText | None = None
    weight_kg: DecimalText | None = None
    dimensions_cm: str | None = None
    value: DecimalText | None = None


class Route(_Out):
    origin: str
    destination: str
    via: list[str] = Field(default_factory=list)
    mode: str
    departure: datetime.date
    expected_transit_days: int | None = None


class Certificate(_Out):
    """The certificate of insurance: what the insured shows, and the hash that binds it."""

    certificate_number: str
    policy_id: str
    insured: str
    goods: list[GoodsLine]
    conveyance: str
    route: Route
    currency: str
    sum_insured: DecimalText
    total_insured_value: DecimalText
    premium: DecimalText
    deductible: DecimalText | None
    clauses: list[str]
    conditions: str | None = None
    effective_date: datetime.date
    insurer: str = Field(description="the pack's title")
    pack: PackRef
    record_sha256: str = Field(
        description="sha256 of the canonical JSON of `record`: recompute it to check"
    )
    record: dict[str, Any] = Field(description="the policy record the hash covers")


class BookEvent(_Out):
    """What the audit chain records for a review, bind, cancel or endorsement."""

    event: Literal["review", "bind", "cancel", "endorse"]
    quote_id: str
    policy_id: str | None = None
    detail: dict[str, Any]
    valuation: Valuation = Field(description="the valuation the event rests on, no trace")
    audit_id: str | None = None


class Reproduction(_Out):
    quote_id: str
    same: bool
    differences: list[str] = Field(description="figure: recorded -> now")
