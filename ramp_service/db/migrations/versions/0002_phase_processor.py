"""Phase processor: operation journal and post-complete cleanup tracking.

Revision ID: 0002_phase_processor
Revises: 0001_create_ramp_schema
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_phase_processor"
down_revision: str | None = "0001_create_ramp_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "ramp"
TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    # The next post-complete cleanup phase to run; NULL when none is left.
    op.add_column("ramps", sa.Column("cleanup_phase", sa.String(32)), schema=S)
    op.add_column("ramps", sa.Column("status_reason", sa.Text), schema=S)
    op.drop_index("ix_ramps_due", "ramps", schema=S)
    op.create_index(
        "ix_ramps_due",
        "ramps",
        ["next_attempt_at"],
        schema=S,
        postgresql_where=sa.text(
            "status = 'RUNNING' OR (status = 'COMPLETE' AND cleanup_phase IS NOT NULL)"
        ),
    )
    op.create_table(
        "operations",
        sa.Column(
            "ramp_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.ramps.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("phase", sa.String(32), primary_key=True),
        sa.Column("operation", sa.String(32), primary_key=True),
        sa.Column("network", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tx_hash", sa.String(80)),
        sa.Column("signer", sa.Text),
        sa.Column("nonce", sa.BigInteger),
        sa.Column("payload", sa.Text),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "state IN ('intent','submitted','confirmed','failed','unknown')", name="state_valid"
        ),
        schema=S,
    )
    op.create_index("ix_operations_state", "operations", ["state"], schema=S)


def downgrade() -> None:
    op.drop_table("operations", schema=S)
    op.drop_index("ix_ramps_due", "ramps", schema=S)
    op.create_index(
        "ix_ramps_due",
        "ramps",
        ["next_attempt_at"],
        schema=S,
        postgresql_where=sa.text("status = 'RUNNING'"),
    )
    op.drop_column("ramps", "status_reason", schema=S)
    op.drop_column("ramps", "cleanup_phase", schema=S)
