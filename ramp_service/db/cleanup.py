"""Housekeeping SQL of schema `ramp`, run by the cleanup job in bounded batches."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, text

from ramp_service.domain.flows import FIRST_AFTER_ABORT

DELETE_KEYS = text(
    """
    DELETE FROM ramp.idempotency_keys
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM ramp.idempotency_keys WHERE created_at < :cutoff LIMIT :batch
    ))
    """
)

# Registered ramps past their start deadline become TIMED_OUT in phase timedOut, with an event;
# those whose flow watches after a time-out (a SELL's deposit address: the user may have sent
# before starting) get that follow-up phase, due now, for the worker to run.
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
            cleanup_phase = CAST(:watch AS jsonb) ->> r.flow_version,
            next_attempt_at = :now, phase_started_at = :now, attempts = 0,
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
    params = {"now": now, "batch": batch, "watch": json.dumps(FIRST_AFTER_ABORT)}
    return conn.execute(TIME_OUT_UNSTARTED, params).rowcount
