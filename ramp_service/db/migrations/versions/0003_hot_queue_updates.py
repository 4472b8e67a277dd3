"""In-place (HOT) updates for the phase processor's moves.

A move changes current_phase, phase_started_at and updated_at ten times per ramp. With
(status, current_phase, updated_at) indexed, every move wrote a new entry into each of the
table's indexes; with no index on those columns (and next_attempt_at left alone by moves) the
row is updated in place when its page has room, which fillfactor 80 keeps. Operators' listings
filter by status (few ramps are in review) and sort the matches.

Revision ID: 0003_hot_queue_updates
Revises: 0002_phase_processor
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_hot_queue_updates"
down_revision: str | None = "0002_phase_processor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "ramp"


def upgrade() -> None:
    op.drop_index("ix_ramps_status_phase", "ramps", schema=S)
    op.create_index("ix_ramps_status", "ramps", ["status"], schema=S)
    op.execute("ALTER TABLE ramp.ramps SET (fillfactor = 80)")


def downgrade() -> None:
    op.execute("ALTER TABLE ramp.ramps RESET (fillfactor)")
    op.drop_index("ix_ramps_status", "ramps", schema=S)
    op.create_index(
        "ix_ramps_status_phase", "ramps", ["status", "current_phase", "updated_at"], schema=S
    )
