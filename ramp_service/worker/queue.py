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

from ramp_service.db.models import PhaseEventRow, RampErrorRow, RampRow

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
        conditions = self._fenced(claim)
        if check_phase:
            conditions += [RampRow.current_phase == claim.phase, RampRow.status == claim.status]
        async with self.sessions.begin() as session:
            result = await session.execute(update(RampRow).where(*conditions).values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(str(claim.ramp_id))
            session.add(
                PhaseEventRow(
                    ramp_id=claim.ramp_id,
                    from_phase=claim.active_phase,
                    to_phase=event_phase,
                    status=event_status,
                    actor=actor,
                    note=note,
                    created_at=now,
                )
            )
            if error is not None:
                session.add(self._error_row(claim, error, now))  # type: ignore[arg-type]

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
        async with self.sessions.begin() as session:
            await session.execute(
                update(RampRow)
                .where(*self._fenced(claim))
                .values(lease_owner=None, lease_expires_at=None)
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
