"""Ramps that ended without the user's money, with a follow-up phase, are claimable.

A SELL ramp that timed out, failed or was cancelled before its deposit keeps its deposit address
watched for money sent anyway (the `watchLateDeposit` follow-up, held in `cleanup_phase` as
post-complete cleanup is). The claim's partial index must cover those rows: its predicate now
takes `TIMED_OUT`, `FAILED` and `CANCELLED` beside `COMPLETE`.
Built concurrently, so the processor keeps claiming while it builds; a run interrupted at any
step (an INVALID half-built index included) can simply be run again.

Revision ID: 0005_follow_ups_after_abort
Revises: 0004_idempotency_claims
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0005_follow_ups_after_abort"
down_revision: str | None = "0004_idempotency_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "ramp"
NEW = (
    "status = 'RUNNING' OR (status IN ('COMPLETE', 'TIMED_OUT', 'FAILED', 'CANCELLED')"
    " AND cleanup_phase IS NOT NULL)"
)
OLD = "status = 'RUNNING' OR (status = 'COMPLETE' AND cleanup_phase IS NOT NULL)"


def _valid(name: str) -> bool | None:
    """Whether index `name` of schema `ramp` is valid; None when there is none."""
    found = op.get_bind().execute(
        text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND c.relname = :name"
        ),
        {"schema": S, "name": name},
    )
    return found.scalar()


def _swap(predicate: str) -> None:
    """Build the new index beside the old one, then drop the old one and take its name. What an
    interrupted run left under the new name (an INVALID half-built index, or a valid one built
    for the other direction) is dropped and built again; the old index goes only once the new
    one is valid."""
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {S}.ix_ramps_due_next")
        op.execute(
            f"CREATE INDEX CONCURRENTLY ix_ramps_due_next "
            f"ON {S}.ramps (next_attempt_at) WHERE {predicate}"
        )
        if not _valid("ix_ramps_due_next"):
            raise RuntimeError("ix_ramps_due_next is not valid; ix_ramps_due is kept")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {S}.ix_ramps_due")
        op.execute(f"ALTER INDEX {S}.ix_ramps_due_next RENAME TO ix_ramps_due")


# SELL ramps (flow sell-v1) that ended without their deposit within the watch's default window
# (LATE_DEPOSIT_WATCH_S, three days) before this release are watched too: money that reached one
# after it ended, before anyone looked, is found. The watch counts from when each ended (so it
# resumes at its slower, later pace and ends three days after the ramp did) and the first reads
# are spread over a quarter of an hour instead of all falling due at once, ahead of live ramps.
# Only ramps with no journal entry (nothing was ever sent for them: an older release could fail
# a SELL after its deposit). Written out here, not imported: a migration stays what it ran as.
ABORTED = "('TIMED_OUT', 'FAILED', 'CANCELLED')"
WATCH_RECENT = f"""
UPDATE {S}.ramps AS r
SET cleanup_phase = 'watchLateDeposit', phase_started_at = r.updated_at, attempts = 0,
    next_attempt_at = now() + random() * interval '15 minutes'
WHERE r.flow_version = 'sell-v1' AND r.status IN {ABORTED} AND r.cleanup_phase IS NULL
  AND r.updated_at > now() - interval '3 days'
  AND NOT EXISTS (SELECT 1 FROM {S}.operations AS o WHERE o.ramp_id = r.id)
"""
UNWATCH = f"""
UPDATE {S}.ramps SET cleanup_phase = NULL
WHERE status IN {ABORTED} AND cleanup_phase = 'watchLateDeposit'
"""


def upgrade() -> None:
    _swap(NEW)
    op.execute(WATCH_RECENT)


def downgrade() -> None:
    _swap(OLD)
    op.execute(UNWATCH)  # the old processor claims no ended ramp but a complete one
