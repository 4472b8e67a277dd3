"""Create schema ramp: ramps, signing accounts, transactions, phase events, errors, idempotency.

Revision ID: 0001_create_ramp_schema
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_create_ramp_schema"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT = sa.Numeric(38, 18)
TS = postgresql.TIMESTAMP(timezone=True)
S = "ramp"
STATUSES = "'REGISTERED','RUNNING','COMPLETE','FAILED','TIMED_OUT','MANUAL_REVIEW','CANCELLED'"


def upgrade() -> None:
    op.create_table(
        "ramps",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("ramp_type", sa.String(8), nullable=False),
        sa.Column("corridor", sa.String(64), nullable=False),
        sa.Column("flow_version", sa.String(32), nullable=False),
        sa.Column("quote_id", postgresql.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("input_amount", AMOUNT, nullable=False),
        sa.Column("input_currency", sa.String(12), nullable=False),
        sa.Column("output_amount", AMOUNT, nullable=False),
        sa.Column("output_currency", sa.String(12), nullable=False),
        sa.Column("fee_total", AMOUNT, nullable=False),
        sa.Column("wallet_address", sa.Text, nullable=False),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("tax_id", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_phase", sa.String(32), nullable=False),
        sa.Column("partner_data", postgresql.JSONB, nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("start_deadline", TS, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires_at", TS),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS),
        sa.Column("phase_started_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="status_valid"),
        sa.CheckConstraint("pg_column_size(partner_data) < 8192", name="partner_data_bounded"),
        schema=S,
    )
    # History by wallet, newest first (keyset pagination on created_at, id).
    op.create_index(
        "ix_ramps_wallet_created",
        "ramps",
        ["wallet_address", sa.text("created_at DESC"), sa.text("id DESC")],
        schema=S,
    )
    # The phase processor's claim: running ramps that are due.
    op.create_index(
        "ix_ramps_due",
        "ramps",
        ["next_attempt_at"],
        schema=S,
        postgresql_where=sa.text("status = 'RUNNING'"),
    )
    # Cleanup: registered ramps past their start deadline.
    op.create_index(
        "ix_ramps_registered_deadline",
        "ramps",
        ["start_deadline"],
        schema=S,
        postgresql_where=sa.text("status = 'REGISTERED'"),
    )
    op.create_index(
        "ix_ramps_status_phase", "ramps", ["status", "current_phase", "updated_at"], schema=S
    )

    op.create_table(
        "signing_accounts",
        sa.Column(
            "ramp_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.ramps.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("network", sa.String(16), primary_key=True),
        sa.Column("address", sa.Text, nullable=False),
        sa.UniqueConstraint("network", "address", name="uq_signing_accounts_address"),
        schema=S,
    )
    op.create_table(
        "transactions",
        sa.Column(
            "ramp_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.ramps.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("phase", sa.String(32), primary_key=True),
        sa.Column("network", sa.String(16), primary_key=True),
        sa.Column("signer", sa.Text, nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("unsigned_payload", sa.Text, nullable=False),
        sa.Column("meta", postgresql.JSONB, nullable=False),
        sa.Column("presigned_payload", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tx_hash", sa.String(80)),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('ISSUED','PRESIGNED','SUBMITTED','CONFIRMED','FAILED')", name="status_valid"
        ),
        schema=S,
    )
    op.create_table(
        "phase_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "ramp_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.ramps.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("from_phase", sa.String(32)),
        sa.Column("to_phase", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        schema=S,
    )
    op.create_index("ix_phase_events_ramp", "phase_events", ["ramp_id", "id"], schema=S)
    op.create_table(
        "errors",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "ramp_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.ramps.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("recoverable", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        schema=S,
    )
    op.create_index("ix_errors_ramp", "errors", ["ramp_id", "id"], schema=S)
    op.create_table(
        "idempotency_keys",
        sa.Column("rpc", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response", sa.LargeBinary),
        sa.Column("grpc_code", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("locked_until", TS, nullable=False),
        sa.CheckConstraint("state IN ('IN_PROGRESS','COMPLETED')", name="state_valid"),
        schema=S,
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"], schema=S)


def downgrade() -> None:
    for table in (
        "idempotency_keys",
        "errors",
        "phase_events",
        "transactions",
        "signing_accounts",
        "ramps",
    ):
        op.drop_table(table, schema=S)
