"""Tables of schema `ramp`."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ramp_service.db import SCHEMA

AMOUNT = Numeric(38, 18)
TS = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    """Declarative base bound to schema `ramp`."""

    metadata = MetaData(schema=SCHEMA)


class RampRow(Base):
    """One ramp, its quote snapshot and the phase processor's bookkeeping."""

    __tablename__ = "ramps"
    __table_args__ = (
        # History by wallet, newest first (keyset pagination on created_at, id).
        Index(
            "ix_ramps_wallet_created", "wallet_address", text("created_at DESC"), text("id DESC")
        ),
        # The phase processor's claim: due ramps that still have work (running, or ended
        # with a follow-up phase left: cleanup after complete, a watch after an abort).
        Index(
            "ix_ramps_due",
            "next_attempt_at",
            postgresql_where=text(
                "status = 'RUNNING' OR (status IN ('COMPLETE', 'TIMED_OUT', 'FAILED', 'CANCELLED')"
                " AND cleanup_phase IS NOT NULL)"
            ),
        ),
        # Cleanup: registered ramps past their start deadline.
        Index(
            "ix_ramps_registered_deadline",
            "start_deadline",
            postgresql_where=text("status = 'REGISTERED'"),
        ),
        # Operators' listings by status. Nothing a processor move changes is indexed, so moves
        # are in-place (HOT) updates; the table keeps 20% of each page free for them
        # (fillfactor 80, migration 0003).
        Index("ix_ramps_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    ramp_type: Mapped[str] = mapped_column(String(8))
    corridor: Mapped[str] = mapped_column(String(64))
    flow_version: Mapped[str] = mapped_column(String(32))
    quote_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    input_amount: Mapped[Decimal] = mapped_column(AMOUNT)
    input_currency: Mapped[str] = mapped_column(String(12))
    output_amount: Mapped[Decimal] = mapped_column(AMOUNT)
    output_currency: Mapped[str] = mapped_column(String(12))
    fee_total: Mapped[Decimal] = mapped_column(AMOUNT)
    wallet_address: Mapped[str] = mapped_column(Text)
    destination: Mapped[str] = mapped_column(Text)
    tax_id: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    current_phase: Mapped[str] = mapped_column(String(32))
    # Partner facts (bounded): the anchor withdrawal id/account/memo, fixed at register; the PIX
    # charge's id, txid, code and expiry, fixed at start.
    partner_data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    request_hash: Mapped[str] = mapped_column(String(64))
    start_deadline: Mapped[datetime] = mapped_column(TS)
    # Phase processor bookkeeping (lease with fencing generation, retries).
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(TS)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(TS)
    phase_started_at: Mapped[datetime | None] = mapped_column(TS)
    cleanup_phase: Mapped[str | None] = mapped_column(String(32))
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)


class SigningAccountRow(Base):
    """An ephemeral account of a ramp; an address serves one ramp only, ever."""

    __tablename__ = "signing_accounts"
    __table_args__ = (UniqueConstraint("network", "address", name="uq_signing_accounts_address"),)

    ramp_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ramps.id", ondelete="CASCADE"), primary_key=True
    )
    network: Mapped[str] = mapped_column(String(16), primary_key=True)
    address: Mapped[str] = mapped_column(Text)


class RampTransactionRow(Base):
    """An issued transaction and, once received, its presigned counterpart."""

    __tablename__ = "transactions"

    ramp_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ramps.id", ondelete="CASCADE"), primary_key=True
    )
    phase: Mapped[str] = mapped_column(String(32), primary_key=True)
    network: Mapped[str] = mapped_column(String(16), primary_key=True)
    signer: Mapped[str] = mapped_column(Text)
    nonce: Mapped[int] = mapped_column(BigInteger)
    unsigned_payload: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, str]] = mapped_column(JSONB)
    presigned_payload: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    tx_hash: Mapped[str | None] = mapped_column(String(80))
    updated_at: Mapped[datetime] = mapped_column(TS)


class PhaseEventRow(Base):
    """Append-only phase history."""

    __tablename__ = "phase_events"
    __table_args__ = (Index("ix_phase_events_ramp", "ramp_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    ramp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ramps.id", ondelete="CASCADE"))
    from_phase: Mapped[str | None] = mapped_column(String(32))
    to_phase: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(TS)


class RampErrorRow(Base):
    """Errors recorded while a ramp ran."""

    __tablename__ = "errors"
    __table_args__ = (Index("ix_errors_ramp", "ramp_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    ramp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ramps.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    recoverable: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(TS)


class IdempotencyKeyRow(Base):
    """A stored response for (rpc, key), replayed to retries of the same request."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)

    rpc: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    grpc_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TS)
    locked_until: Mapped[datetime] = mapped_column(TS)
    # The token of the request holding or last holding the key: only it completes or
    # releases its claim (a request that ran past its lock may have lost the key to a retry).
    claim: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class OperationRow(Base):
    """Operation journal: the intent of a side effect, written before it, and its outcome."""

    __tablename__ = "operations"
    __table_args__ = (Index("ix_operations_state", "state"),)

    ramp_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ramps.id", ondelete="CASCADE"), primary_key=True
    )
    phase: Mapped[str] = mapped_column(String(32), primary_key=True)
    operation: Mapped[str] = mapped_column(String(32), primary_key=True)
    network: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    tx_hash: Mapped[str | None] = mapped_column(String(80))
    signer: Mapped[str | None] = mapped_column(Text)
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, default="")
    generation: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
