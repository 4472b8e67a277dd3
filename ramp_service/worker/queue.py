"""The work queue in schema `ramp`: claims with leases and fencing generations, fenced writes.

Every write a run makes is compare-and-swap on (ramp id, generation, lease owner) and, for
phase changes, the current phase. A run whose lease was taken over fails that check and stops
(`LeaseLost`) before its next write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.db.models import RampErrorRow, RampRow
from ramp_service.domain.flows import ABORTED_STATUSES
from service_kit.coalesce import Coalescer
from service_kit.db import DirectPool, one_items_fault

CLAIM_SQL = """
    WITH due AS (
        SELECT id FROM ramp.ramps
        WHERE (status = 'RUNNING' OR (status IN ('COMPLETE', 'TIMED_OUT', 'FAILED', 'CANCELLED')
                                      AND cleanup_phase IS NOT NULL))
          AND next_attempt_at <= %(now)s
          AND (lease_expires_at IS NULL OR lease_expires_at < %(now)s)
        ORDER BY next_attempt_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE ramp.ramps AS r
    SET generation = r.generation + 1, lease_owner = %(owner)s, lease_expires_at = %(until)s
    FROM due WHERE r.id = due.id
    RETURNING r.id, r.generation, r.status, r.current_phase, r.cleanup_phase, r.flow_version,
              r.attempts, r.phase_started_at
"""


# Fenced compare-and-swaps of ramp rows plus their phase events (and errors, when given), for
# every move a processor's ramps made in one event-loop turn, as one statement: a row's event and
# error exist only if its swap matched. Prepared once on the driver connection, one round trip,
# atomic on an autocommit connection. The moves travel as one JSON array (one parameter to
# encode instead of a list per column: psycopg dumps lists element by element in Python).
# A move leaves next_attempt_at alone (the ramp was due when claimed and stays due for whoever
# claims it next) and touches no other indexed column while the status stays, so PostgreSQL can
# update the row in place (HOT: no index entries), ten times per ramp; see migration 0003.
# The ramps are named by key (`= ANY` of the input's ids) as well as joined: with only the join,
# a table analyzed while no ramp held a lease (so "no row has this owner") was scanned whole per
# move wherever the planner took that for cheaper than a key lookup per ramp (EXPLAIN, 5000
# ramps: a sequential scan per move, 1.4 -> 9.6 ms as the table's dead rows grew; now a key
# lookup whatever the statistics).
MOVE_MANY_SQL = """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(moves)s::jsonb) AS i(
        id uuid, generation bigint, check_phase bool, phase_from text, status_from text,
        phase_to text, status_to text, cleanup text, reason text, now timestamptz,
        event_from text, event_to text, event_status text, actor text, note text, e_phase text,
        e_reason text, e_message text, e_recoverable bool)
), moved AS (
    UPDATE ramp.ramps AS r
    SET current_phase = i.phase_to, status = i.status_to, cleanup_phase = i.cleanup,
        attempts = 0, phase_started_at = i.now, updated_at = i.now,
        status_reason = COALESCE(i.reason, r.status_reason)
    FROM input AS i
    WHERE r.id = ANY(ARRAY(SELECT id FROM input))
      AND r.id = i.id AND r.generation = i.generation AND r.lease_owner = %(owner)s
      AND (NOT i.check_phase OR (r.current_phase = i.phase_from AND r.status = i.status_from))
    RETURNING r.id, r.generation
), event AS (
    INSERT INTO ramp.phase_events (ramp_id, from_phase, to_phase, status, actor, note, created_at)
    SELECT i.id, i.event_from, i.event_to, i.event_status, i.actor, i.note, i.now
    FROM input AS i JOIN moved USING (id, generation)
), error AS (
    INSERT INTO ramp.errors (ramp_id, phase, reason, message, recoverable, created_at)
    SELECT i.id, i.e_phase, i.e_reason, i.e_message, i.e_recoverable, i.now
    FROM input AS i JOIN moved USING (id, generation) WHERE i.e_phase IS NOT NULL
)
SELECT id, generation FROM moved
"""

# Gives back the leases of every ramp a processor finished with in one turn.
RELEASE_MANY_SQL = """
UPDATE ramp.ramps AS r SET lease_owner = NULL, lease_expires_at = NULL
FROM unnest(%(id)s::uuid[], %(generation)s::bigint[]) AS i(id, generation)
WHERE r.id = i.id AND r.generation = i.generation AND r.lease_owner = %(owner)s
"""


class LeaseLost(Exception):
    """Another worker owns the ramp now; this run must stop without writing."""


@dataclass
class Claim:
    """A ramp this worker holds, with the generation that fences its writes."""

    ramp_id: uuid.UUID
    generation: int
    status: str
    phase: str
    cleanup_phase: str | None
    flow_version: str
    attempts: int
    phase_started_at: datetime

    @property
    def active_phase(self) -> str:
        """The phase to run: the main phase, or the pending follow-up phase once the ramp ended
        (cleanup after `complete`, a watch after it ended without the user's money)."""
        if self.status in FOLLOW_UP_STATUSES and self.cleanup_phase is not None:
            return self.cleanup_phase
        return self.phase

    @property
    def following_up(self) -> bool:
        """The ramp ended and runs its follow-up phases (see Flow.follow_ups)."""
        return self.status in FOLLOW_UP_STATUSES and self.cleanup_phase is not None


# As CLAIM_SQL and ix_ramps_due say.
FOLLOW_UP_STATUSES = frozenset({"COMPLETE"}) | ABORTED_STATUSES
REASON_MAX = 64  # ramp.errors.reason is varchar(64)


@dataclass(frozen=True)
class ErrorEntry:
    """An error to record with a state change (its reason cut to what the column holds: a
    longer one would fail the write that records it, and with it the ramp's move)."""

    phase: str
    reason: str
    message: str
    recoverable: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", _storable(self.reason, REASON_MAX))


def _storable(text: str, limit: int) -> str:
    """`text` as a PostgreSQL text column takes it: no NUL (nor jsonb its escape), at most
    `limit` characters."""
    return text.replace("\x00", "")[:limit]


class WorkQueue:
    """Claims due ramps and writes their state changes, always fenced."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        direct: DirectPool,
        owner: str,
        lease_for: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self._direct = direct  # the hot single statements: claims, moves, releases
        self.owner = owner
        self.lease_for = lease_for
        self.clock = clock
        # Moves and releases of ramps driven concurrently share round trips (see coalesce.py).
        self._moves: Coalescer[dict[str, object], bool] = Coalescer(
            self._move_many, one_items_fault
        )
        self._releases: Coalescer[Claim, None] = Coalescer(self._release_many, one_items_fault)

    async def claim_due(self, limit: int) -> list[Claim]:
        """Take leases on up to `limit` due ramps in one atomic statement."""
        now = self.clock()
        params = {"now": now, "limit": limit, "owner": self.owner, "until": now + self.lease_for}
        async with self._direct.connection() as conn:  # one statement: atomic by itself
            cursor = await conn.execute(CLAIM_SQL, params, prepare=True)
            return [Claim(*row) for row in await cursor.fetchall()]

    def _fenced(self, claim: Claim) -> list[ColumnElement[bool]]:
        return [
            RampRow.id == claim.ramp_id,
            RampRow.generation == claim.generation,
            RampRow.lease_owner == self.owner,
        ]

    async def heartbeat(self, claim: Claim) -> None:
        """Extend the lease; raise LeaseLost when it is no longer ours."""
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(RampRow)
                .where(*self._fenced(claim))
                .values(lease_expires_at=self.clock() + self.lease_for)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(str(claim.ramp_id))

    async def check_lease(self, session: AsyncSession, claim: Claim) -> None:
        """Inside `session`'s transaction: lock the ramp row and prove the lease is still ours."""
        result = await session.execute(
            update(RampRow)
            .where(*self._fenced(claim))
            .values(lease_expires_at=self.clock() + self.lease_for)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(str(claim.ramp_id))

    async def move(
        self,
        claim: Claim,
        *,
        to_phase: str | None = None,
        status: str | None = None,
        error: ErrorEntry | None = None,
        reason: str | None = None,
        first_cleanup: str | None = None,
        actor: str = "worker",
        note: str = "",
    ) -> None:
        """Change phase and/or status (CAS on phase, status and generation) with its event
        (whose note is the reason, else `note`)."""
        now = self.clock()
        values: dict[str, object] = {
            "current_phase": to_phase or claim.phase,
            "status": status or claim.status,
            "cleanup_phase": first_cleanup,
            "attempts": 0,
            "phase_started_at": now,
            "updated_at": now,
        }
        if reason is not None:
            values["status_reason"] = reason
        await self._write(
            claim,
            values,
            to_phase or claim.phase,
            status or claim.status,
            error,
            actor,
            reason or note,
            check_phase=True,
        )
        claim.phase = to_phase or claim.phase
        claim.status = status or claim.status
        claim.cleanup_phase = first_cleanup
        claim.attempts = 0
        claim.phase_started_at = now

    async def step_cleanup(
        self,
        claim: Claim,
        next_cleanup: str | None,
        error: ErrorEntry | None = None,
        note: str | None = None,
        status_reason: str | None = None,
    ) -> None:
        """Record a finished (or abandoned) follow-up phase and set the next one, if any (and
        a new status reason, when given)."""
        now = self.clock()
        done = claim.active_phase
        values: dict[str, object] = {
            "cleanup_phase": next_cleanup,
            "attempts": 0,
            "phase_started_at": now,
            "updated_at": now,
        }
        if status_reason is not None:
            values["status_reason"] = status_reason
        note = note or ("abandoned" if error else "done")
        await self._write(
            claim, values, done, claim.status, error, "worker", note, check_phase=False
        )
        claim.cleanup_phase = next_cleanup
        claim.attempts = 0
        claim.phase_started_at = now

    async def _write(
        self,
        claim: Claim,
        values: dict[str, object],
        event_phase: str,
        event_status: str,
        error: ErrorEntry | None,
        actor: str,
        note: str,
        *,
        check_phase: bool,
    ) -> None:
        now = values["updated_at"]
        if actor == "worker":
            actor = f"worker:{self.owner}"  # which process made the move
        # Only JSON's own types: the moves are encoded without a `default` hook, which would
        # call back into Python twice per move (12% of a processor's CPU, py-spy).
        params = {
            "id": str(claim.ramp_id),
            "generation": claim.generation,
            "check_phase": check_phase,
            "phase_from": claim.phase,
            "status_from": claim.status,
            "phase_to": values.get("current_phase", claim.phase),
            "status_to": values.get("status", claim.status),
            "cleanup": values["cleanup_phase"],
            "reason": _storable(str(values["status_reason"]), 2000)
            if values.get("status_reason") is not None
            else None,
            "now": str(now),
            "event_from": claim.active_phase,
            "event_to": event_phase,
            "event_status": event_status,
            "actor": actor,
            "note": _storable(note, 2000),
            "e_phase": error.phase if error else None,
            "e_reason": error.reason if error else None,
            "e_message": _storable(error.message, 2000) if error else None,
            "e_recoverable": error.recoverable if error else None,
        }
        if not await self._moves.submit(params):
            raise LeaseLost(str(claim.ramp_id))

    async def _move_many(self, moves: Sequence[dict[str, object]]) -> list[bool]:
        """Apply `moves` in one statement; whether each one's swap matched."""
        params = {"moves": json.dumps(moves), "owner": self.owner}
        async with self._direct.connection() as conn:
            cursor = await conn.execute(MOVE_MANY_SQL, params, prepare=True)
            moved = {(str(row[0]), row[1]) for row in await cursor.fetchall()}
        # By (id, generation): a stale run's move and its successor's can share a batch.
        return [(move["id"], move["generation"]) in moved for move in moves]

    async def reschedule(
        self,
        claim: Claim,
        delay: timedelta,
        error: ErrorEntry | None,
        *,
        reset_attempts: bool = False,
    ) -> None:
        """Try the same phase again after `delay`; a recorded error counts as an attempt
        (`reset_attempts`: the phase checked successfully, its failures start again from 0)."""
        now = self.clock()
        attempts = 0 if reset_attempts else claim.attempts + (1 if error is not None else 0)
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(RampRow)
                .where(*self._fenced(claim))
                .values(
                    attempts=attempts,
                    next_attempt_at=now + delay,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(str(claim.ramp_id))
            if error is not None:
                session.add(self._error_row(claim, error, now))
        claim.attempts = attempts

    async def release(self, claim: Claim) -> None:
        """Give the lease back (no-op when it is no longer ours)."""
        await self._releases.submit(claim)

    async def _release_many(self, claims: Sequence[Claim]) -> list[None]:
        params = {
            "id": [c.ramp_id for c in claims],
            "generation": [c.generation for c in claims],
            "owner": self.owner,
        }
        async with self._direct.connection() as conn:
            await conn.execute(RELEASE_MANY_SQL, params, prepare=True)
        return [None] * len(claims)

    def _error_row(self, claim: Claim, error: ErrorEntry, now: datetime) -> RampErrorRow:
        return RampErrorRow(
            ramp_id=claim.ramp_id,
            phase=error.phase,
            reason=error.reason,
            message=_storable(error.message, 2000),
            recoverable=error.recoverable,
            created_at=now,
        )
