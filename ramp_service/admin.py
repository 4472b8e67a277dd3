"""Operator use cases: retry a ramp in manual review, cancel one that moved no funds, list.

Every action bumps the fencing generation (so no stale run can write afterwards) and is
recorded as a phase event with the operator's name. Cancelling a BUY ramp whose PIX charge is
open withdraws the charge first (a cancelled ramp is watched by nobody, so its charge must not
stay payable); a charge the user already paid makes the ramp not cancellable.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.db.models import OperationRow, RampRow
from ramp_service.db.repository import RampRepository
from ramp_service.domain.errors import RampNotFound, invalid
from ramp_service.domain.flows import FIRST_AFTER_ABORT
from ramp_service.domain.ramp import RampRecord, RampStatus, parse_ramp_id
from ramp_service.ports import RegistrationChains
from ramp_service.service import Clock
from service_kit.errors import Conflict, PreconditionFailed

# Phases in which no funds have moved yet on the system's side.
CANCELLABLE_PHASES = frozenset({"initial", "awaitUserDeposit", "brlaTeleport"})
CANCELLABLE_STATUSES = frozenset({"REGISTERED", "RUNNING", "MANUAL_REVIEW"})


class RampAdmin:
    """What operators may do to ramps."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        chains: RegistrationChains,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._chains = chains

    async def retry(self, ramp_id: str, operator: str, note: str) -> RampRecord:
        """MANUAL_REVIEW → RUNNING in the same phase, with fresh budgets."""
        actor = _actor(operator)
        rid = parse_ramp_id(ramp_id)
        async with self._sessions.begin() as session:
            repo = RampRepository(session)
            row = await repo.lock(rid)
            if row is None:
                raise RampNotFound(ramp_id)
            if row.status != RampStatus.MANUAL_REVIEW.value:
                raise PreconditionFailed("RAMP_NOT_IN_REVIEW", f"ramp {ramp_id} is {row.status}")
            now = self._clock()
            _take_over(row, now)
            row.status, row.attempts, row.next_attempt_at, row.phase_started_at = (
                "RUNNING",
                0,
                now,
                now,
            )
            row.status_reason = None
            await repo.append_event(
                rid, row.current_phase, row.current_phase, row.status, actor, now, f"retry: {note}"
            )
            record = await repo.get(rid)
        assert record is not None
        return record

    async def cancel(self, ramp_id: str, operator: str, note: str) -> RampRecord:
        """Cancel a ramp before any funds moved on the system's side (and before the user paid
        its PIX charge, which is withdrawn first)."""
        actor = _actor(operator)
        rid = parse_ramp_id(ramp_id)
        withdrawn = await self._withdraw_payment(ramp_id, rid)
        async with self._sessions.begin() as session:
            repo = RampRepository(session)
            row = await repo.lock(rid)
            if row is None:
                raise RampNotFound(ramp_id)
            operations = await session.scalar(
                select(func.count()).select_from(OperationRow).where(OperationRow.ramp_id == rid)
            )
            if (
                row.status not in CANCELLABLE_STATUSES
                or row.current_phase not in CANCELLABLE_PHASES
                or operations
            ):
                raise PreconditionFailed(
                    "RAMP_NOT_CANCELLABLE",
                    f"ramp {ramp_id} is {row.status} in {row.current_phase}; funds may have moved",
                )
            if (row.partner_data or {}).get("pix_deposit_id") not in (None, withdrawn):
                # A start won between the read above and this lock: it opened a charge (and
                # showed it to the user) that was not withdrawn. Cancelling now would leave it
                # payable on a cancelled ramp; the operator's retry withdraws it first.
                raise Conflict(
                    "RAMP_CHANGED", f"ramp {ramp_id} was started meanwhile; cancel it again"
                )
            now = self._clock()
            _take_over(row, now)
            row.status, row.status_reason = "CANCELLED", f"cancelled by {actor}"
            # The user may send the deposit anyway: the flow's watch runs from now, if it has one.
            row.cleanup_phase = FIRST_AFTER_ABORT.get(row.flow_version)
            row.next_attempt_at = now if row.cleanup_phase else None
            row.phase_started_at, row.attempts = now, 0
            await repo.append_event(
                rid, row.current_phase, row.current_phase, row.status, actor, now, f"cancel: {note}"
            )
            record = await repo.get(rid)
        assert record is not None
        return record

    async def _withdraw_payment(self, ramp_id: str, rid: uuid.UUID) -> str | None:
        """Withdraw the ramp's open PIX charge, outside any transaction (a partner call); refuse
        the cancel when the user has paid it. The id of the charge withdrawn, if any."""
        async with self._sessions.begin() as session:
            record = await RampRepository(session).get(rid)
        if record is None:
            raise RampNotFound(ramp_id)
        if (
            record.status.value not in CANCELLABLE_STATUSES
            or record.current_phase not in CANCELLABLE_PHASES
        ):
            return None  # refused below, without asking the partner
        if not await self._chains.withdraw_payment(record):
            raise PreconditionFailed(
                "RAMP_NOT_CANCELLABLE", f"ramp {ramp_id}: the user has paid its PIX charge"
            )
        return record.partner_data.get("pix_deposit_id")

    async def list_for_review(
        self,
        status: str,
        phase: str,
        updated_before: datetime | None,
        page_size: int,
        reason: str = "",
    ) -> list[RampRecord]:
        """Ramps matching the filters (`reason`: a prefix of the status reason), the longest
        unchanged first."""
        if status and status not in RampStatus.__members__:
            raise invalid("INVALID_STATUS", "status", "unknown status")
        if page_size < 0 or page_size > 500:
            raise invalid("INVALID_PAGE_SIZE", "page_size", "must be between 0 and 500")
        query = select(RampRow.id)
        if status:
            query = query.where(RampRow.status == status)
        if phase:
            query = query.where(RampRow.current_phase == phase)
        if updated_before is not None:
            query = query.where(RampRow.updated_at < updated_before)
        if reason:
            query = query.where(RampRow.status_reason.startswith(reason, autoescape=True))
        async with self._sessions.begin() as session:
            repo = RampRepository(session)
            ids = await session.scalars(query.order_by(RampRow.updated_at).limit(page_size or 50))
            records = [await repo.get(rid) for rid in ids]
        return [r for r in records if r is not None]


def _actor(operator: str) -> str:
    if not operator.strip():
        raise invalid("OPERATOR_REQUIRED", "operator", "name the operator doing this")
    return f"operator:{operator.strip()[:100]}"


def _take_over(row: RampRow, now: datetime) -> None:
    """Fence out any run in flight: a new generation and no lease."""
    row.generation += 1
    row.lease_owner, row.lease_expires_at, row.updated_at = None, None, now
