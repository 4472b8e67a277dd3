"""Idempotency claims carry a token.

A request that ran past its key's lock lost the key to a retry; without a token its late
release deleted the retry's claim (and a third request then ran beside the retry), and its late
completion overwrote it. Completing and releasing now match the claim's own token.

Revision ID: 0004_idempotency_claims
Revises: 0003_hot_queue_updates
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0004_idempotency_claims"
down_revision: str | None = "0003_hot_queue_updates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "ramp"


def upgrade() -> None:
    # Nullable, no default: a catalog-only change, no table rewrite. Claims taken before the
    # upgrade have none; they complete or expire as before.
    op.add_column("idempotency_keys", sa.Column("claim", UUID(as_uuid=True)), schema=S)


def downgrade() -> None:
    op.drop_column("idempotency_keys", "claim", schema=S)
