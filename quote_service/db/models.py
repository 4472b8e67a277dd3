"""Tables of schema `quote`."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Index, MetaData, Numeric, String, Text, text
from sqlalchemy.dialects.postgresql import TIMESTAMP, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from quote_service.db import SCHEMA

AMOUNT = Numeric(38, 18)


class Base(DeclarativeBase):
    """Declarative base bound to schema `quote`."""

    metadata = MetaData(schema=SCHEMA)


class QuoteRow(Base):
    """One quote ticket."""

    __tablename__ = "quote_tickets"
    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'CONSUMED', 'EXPIRED')", name="status_valid"),
        CheckConstraint(
            "(status = 'CONSUMED') = (consumed_by IS NOT NULL)", name="consumed_has_consumer"
        ),
        CheckConstraint("input_amount > 0 AND output_amount > 0", name="amounts_positive"),
        CheckConstraint(
            "fee_total = fee_network + fee_platform + fee_anchor + fee_partner_markup",
            name="fee_total_is_sum",
        ),
        # Cleanup finds pending quotes past expiry and old expired ones by this index.
        Index("ix_quote_tickets_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    ramp_type: Mapped[str] = mapped_column(String(8))
    from_network: Mapped[str] = mapped_column(String(32))
    to_network: Mapped[str] = mapped_column(String(32))
    input_amount: Mapped[Decimal] = mapped_column(AMOUNT)
    input_currency: Mapped[str] = mapped_column(String(12))
    output_amount: Mapped[Decimal] = mapped_column(AMOUNT)
    output_currency: Mapped[str] = mapped_column(String(12))
    rate: Mapped[Decimal] = mapped_column(AMOUNT)
    fee_network: Mapped[Decimal] = mapped_column(AMOUNT)
    fee_platform: Mapped[Decimal] = mapped_column(AMOUNT)
    fee_anchor: Mapped[Decimal] = mapped_column(AMOUNT)
    fee_partner_markup: Mapped[Decimal] = mapped_column(AMOUNT)
    fee_total: Mapped[Decimal] = mapped_column(AMOUNT)
    fee_currency: Mapped[str] = mapped_column(String(12))
    partner_id: Mapped[str] = mapped_column(Text, server_default=text("''"))
    status: Mapped[str] = mapped_column(String(12))
    consumed_by: Mapped[str | None] = mapped_column(String(64))
    consumed_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))
