"""The book's tables: quotes, policies, endorsements and the event log, as SQLAlchemy Core.

Money is exact in every database: PostgreSQL's unconstrained NUMERIC keeps the scale it is
given (812.88 stays 812.88), and SQLite, which has no decimal type (its NUMERIC affinity
turns 0.1 into a binary float), stores the decimal's text. Either way the Python side is a
`Decimal`. Timestamps are ISO 8601 UTC text, so both databases sort and compare them alike.

The migrations under `migrations/versions` create exactly these tables; a test checks that
the migrated schema and this metadata agree.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class Money(TypeDecorator[Decimal]):
    """An exact decimal: NUMERIC where the database has one, its text where it has not."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


metadata = MetaData()

# One row per quote. `state`: accepted (the rules accepted it), referred (waiting for an
# underwriter), approved (an underwriter accepted it), declined (by the rules or an
# underwriter; final), bound (a policy was issued from it).
quotes = Table(
    "tiv_quotes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", String(32), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("insured", Text, nullable=False),
    Column("conveyance", Text, nullable=True),
    Column("pack_id", String(64), nullable=False, index=True),
    Column("pack_version", String(32), nullable=False),
    Column("pack_sha256", String(64), nullable=False),
    Column("rules_id", String(32), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("valid_until", Date, nullable=False),
    Column("shipment_id", Text, nullable=False),
    Column("facts", Text, nullable=False),  # canonical JSON of the shipment facts
    Column("valuation", Text, nullable=False),  # the full Valuation JSON, trace included
    Column("currency", String(3), nullable=False),
    Column("total_insured_value", Money, nullable=False),
    Column("premium", Money, nullable=True),
    Column("deductible", Money, nullable=True),
    Column("decision", String(16), nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list of {decision, rule, reason, source}
    Column("reviewed_by", Text, nullable=True),
    Column("review_reason", Text, nullable=True),
    Column("reviewed_at", String(32), nullable=True),
    Column("override_premium", Money, nullable=True),
    Column("override_conditions", Text, nullable=True),
    Column("audit_id", String(64), nullable=True),
)

# One row per bound policy. `premium` is what has been charged so far (bound premium plus
# endorsement adjustments); `state`: in_force or cancelled.
policies = Table(
    "tiv_policies",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("quote_id", String(40), ForeignKey("tiv_quotes.id"), nullable=False),
    Column("certificate_number", String(40), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("bound_at", String(32), nullable=False),
    Column("effective_date", Date, nullable=False),
    Column("payment_ref", Text, nullable=False),
    Column("payment_amount", Money, nullable=False),
    Column("premium", Money, nullable=False),
    Column("rule_premium", Money, nullable=True),  # the rules' figure for the current facts
    Column("facts", Text, nullable=False),  # the current facts (after endorsements)
    Column("total_insured_value", Money, nullable=False),
    Column("sum_insured", Money, nullable=False),
    Column("deductible", Money, nullable=True),
    Column("clauses", Text, nullable=False),  # JSON list: the pack's, fixed when bound
    Column("endorsements", Integer, nullable=False),
    Column("cancelled_at", String(32), nullable=True),
    Column("returned_premium", Money, nullable=True),
    UniqueConstraint("quote_id", name="tiv_policies_one_per_quote"),
    UniqueConstraint("certificate_number", name="tiv_policies_certificate_number"),
)

# Endorsements and cancellations: what changed and the premium it moved.
endorsements = Table(
    "tiv_endorsements",
    metadata,
    Column("policy_id", String(40), ForeignKey("tiv_policies.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # endorse, cancel
    Column("at", String(32), nullable=False),
    Column("by", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("changes", Text, nullable=False),  # JSON of the changed facts
    Column("total_insured_value", Money, nullable=True),
    Column("rule_premium_before", Money, nullable=True),
    Column("rule_premium_after", Money, nullable=True),
    Column("premium_before", Money, nullable=False),
    Column("premium_after", Money, nullable=False),
    Column("premium_change", Money, nullable=False),  # + additional, - returned
    Column("audit_id", String(64), nullable=True),
)

# Every state change, in order, with the audit record that mirrors it.
events = Table(
    "tiv_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("quote_id", String(40), nullable=False, index=True),
    Column("policy_id", String(40), nullable=True),
    Column("detail", Text, nullable=False),
    Column("audit_id", String(64), nullable=True),
)
