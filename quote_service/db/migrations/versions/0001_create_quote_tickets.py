"""Create quote.quote_tickets.

Revision ID: 0001_create_quote_tickets
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_create_quote_tickets"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT = sa.Numeric(38, 18)


def upgrade() -> None:
    op.create_table(
        "quote_tickets",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("ramp_type", sa.String(8), nullable=False),
        sa.Column("from_network", sa.String(32), nullable=False),
        sa.Column("to_network", sa.String(32), nullable=False),
        sa.Column("input_amount", AMOUNT, nullable=False),
        sa.Column("input_currency", sa.String(12), nullable=False),
        sa.Column("output_amount", AMOUNT, nullable=False),
        sa.Column("output_currency", sa.String(12), nullable=False),
        sa.Column("rate", AMOUNT, nullable=False),
        sa.Column("fee_network", AMOUNT, nullable=False),
        sa.Column("fee_platform", AMOUNT, nullable=False),
        sa.Column("fee_anchor", AMOUNT, nullable=False),
        sa.Column("fee_partner_markup", AMOUNT, nullable=False),
        sa.Column("fee_total", AMOUNT, nullable=False),
        sa.Column("fee_currency", sa.String(12), nullable=False),
        sa.Column("partner_id", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("consumed_by", sa.String(64)),
        sa.Column("consumed_at", postgresql.TIMESTAMP(timezone=True)),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("expires_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('PENDING', 'CONSUMED', 'EXPIRED')", name="status_valid"),
        sa.CheckConstraint(
            "(status = 'CONSUMED') = (consumed_by IS NOT NULL)", name="consumed_has_consumer"
        ),
        sa.CheckConstraint("input_amount > 0 AND output_amount > 0", name="amounts_positive"),
        sa.CheckConstraint(
            "fee_total = fee_network + fee_platform + fee_anchor + fee_partner_markup",
            name="fee_total_is_sum",
        ),
        schema="quote",
    )
    op.create_index(
        "ix_quote_tickets_status_expires_at",
        "quote_tickets",
        ["status", "expires_at"],
        schema="quote",
    )


def downgrade() -> None:
    op.drop_table("quote_tickets", schema="quote")
