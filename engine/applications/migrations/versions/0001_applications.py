"""Quotes, policies, endorsements and the event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _money() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    # SQLite has no exact decimal type: the text of the decimal is stored (see tables.py).
    return sa.String(64) if op.get_bind().dialect.name == "sqlite" else sa.Numeric()


def upgrade() -> None:
    money = _money
    op.create_table(
        "tiv_quotes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("insured", sa.Text, nullable=False),
        sa.Column("conveyance", sa.Text, nullable=True),
        sa.Column("pack_id", sa.String(64), nullable=False, index=True),
        sa.Column("pack_version", sa.String(32), nullable=False),
        sa.Column("pack_sha256", sa.String(64), nullable=False),
        sa.Column("rules_id", sa.String(32), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("valid_until", sa.Date, nullable=False),
        sa.Column("shipment_id", sa.Text, nullable=False),
        sa.Column("facts", sa.Text, nullable=False),
        sa.Column("valuation", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_insured_value", money(), nullable=False),
        sa.Column("premium", money(), nullable=True),
        sa.Column("deductible", money(), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("reviewed_by", sa.Text, nullable=True),
        sa.Column("review_reason", sa.Text, nullable=True),
        sa.Column("reviewed_at", sa.String(32), nullable=True),
        sa.Column("override_premium", money(), nullable=True),
        sa.Column("override_conditions", sa.Text, nullable=True),
        sa.Column("audit_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "tiv_policies",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("quote_id", sa.String(40), sa.ForeignKey("tiv_quotes.id"), nullable=False),
        sa.Column("certificate_number", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("bound_at", sa.String(32), nullable=False),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("payment_ref", sa.Text, nullable=False),
        sa.Column("payment_amount", money(), nullable=False),
        sa.Column("premium", money(), nullable=False),
        sa.Column("rule_premium", money(), nullable=True),
        sa.Column("facts", sa.Text, nullable=False),
        sa.Column("total_insured_value", money(), nullable=False),
        sa.Column("sum_insured", money(), nullable=False),
        sa.Column("deductible", money(), nullable=True),
        sa.Column("clauses", sa.Text, nullable=False),
        sa.Column("endorsements", sa.Integer, nullable=False),
        sa.Column("cancelled_at", sa.String(32), nullable=True),
        sa.Column("returned_premium", money(), nullable=True),
        sa.UniqueConstraint("quote_id", name="tiv_policies_one_per_quote"),
        sa.UniqueConstraint("certificate_number", name="tiv_policies_certificate_number"),
    )
    op.create_table(
        "tiv_endorsements",
        sa.Column("policy_id", sa.String(40), sa.ForeignKey("tiv_policies.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("by", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("changes", sa.Text, nullable=False),
        sa.Column("total_insured_value", money(), nullable=True),
        sa.Column("rule_premium_before", money(), nullable=True),
        sa.Column("rule_premium_after", money(), nullable=True),
        sa.Column("premium_before", money(), nullable=False),
        sa.Column("premium_after", money(), nullable=False),
        sa.Column("premium_change", money(), nullable=False),
        sa.Column("audit_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "tiv_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("quote_id", sa.String(40), nullable=False, index=True),
        sa.Column("policy_id", sa.String(40), nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("audit_id", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    for table in ("tiv_events", "tiv_endorsements", "tiv_policies", "tiv_quotes"):
        op.drop_table(table)
