"""Housekeeping SQL of schema `ramp`, run by the cleanup job in bounded batches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text

DELETE_KEYS = text(
    """
    DELETE FROM ramp.idempotency_keys
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM ramp.idempotency_keys WHERE created_at < :cutoff LIMIT :batch
    ))
    """
)

# Registered ramps past their start deadline become TIMED_OUT in phase timedOut, with an event.
TIME_OUT_UNSTARTED = text(
    """
    WITH due AS (
        SELECT id FROM ramp.ramps
        WHERE status = 'REGISTERED' AND start_deadline <= :now
        ORDER BY start_deadline LIMIT :batch FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE ramp.ramps AS r
        SET status = 'TIMED_OUT', current_phase = 'timedOut',
            status_reason = 'START_DEADLINE_PASSED',
            generation = r.generation + 1, updated_at = :now
        FROM due WHERE r.id = due.id
        RETURNING r.id
    )
    INSERT INTO ramp.phase_events (ramp_id, from_phase, to_phase, status, actor, note, created_at)
    SELECT id, 'initial', 'timedOut', 'TIMED_OUT', 'cleanup_job', 'start deadline passed', :now
    FROM moved
    """
)

# For the quote cleanup's batch statement: true where a ramp holds the quote `candidates.id`
# (schema `ramp` says what "held" means; schema `quote` composes it into its own delete).
QUOTE_HELD = "EXISTS (SELECT 1 FROM ramp.ramps AS r WHERE r.quote_id = candidates.id)"


def delete_idempotency_keys(conn: Connection, cutoff: datetime, batch: int) -> int:
    """Delete up to `batch` idempotency keys created before `cutoff`."""
    return conn.execute(DELETE_KEYS, {"cutoff": cutoff, "batch": batch}).rowcount


def time_out_unstarted(conn: Connection, now: datetime, batch: int) -> int:
    """Time out up to `batch` registered ramps whose start deadline passed."""
    return conn.execute(TIME_OUT_UNSTARTED, {"now": now, "batch": batch}).rowcount
