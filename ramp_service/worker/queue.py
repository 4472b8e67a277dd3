"""The work queue in schema `ramp`: claims with leases and fencing generations, fenced writes.

Every write a run makes is compare-and-swap on (ramp id, generation, lease owner) and, for
phase changes, the current phase. A run whose lease was taken over fails that check and stops
(`LeaseLost`) before its next write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.db.models import RampErrorRow, RampRow
from service_kit.db import autocommit_session_factory

CLAIM_SQL = text(
    """
    WITH due AS (
        SELECT id FROM ramp.ramps
        WHERE (status = 'RUNNING' OR (status = 'COMPLETE' AND cleanup_phase IS NOT NULL))
          AND next_attempt_at <= :now
          AND (lease_expires_at IS NULL OR lease_expires_at < :now)
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE ramp.ramps AS r
    SET generation = r.generation + 1, lease_owner = :owner, lease_expires_at = :until
    FROM due WHERE r.id = due.id
    RETURNING r.id, r.generation, r.status, r.current_phase, r.cleanup_phase, r.flow_version,
              r.attempts, r.phase_started_at
    """
)


# A fenced compare-and-swap of the ramp row plus its phase event (and error, when given), as one
# statement: the event and error rows exist only if the swap matched. Prepared once, one round
# trip, atomic on an autocommit connection.
MOVE_SQL = text(
    """
    WITH moved AS (
        UPDATE ramp.ramps
        SET current_phase = :phase_to, status = :status_to, cleanup_phase = :cleanup,
            attempts = 0, next_attempt_at = :now, phase_started_at = :now, updated_at = :now,
            status_reason = COALESCE(CAST(:reason AS text), status_reason)
        WHERE id = :id AND generation = :generation AND lease_owner = :owner
          AND (NOT :check_phase OR (current_phase = :phase_from AND status = :status_from))
        RETURNING id
    ), event AS (
        INSERT INTO ramp.phase_events (ramp_id, from_phase, to_phase, status, actor, note,
                                       created_at)
        SELECT id, :event_from, :event_to, :event_status, :actor, :note, :now FROM moved
    ), error AS (
        INSERT INTO ramp.errors (ramp_id, phase, reason, message, recoverable, created_at)
        SELECT id, CAST(:e_phase AS text), :e_reason, :e_message, :e_recoverable, :now
        FROM moved WHERE CAST(:e_phase AS text) IS NOT NULL
    )
    SELECT count(*) FROM moved
    """
)

RELEASE_SQL = text(
    """
    UPDATE ramp.ramps SET lease_owner = NULL, lease_expires_at = NULL
    WHERE id = :id AND generation = :generation AND lease_owner = :owner
    """
)


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
        """The phase to run: the main phase, or the pending cleanup phase once complete."""
        return (
            self.cleanup_phase if self.status == "COMPLETE" and self.cleanup_phase else self.phase
        )


@dataclass(frozen=True)
class ErrorEntry:
    """An error to record with a state change."""

    phase: str
    reason: str
    message: str
    recoverable: bool


class WorkQueue:
    """Claims due ramps and writes their state changes, always fenced."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        owner: str,
        lease_for: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self._autocommit = autocommit_session_factory(sessions.kw["bind"])
        self.owner = owner
        self.lease_for = lease_for
        self.clock = clock

    async def claim_due(self, limit: int) -> list[Claim]:
        """Take leases on up to `limit` due ramps in one atomic statement."""
        now = self.clock()
        async with self.sessions.begin() as session:
            rows = await session.execute(
                CLAIM_SQL,
                {"now": now, "limit": limit, "owner": self.owner, "until": now + self.lease_for},
            )
            return [Claim(*row) for row in rows]

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
    ) -> None:
        """Change phase and/or status (CAS on phase, status and generation) with its event."""
        now = self.clock()
        values: dict[str, object] = {
            "current_phase": to_phase or claim.phase,
            "status": status or claim.status,
            "cleanup_phase": first_cleanup,
            "attempts": 0,
            "next_attempt_at": now,
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
            reason or "",
            check_phase=True,
        )
        claim.phase = to_phase or claim.phase
        claim.status = status or claim.status
        claim.cleanup_phase = first_cleanup
        claim.attempts = 0
        claim.phase_started_at = now

    async def step_cleanup(
        self, claim: Claim, next_cleanup: str | None, error: ErrorEntry | None = None
    ) -> None:
        """Record a finished (or abandoned) cleanup phase and set the next one, if any."""
        now = self.clock()
        done = claim.active_phase
        values: dict[str, object] = {
            "cleanup_phase": next_cleanup,
            "attempts": 0,
            "next_attempt_at": now,
            "phase_started_at": now,
            "updated_at": now,
        }
        note = "abandoned" if error else "done"
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
        params = {
            "id": claim.ramp_id,
            "generation": claim.generation,
            "owner": self.owner,
            "check_phase": check_phase,
            "phase_from": claim.phase,
            "status_from": claim.status,
            "phase_to": values.get("current_phase", claim.phase),
            "status_to": values.get("status", claim.status),
            "cleanup": values["cleanup_phase"],
            "reason": values.get("status_reason"),
            "now": now,
            "event_from": claim.active_phase,
            "event_to": event_phase,
            "event_status": event_status,
            "actor": actor,
            "note": note,
            "e_phase": error.phase if error else None,
            "e_reason": error.reason if error else None,
            "e_message": error.message[:2000] if error else None,
            "e_recoverable": error.recoverable if error else None,
        }
        async with self._autocommit() as session:
            if await session.scalar(MOVE_SQL, params) != 1:
                raise LeaseLost(str(claim.ramp_id))

    async def reschedule(self, claim: Claim, delay: timedelta, error: ErrorEntry | None) -> None:
        """Try the same phase again after `delay`; a recorded error counts as an attempt."""
        now = self.clock()
        attempts = claim.attempts + (1 if error is not None else 0)
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
        async with self._autocommit() as session:
            await session.execute(
                RELEASE_SQL,
                {"id": claim.ramp_id, "generation": claim.generation, "owner": self.owner},
            )

    def _error_row(self, claim: Claim, error: ErrorEntry, now: datetime) -> RampErrorRow:
        return RampErrorRow(
            ramp_id=claim.ramp_id,
            phase=error.phase,
            reason=error.reason,
            message=error.message[:2000],
            recoverable=error.recoverable,
            created_at=now,
        )
