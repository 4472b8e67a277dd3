"""Operator actions on real PostgreSQL: retry from manual review, cancel, list; all fenced."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.adapters.registration import ChainRegistration
from ramp_service.admin import RampAdmin
from ramp_service.chains.partners import AnchorClient, PixClient
from ramp_service.chains.pendulum import PendulumChain
from ramp_service.chains.stellar import StellarChain
from ramp_service.db.models import PhaseEventRow, RampRow
from ramp_service.worker.queue import LeaseLost, WorkQueue
from service_kit.db import DirectPool
from service_kit.errors import InvalidInput, PreconditionFailed
from tests.support.aio import FakeClock, LoopThread
from tests.support.ramps import insert_running


def operator_admin(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> RampAdmin:
    """The admin use cases; these SELL ramps have no PIX charge, so no partner is reached."""
    unused = "http://127.0.0.1:1"
    chains = ChainRegistration(
        StellarChain(unused, "unused"),
        PendulumChain(unused),
        AnchorClient(unused),
        PixClient(unused),
        "",
        "",
    )
    return RampAdmin(sessions, clock, chains)


def set_state(
    sessions: async_sessionmaker[AsyncSession],
    aio_loop: LoopThread,
    ramp_id: object,
    **values: object,
) -> None:
    async def write() -> None:
        async with sessions.begin() as session:
            await session.execute(update(RampRow).where(RampRow.id == ramp_id).values(**values))

    aio_loop.run(write())


def test_retry_puts_a_reviewed_ramp_back_and_fences_stale_runs(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    queue = WorkQueue(sessions, direct, "w1", timedelta(seconds=30), clock)
    [claim] = aio_loop.run(queue.claim_due(1))
    set_state(
        sessions, aio_loop, ramp_id, status="MANUAL_REVIEW", current_phase="nablaSwap", attempts=8
    )
    admin = operator_admin(sessions, clock)
    record = aio_loop.run(admin.retry(str(ramp_id), "alice", "pool refilled"))
    assert (record.status.value, record.current_phase) == ("RUNNING", "nablaSwap")
    with pytest.raises(LeaseLost):  # the run that held the ramp cannot write any more
        aio_loop.run(queue.heartbeat(claim))
    [fresh] = aio_loop.run(queue.claim_due(1))
    assert fresh.attempts == 0 and fresh.phase == "nablaSwap"

    async def last_event() -> tuple[str, str]:
        async with sessions.begin() as session:
            row = (
                await session.scalars(
                    select(PhaseEventRow)
                    .where(PhaseEventRow.ramp_id == ramp_id)
                    .order_by(PhaseEventRow.id.desc())
                    .limit(1)
                )
            ).one()
            return row.actor, row.note

    assert aio_loop.run(last_event()) == ("operator:alice", "retry: pool refilled")
    with pytest.raises(PreconditionFailed) as exc:
        aio_loop.run(admin.retry(str(ramp_id), "alice", "again"))
    assert exc.value.reason == "RAMP_NOT_IN_REVIEW"


def test_cancel_only_before_funds_move(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, aio_loop: LoopThread
) -> None:
    admin = operator_admin(sessions, clock)
    waiting = aio_loop.run(insert_running(sessions, clock.now))
    set_state(sessions, aio_loop, waiting, current_phase="awaitUserDeposit")
    clock.advance(minutes=3)
    cancelled = aio_loop.run(admin.cancel(str(waiting), "bob", "user asked"))
    assert cancelled.status.value == "CANCELLED"

    async def follow_up() -> tuple[object, ...]:
        async with sessions.begin() as session:
            row = await session.get(RampRow, waiting)
            assert row is not None
            return row.cleanup_phase, row.next_attempt_at, row.phase_started_at

    # The user may send the deposit anyway: the SELL's deposit address is watched from now.
    assert aio_loop.run(follow_up()) == ("watchLateDeposit", clock.now, clock.now)
    swapping = aio_loop.run(insert_running(sessions, clock.now))
    set_state(sessions, aio_loop, swapping, current_phase="nablaSwap")
    with pytest.raises(PreconditionFailed) as exc:
        aio_loop.run(admin.cancel(str(swapping), "bob", "too late"))
    assert exc.value.reason == "RAMP_NOT_CANCELLABLE"
    with pytest.raises(InvalidInput):
        aio_loop.run(admin.cancel(str(waiting), " ", "no name"))


def test_list_for_review_filters_and_orders_by_age(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, aio_loop: LoopThread
) -> None:
    admin = operator_admin(sessions, clock)
    old = aio_loop.run(insert_running(sessions, clock.now))
    new = aio_loop.run(insert_running(sessions, clock.now))
    other = aio_loop.run(insert_running(sessions, clock.now))
    set_state(
        sessions, aio_loop, old, status="MANUAL_REVIEW", updated_at=clock.now - timedelta(hours=3)
    )
    set_state(
        sessions, aio_loop, new, status="MANUAL_REVIEW", updated_at=clock.now - timedelta(hours=1)
    )
    set_state(sessions, aio_loop, other, status="RUNNING")
    listed = aio_loop.run(admin.list_for_review("MANUAL_REVIEW", "", None, 10))
    assert [r.id for r in listed] == [old, new]
    stale = aio_loop.run(
        admin.list_for_review("MANUAL_REVIEW", "", clock.now - timedelta(hours=2), 10)
    )
    assert [r.id for r in stale] == [old]
    set_state(sessions, aio_loop, new, status_reason="LATE_DEPOSIT: 5 USDC on 5Eph")
    set_state(sessions, aio_loop, old, status_reason="LATE_DEPOSIT_X%: not a prefix match")
    by_reason = aio_loop.run(admin.list_for_review("", "", None, 10, "LATE_DEPOSIT:"))
    assert [r.id for r in by_reason] == [new]
    wildcard = aio_loop.run(admin.list_for_review("", "", None, 10, "LATE_DEPOSIT_%"))
    assert wildcard == []  # the prefix is literal: no LIKE wildcards
    with pytest.raises(InvalidInput):
        aio_loop.run(admin.list_for_review("BOGUS", "", None, 10))
