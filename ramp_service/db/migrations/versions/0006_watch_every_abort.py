"""Every SELL that ends without its deposit is watched, whoever ended it.

Migration 0005 runs before its rollout, and the previous release's pods keep ending ramps until
the rollout is over: they write TIMED_OUT, FAILED or CANCELLED with no follow-up phase, so a
deposit sent late to one of those was watched by nobody. From this release PostgreSQL sets the
watch itself: a trigger on the abort (a sell-v1 ramp's status becoming TIMED_OUT, FAILED or
CANCELLED with no follow-up phase, and no journal entry: nothing was ever sent for it) gives the
row the `watchLateDeposit` follow-up, due now, in the same statement as the abort. This
release's own writers already set it, so for them the trigger's condition is false and its
function never runs; the condition is evaluated on every update of a ramp row, which costs the
processor's moves nothing measurable (README, Performance).

The upgrade also catches up the ramps an older release's pods ended after 0005 ran (cleanup
phase empty, within the watch's default window, never watched: no event of the watch in their
history), as 0005 did for those before it.

Revision ID: 0006_watch_every_abort
Revises: 0005_follow_ups_after_abort
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_watch_every_abort"
down_revision: str | None = "0005_follow_ups_after_abort"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "ramp"
# Written out here, not imported: a migration stays what it ran as (see 0005).
ABORTED = "('TIMED_OUT', 'FAILED', 'CANCELLED')"

# The watch starts when the ramp ended: the writer's phase start when it set one, else now. It
# is due at once (a writer that left next_attempt_at alone left it due: the processor's move).
FUNCTION = f"""
CREATE OR REPLACE FUNCTION {S}.watch_after_abort() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {S}.operations AS o WHERE o.ramp_id = NEW.id) THEN
        NEW.cleanup_phase := 'watchLateDeposit';
        NEW.attempts := 0;
        IF NEW.phase_started_at IS NOT DISTINCT FROM OLD.phase_started_at THEN
            NEW.phase_started_at := now();
        END IF;
        IF NEW.next_attempt_at IS NULL OR NEW.next_attempt_at > now() THEN
            NEW.next_attempt_at := now();
        END IF;
    END IF;
    RETURN NEW;
END
$$
"""
# OR REPLACE: the trigger commits before the catch-up runs, so a run cut off in the catch-up
# (a killed Job) leaves it behind, and the run after it must get through.
TRIGGER = f"""
CREATE OR REPLACE TRIGGER watch_after_abort BEFORE UPDATE ON {S}.ramps FOR EACH ROW
WHEN (NEW.flow_version = 'sell-v1' AND NEW.status IN {ABORTED} AND OLD.status NOT IN {ABORTED}
      AND NEW.cleanup_phase IS NULL)
EXECUTE FUNCTION {S}.watch_after_abort()
"""

# As 0005's, for ramps never watched: a watch that ran to its end left the cleanup phase empty
# too, and its event (from and to `watchLateDeposit`) in the history.
CATCH_UP = f"""
UPDATE {S}.ramps AS r
SET cleanup_phase = 'watchLateDeposit', phase_started_at = r.updated_at, attempts = 0,
    next_attempt_at = now() + random() * interval '15 minutes'
WHERE r.flow_version = 'sell-v1' AND r.status IN {ABORTED} AND r.cleanup_phase IS NULL
  AND r.updated_at > now() - interval '3 days'
  AND NOT EXISTS (SELECT 1 FROM {S}.operations AS o WHERE o.ramp_id = r.id)
  AND NOT EXISTS (SELECT 1 FROM {S}.phase_events AS e
                  WHERE e.ramp_id = r.id AND e.from_phase = 'watchLateDeposit')
"""


# CREATE TRIGGER takes a lock that stops every writer of the table, and writers queue behind it
# while it waits for one: better to fail the migration (run again) than to stall the processor.
LOCK_TIMEOUT = "SET LOCAL lock_timeout = '10s'"


def upgrade() -> None:
    op.execute(LOCK_TIMEOUT)
    op.execute(FUNCTION)
    op.execute(TRIGGER)
    # The trigger commits first (the table lock CREATE TRIGGER takes goes with it), then the
    # catch-up runs on its own, holding only the rows it sets: no abort falls between the two.
    with op.get_context().autocommit_block():
        op.execute(CATCH_UP)


def downgrade() -> None:
    # The watches set stay: the release before this one runs them (0005).
    op.execute(LOCK_TIMEOUT)
    op.execute(f"DROP TRIGGER IF EXISTS watch_after_abort ON {S}.ramps")
    op.execute(f"DROP FUNCTION IF EXISTS {S}.watch_after_abort()")
