"""The processor's durability rules on real PostgreSQL, with scripted phase handlers.

The handlers here are test scripts for the engine's extension point (what a phase reports);
the real chain handlers are exercised end to end in tests/e2e.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.workloads import seed_running_ramps
from ramp_service.db.models import PhaseEventRow, RampErrorRow, RampRow
from ramp_service.domain.flows import SELL_V1, WATCH_LATE_DEPOSIT, PhaseSpec
from ramp_service.domain.outcomes import Advance, Fail, Outcome, Retry, RetryPolicy, Wait
from ramp_service.domain.ramp import RampRecord
from ramp_service.worker.engine import PhaseProcessor, ProcessorConfig
from ramp_service.worker.handlers import PhaseContext
from ramp_service.worker.loader import RecordLoader
from ramp_service.worker.metrics import WorkerMetrics
from ramp_service.worker.queue import (
    MOVE_MANY_SQL,
    RELEASE_MANY_SQL,
    Claim,
    LeaseLost,
    WorkQueue,
)
from service_kit.config import ServiceSettings
from service_kit.db import DirectPool, libpq_url
from tests.support.aio import FakeClock, LoopThread
from tests.support.ramps import error_reasons, insert_at, insert_running, sell_record


class Script:
    """A handler that answers from a per-phase script and counts its runs."""

    def __init__(self, outcomes: dict[str, list[Outcome]] | None = None) -> None:
        self.outcomes = outcomes or {}
        self.runs: list[str] = []

    async def run(self, ctx: PhaseContext) -> Outcome:
        self.runs.append(ctx.phase)
        queue = self.outcomes.get(ctx.phase)
        return queue.pop(0) if queue else Advance()


def processor(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    script: Script,
    owner: str = "w1",
    policy: RetryPolicy | None = None,
    extra: tuple[PhaseSpec, ...] = (),
) -> PhaseProcessor:
    """A processor whose handler for the flow's phases and cleanup (and `extra`) is `script`."""
    queue = WorkQueue(sessions, direct, owner, timedelta(seconds=30), clock)

    phases = [p.name for p in (*SELL_V1.phases, *SELL_V1.cleanup, *extra)]
    return PhaseProcessor(
        queue,
        RecordLoader(direct),
        {p: script for p in phases},
        ProcessorConfig(default_policy=policy or RetryPolicy()),
        WorkerMetrics(),
    )


async def ramp_row(sessions: async_sessionmaker[AsyncSession], ramp_id: uuid.UUID) -> RampRow:
    async with sessions.begin() as session:
        row = await session.get(RampRow, ramp_id)
        assert row is not None
        return row


async def events(
    sessions: async_sessionmaker[AsyncSession], ramp_id: uuid.UUID
) -> list[tuple[str | None, str, str]]:
    async with sessions.begin() as session:
        rows = await session.scalars(
            select(PhaseEventRow).where(PhaseEventRow.ramp_id == ramp_id).order_by(PhaseEventRow.id)
        )
        return [(r.from_phase, r.to_phase, r.status) for r in rows]


def test_a_ramp_runs_every_phase_in_order_then_cleans_up(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    script = Script()
    assert aio_loop.run(processor(sessions, direct, clock, script).run_once()) == 1
    assert script.runs == [*SELL_V1.names()[:-1], "stellarCleanup", "pendulumCleanup"]
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.current_phase, row.cleanup_phase, row.lease_owner) == (
        "COMPLETE",
        "complete",
        None,
        None,
    )
    history = aio_loop.run(events(sessions, ramp_id))
    phases = [to for _, to, _ in history]
    assert phases[-4:] == ["stellarPayment", "complete", "stellarCleanup", "pendulumCleanup"]
    assert (
        aio_loop.run(processor(sessions, direct, clock, script).run_once()) == 0
    )  # nothing left to do


def test_recoverable_errors_back_off_then_go_to_manual_review(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    failures = [Retry("HORIZON_5XX", "bad gateway")] * 3
    script = Script({"awaitUserDeposit": [Advance()], "fundEphemeral": list(failures)})
    proc = processor(sessions, direct, clock, script, policy=RetryPolicy(max_attempts=3))
    aio_loop.run(proc.run_once())
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.current_phase, row.attempts) == ("RUNNING", "fundEphemeral", 1)
    assert row.next_attempt_at > clock.now  # backed off
    assert aio_loop.run(proc.run_once()) == 0  # not due yet
    for _ in range(2):
        clock.advance(minutes=5)
        aio_loop.run(proc.run_once())
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.current_phase) == ("MANUAL_REVIEW", "fundEphemeral")
    assert "retry budget" in (row.status_reason or "")

    assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["HORIZON_5XX"] * 3
    clock.advance(hours=1)
    assert aio_loop.run(proc.run_once()) == 0  # manual review is not retried by itself


def test_waiting_past_the_time_budget_times_out_where_the_flow_allows_it(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    waits = [Wait(timedelta(seconds=10))] * 10
    script = Script({"awaitUserDeposit": list(waits)})
    proc = processor(
        sessions, direct, clock, script, policy=RetryPolicy(time_budget=timedelta(minutes=1))
    )
    aio_loop.run(proc.run_once())
    clock.advance(seconds=11)
    aio_loop.run(proc.run_once())
    assert aio_loop.run(ramp_row(sessions, ramp_id)).attempts == 0  # waiting is not failing
    clock.advance(minutes=2)
    aio_loop.run(proc.run_once())
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.current_phase) == ("TIMED_OUT", "timedOut")
    # Its follow-up (the late-deposit watch) has no handler in this processor: abandoned and
    # recorded, and the ramp's outcome stays what it was (not MANUAL_REVIEW).
    assert row.cleanup_phase is None
    assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["TIMED_OUT", "CLEANUP_ABANDONED"]


def test_waiting_with_the_users_money_never_times_out(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A wait phase that reports some of the user's money arrived (a partial deposit, a PIX
    payment not yet minted) goes to MANUAL_REVIEW past its budget, not to `timedOut`."""
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    partial = Wait(timedelta(seconds=10), "PARTIAL_USER_DEPOSIT", holds_funds=True)
    script = Script({"awaitUserDeposit": [partial] * 3})
    proc = processor(
        sessions, direct, clock, script, policy=RetryPolicy(time_budget=timedelta(minutes=1))
    )
    aio_loop.run(proc.run_once())
    clock.advance(minutes=2)
    aio_loop.run(proc.run_once())
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.current_phase) == ("MANUAL_REVIEW", "awaitUserDeposit")
    assert row.status_reason.startswith("PARTIAL_USER_DEPOSIT: time budget")


def test_unrecoverable_errors_fail_the_ramp_with_the_reason(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Before the user's money arrived a ramp may fail for good; after it, an operator must
    be able to retry or settle it, so the same error goes to MANUAL_REVIEW."""
    early = aio_loop.run(insert_running(sessions, clock.now))
    late = aio_loop.run(insert_running(sessions, clock.now))
    script = Script({"awaitUserDeposit": [Fail("TX_BAD_AUTH", "signature rejected")]})
    aio_loop.run(processor(sessions, direct, clock, script).run_once())
    # The first ramp run took the scripted failure; the second ran on to nablaSwap's.
    script.outcomes["nablaSwap"] = [Fail("TX_BAD_AUTH", "signature rejected")]
    rows = {r: aio_loop.run(ramp_row(sessions, r)) for r in (early, late)}
    failed, other = (early, late) if rows[early].status == "FAILED" else (late, early)
    assert (rows[failed].current_phase, rows[failed].status_reason) == ("failed", "TX_BAD_AUTH")
    history = aio_loop.run(events(sessions, failed))
    assert history[-2] == ("awaitUserDeposit", "failed", "FAILED")
    # Failed before the deposit: its deposit address is watched next (a follow-up this
    # processor has no handler for, so it is abandoned, and the ramp stays FAILED).
    assert history[-1] == ("watchLateDeposit", "watchLateDeposit", "FAILED")
    assert rows[other].status == "COMPLETE"  # no failure left for it in the script
    funded = aio_loop.run(insert_running(sessions, clock.now))
    aio_loop.run(processor(sessions, direct, clock, script).run_once())
    row = aio_loop.run(ramp_row(sessions, funded))
    assert (row.status, row.current_phase) == ("MANUAL_REVIEW", "nablaSwap")
    assert row.status_reason == "TX_BAD_AUTH: signature rejected"


def test_an_overlong_reason_is_recorded_cut_and_spares_the_batch(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A reason longer than its column (a node's 1010 text) and NUL in a message are stored
    cut and cleaned: the move that records them lands, and so do the other ramps' moves that
    shared its statement."""
    reason = "PENDULUM_INVALID_INABILITY_TO_PAY_SOME_FEES_(E.G._ACCOUNT_BALANCE_TOO_LOW)"
    ramps = [aio_loop.run(insert_running(sessions, clock.now)) for _ in range(4)]
    script = Script({"nablaApprove": [Fail(reason, "1010\x00 from the node")]})
    aio_loop.run(processor(sessions, direct, clock, script).run_once())
    rows = [aio_loop.run(ramp_row(sessions, r)) for r in ramps]
    assert sorted(r.status for r in rows) == ["COMPLETE"] * 3 + ["MANUAL_REVIEW"]
    (stuck,) = [r for r in rows if r.status == "MANUAL_REVIEW"]
    assert stuck.current_phase == "nablaApprove"

    async def errors() -> list[tuple[str, str]]:
        async with sessions.begin() as session:
            found = await session.scalars(
                select(RampErrorRow).where(RampErrorRow.ramp_id == stuck.id)
            )
            return [(e.reason, e.message) for e in found]

    assert aio_loop.run(errors()) == [(reason[:64], "1010 from the node")]


class BrokenMoves(WorkQueue):
    """A queue whose moves of one ramp fail, as a bug in the processor would, except the move
    to MANUAL_REVIEW."""

    broken: uuid.UUID | None = None

    async def move(self, claim: Claim, **changes: Any) -> None:  # type: ignore[override]
        if claim.ramp_id == self.broken and changes.get("status") != "MANUAL_REVIEW":
            raise psycopg.errors.DataError("a bug in the processor")
        await super().move(claim, **changes)


def test_a_processor_bug_backs_off_counts_attempts_then_goes_to_manual_review(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A ramp whose moves fail with an unexpected error is not claimed again at every poll
    with no trace: each failure is recorded as an attempt with a backoff, and once the phase's
    budget is spent the ramp goes to MANUAL_REVIEW."""
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    queue = BrokenMoves(sessions, direct, "w1", timedelta(seconds=30), clock)
    queue.broken = ramp_id
    proc = PhaseProcessor(
        queue,
        RecordLoader(direct),
        {p: Script() for p in SELL_V1.names()},
        ProcessorConfig(default_policy=RetryPolicy(max_attempts=3)),
        WorkerMetrics(),
    )
    assert aio_loop.run(proc.run_once()) == 1
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.attempts, row.lease_owner) == ("RUNNING", 1, None)
    assert row.next_attempt_at > clock.now  # backing off, not due at the next poll
    assert aio_loop.run(proc.run_once()) == 0
    clock.advance(minutes=10)
    assert aio_loop.run(proc.run_once()) == 1
    assert aio_loop.run(ramp_row(sessions, ramp_id)).attempts == 2
    clock.advance(minutes=10)
    assert aio_loop.run(proc.run_once()) == 1
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.current_phase) == ("MANUAL_REVIEW", "initial")
    assert row.status_reason.startswith("PROCESSOR_ERROR: retry budget")

    assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["PROCESSOR_ERROR"] * 3


class BrokenLoads:
    """The record loader, failing (a bug) for the ramps in `broken`."""

    def __init__(self, load: Callable[[uuid.UUID], Awaitable[RampRecord]]) -> None:
        self.load = load
        self.broken: set[uuid.UUID] = set()

    async def __call__(self, ramp_id: uuid.UUID) -> RampRecord:
        if ramp_id in self.broken:
            raise ValueError("a row the loader cannot read")
        return await self.load(ramp_id)


def test_a_processor_bug_in_cleanup_abandons_the_cleanup_once_the_budget_is_spent(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A complete ramp whose cleanup keeps hitting a processor bug backs off like any other,
    and once the budget is spent its cleanup is abandoned with the error recorded: it stays
    `complete` and is not claimed again (it was rescheduled forever, an error row each time)."""
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    loads = BrokenLoads(RecordLoader(direct))
    script = Script({"stellarCleanup": [Retry("HORIZON_TIMEOUT", "no answer")]})
    proc = PhaseProcessor(
        WorkQueue(sessions, direct, "w1", timedelta(seconds=30), clock),
        loads,
        {p.name: script for p in (*SELL_V1.phases, *SELL_V1.cleanup)},
        ProcessorConfig(default_policy=RetryPolicy(max_attempts=3)),
        WorkerMetrics(),
    )
    aio_loop.run(proc.run_once())
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.cleanup_phase, row.attempts) == ("COMPLETE", "stellarCleanup", 1)
    loads.broken.add(ramp_id)
    for _ in range(2):
        clock.advance(minutes=10)
        assert aio_loop.run(proc.run_once()) == 1
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.current_phase, row.cleanup_phase) == ("COMPLETE", "complete", None)
    clock.advance(hours=1)
    assert aio_loop.run(proc.run_once()) == 0  # not claimed again

    assert aio_loop.run(error_reasons(sessions, ramp_id)) == [
        "HORIZON_TIMEOUT",
        "PROCESSOR_ERROR",
        "CLEANUP_ABANDONED",
    ]


def test_a_stale_run_cannot_write_after_its_lease_was_taken_over(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    old = WorkQueue(sessions, direct, "old", timedelta(seconds=30), clock)
    new = WorkQueue(sessions, direct, "new", timedelta(seconds=30), clock)
    [stale] = aio_loop.run(old.claim_due(10))
    assert aio_loop.run(new.claim_due(10)) == []  # leased
    clock.advance(seconds=31)
    [fresh] = aio_loop.run(new.claim_due(10))
    assert fresh.generation == stale.generation + 1
    with pytest.raises(LeaseLost):
        aio_loop.run(old.move(stale, to_phase="awaitUserDeposit"))
    with pytest.raises(LeaseLost):
        aio_loop.run(old.heartbeat(stale))
    aio_loop.run(new.move(fresh, to_phase="awaitUserDeposit"))
    assert aio_loop.run(ramp_row(sessions, ramp_id)).current_phase == "awaitUserDeposit"
    # The stale run's journal writes are fenced too.
    from ramp_service.worker.journal import Journal

    with pytest.raises(LeaseLost):
        aio_loop.run(
            Journal(old, stale, "initial").record_intent(
                "submit", "stellar", tx_hash="h", signer="G", nonce=1, payload="p"
            )
        )


def test_concurrent_claimers_never_share_a_ramp(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ids = {aio_loop.run(insert_running(sessions, clock.now)) for _ in range(30)}
    queues = [WorkQueue(sessions, direct, f"w{i}", timedelta(seconds=30), clock) for i in range(6)]

    async def race() -> list[list[uuid.UUID]]:
        results = await asyncio.gather(*(q.claim_due(10) for q in queues))
        return [[c.ramp_id for c in claims] for claims in results]

    claimed = [rid for batch in aio_loop.run(race()) for rid in batch]
    assert len(claimed) == len(set(claimed)) == 30
    assert set(claimed) == ids


def test_moves_made_in_one_turn_are_fenced_one_by_one(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ids = [aio_loop.run(insert_running(sessions, clock.now)) for _ in range(3)]
    old = WorkQueue(sessions, direct, "old", timedelta(seconds=30), clock)
    new = WorkQueue(sessions, direct, "new", timedelta(seconds=30), clock)
    claims = {c.ramp_id: c for c in aio_loop.run(old.claim_due(10))}
    assert set(claims) == set(ids)

    # The middle ramp's lease is taken over; the other two are still "old"'s.
    async def steal() -> None:
        async with sessions.begin() as session:
            await session.execute(
                update(RampRow).where(RampRow.id == ids[1]).values(lease_expires_at=clock.now)
            )

    aio_loop.run(steal())
    clock.advance(seconds=1)
    [taken] = aio_loop.run(new.claim_due(10))
    assert taken.ramp_id == ids[1]

    async def all_move() -> list[BaseException | None]:
        return await asyncio.gather(
            *(old.move(claims[i], to_phase="awaitUserDeposit") for i in ids),
            return_exceptions=True,
        )

    answers = aio_loop.run(all_move())
    assert answers[0] is None and answers[2] is None
    assert isinstance(answers[1], LeaseLost)
    phases = [aio_loop.run(ramp_row(sessions, i)).current_phase for i in ids]
    assert phases == ["awaitUserDeposit", "initial", "awaitUserDeposit"]
    moved_to = [[e[1] for e in aio_loop.run(events(sessions, i))] for i in ids]
    assert [m.count("awaitUserDeposit") for m in moved_to] == [1, 0, 1]  # none for the fenced


def test_the_processor_outlives_losing_its_database_connections(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    settings = ServiceSettings(database_url=database_url, db_direct_pool_size=2)
    direct = DirectPool(settings, "processor-under-test")
    proc = processor(sessions, direct, clock, Script())
    first = aio_loop.run(insert_running(sessions, clock.now))
    assert aio_loop.run(proc.run_once()) == 1  # the pool is open and used
    assert aio_loop.run(ramp_row(sessions, first)).status == "COMPLETE"

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'processor-under-test'"
        ).fetchone()
    assert killed and killed[0] >= 1
    second = aio_loop.run(insert_running(sessions, clock.now))

    async def run_until_done() -> str:
        stop = asyncio.Event()
        runner = asyncio.ensure_future(proc.run_forever(stop))
        try:
            for _ in range(100):
                await asyncio.sleep(0.1)
                if runner.done():  # it must not die with the connections
                    runner.result()
                    return "stopped"
                row = await ramp_row(sessions, second)
                if row.status == "COMPLETE" and row.cleanup_phase is None:
                    return "COMPLETE"
            return "still running"
        finally:
            stop.set()
            await runner
            await direct.close()

    assert aio_loop.run(run_until_done()) == "COMPLETE"


def test_a_stale_and_a_fresh_move_of_one_ramp_in_one_batch_only_the_fresh_one_lands(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    queue = WorkQueue(sessions, direct, "w", timedelta(seconds=30), clock)
    [stale] = aio_loop.run(queue.claim_due(10))
    clock.advance(seconds=31)  # the lease lapses; the same process claims the ramp again
    [fresh] = aio_loop.run(queue.claim_due(10))
    assert (fresh.ramp_id, fresh.generation) == (ramp_id, stale.generation + 1)

    async def both() -> list[BaseException | None]:
        return await asyncio.gather(
            queue.move(stale, to_phase="awaitUserDeposit"),
            queue.move(fresh, to_phase="awaitUserDeposit"),
            return_exceptions=True,
        )

    stale_answer, fresh_answer = aio_loop.run(both())
    assert isinstance(stale_answer, LeaseLost) and fresh_answer is None
    moved_to = [to for _, to, _ in aio_loop.run(events(sessions, ramp_id))]
    assert moved_to.count("awaitUserDeposit") == 1


class FlakyHeartbeats(WorkQueue):
    """A queue whose first lease heartbeat fails as a dropped database connection does."""

    beats = 0

    async def heartbeat(self, claim: Claim) -> None:
        self.beats += 1
        if self.beats == 1:
            lost = psycopg.OperationalError("server closed the connection unexpectedly")
            raise sqlalchemy.exc.OperationalError("UPDATE ramp.ramps", {}, lost)
        await super().heartbeat(claim)


def test_the_lease_heartbeat_outlives_a_failed_beat(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """One failed heartbeat must not end the heartbeats while the phase runs on (its lease
    would lapse mid-phase and another worker could run the same phase beside it)."""
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    queue = FlakyHeartbeats(sessions, direct, "w1", timedelta(seconds=0.3), clock)

    class Slow(Script):
        async def run(self, ctx: PhaseContext) -> Outcome:
            if ctx.phase != "awaitUserDeposit":
                return Advance()
            deadline = asyncio.get_running_loop().time() + 5
            while queue.beats < 3:  # a beat every 0.1 s: renewed after the failed one
                if asyncio.get_running_loop().time() > deadline:
                    return Retry("NO_HEARTBEAT", "the heartbeats stopped")
                await asyncio.sleep(0.05)
            return Advance()

    proc = PhaseProcessor(
        queue,
        RecordLoader(direct),
        {p: Slow() for p in (*SELL_V1.names(), "stellarCleanup", "pendulumCleanup")},
        ProcessorConfig(default_policy=RetryPolicy()),
        WorkerMetrics(),
    )
    aio_loop.run(proc.run_once())
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert row.status == "COMPLETE", (
        row.current_phase,
        row.status_reason,
        row.attempts,
        queue.beats,
    )


@pytest.mark.parametrize("in_a_row", [True, False])
def test_a_watch_s_failure_budget_counts_failures_since_its_last_good_check(
    in_a_row: bool,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A late-deposit watch lives for days: short outages between good reads must not add up
    to its budget (RetryPolicy.for_watch counts failures in a row). Counted over the whole
    phase, as every other phase counts them, the same history exhausts it."""
    ramp_id = aio_loop.run(
        insert_at(
            sessions, sell_record(clock.now), "timedOut", clock.now, "TIMED_OUT", WATCH_LATE_DEPOSIT
        )
    )
    outage = [Retry("PENDULUM_TIMEOUT", "node down"), Retry("PENDULUM_TIMEOUT", "node down")]
    script = Script({WATCH_LATE_DEPOSIT: [*outage, Wait(timedelta(minutes=5))] * 4})
    policy = RetryPolicy(max_attempts=3, time_budget=timedelta(days=4), failures_in_a_row=in_a_row)
    proc = processor(sessions, direct, clock, script, policy=policy, extra=SELL_V1.after_abort)
    for _ in range(12):  # eight failed reads in all, never three in a row
        aio_loop.run(proc.run_once())
        clock.advance(minutes=10)
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    reasons = aio_loop.run(error_reasons(sessions, ramp_id))
    if in_a_row:
        assert len(script.runs) == 12 and row.cleanup_phase == WATCH_LATE_DEPOSIT
        assert reasons == ["PENDULUM_TIMEOUT"] * 8 and row.attempts == 0
    else:
        assert row.cleanup_phase is None and "CLEANUP_ABANDONED" in reasons
    assert row.status == "TIMED_OUT"  # a follow-up never changes how the ramp ended


def test_a_sell_the_previous_release_timed_out_is_watched_by_this_one(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
    database_url: str,
) -> None:
    """During a rollout the previous release's processor times ramps out without a watch
    (ramp migration 0006's trigger sets it): this release's processor claims the ended ramp,
    runs the watch and records it, and the ramp stays TIMED_OUT."""
    ramp_id = aio_loop.run(insert_running(sessions, clock.now))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(  # the old processor's move: no follow-up, next_attempt_at left alone
            "UPDATE ramp.ramps SET status = 'TIMED_OUT', current_phase = 'timedOut',"
            " cleanup_phase = NULL, attempts = 0, phase_started_at = %s, updated_at = %s"
            " WHERE id = %s",
            [clock.now, clock.now, ramp_id],
        )
    script = Script()
    proc = processor(sessions, direct, clock, script, extra=SELL_V1.after_abort)
    assert aio_loop.run(proc.run_once()) == 1
    assert script.runs == [WATCH_LATE_DEPOSIT]
    row = aio_loop.run(ramp_row(sessions, ramp_id))
    assert (row.status, row.current_phase, row.cleanup_phase) == ("TIMED_OUT", "timedOut", None)
    history = aio_loop.run(events(sessions, ramp_id))
    assert history[-1] == (WATCH_LATE_DEPOSIT, WATCH_LATE_DEPOSIT, "TIMED_OUT")


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("statement", ["move", "release"])
def test_moves_and_releases_find_their_ramps_by_key_whatever_the_statistics_say(
    database_url: str,
    clock: FakeClock,
    statement: str,
    mode: str,
) -> None:
    """Analyzed while no ramp held a lease, the table tells the planner that no row has the
    processor's lease owner: the fenced write once scanned every ramp for it (a sequential scan
    per move, found with EXPLAIN on 5000 ramps) wherever that looked cheaper than a key lookup
    per moved ramp. Each write now names its ramps' keys."""
    seed_running_ramps(database_url, 5000)  # as the bench seeds them: SQL clones of one
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE ramp.ramps")
        rows = conn.execute("SELECT id, generation FROM ramp.ramps ORDER BY id LIMIT 32").fetchall()
        if statement == "move":
            moves = [
                {
                    "id": str(i),
                    "generation": g,
                    "check_phase": False,
                    "phase_to": "initial",
                    "status_to": "RUNNING",
                    "now": clock.now.isoformat(),
                    "event_to": "initial",
                    "event_status": "RUNNING",
                    "actor": "test",
                    "note": "",
                }
                for i, g in rows
            ]
            sql, params = MOVE_MANY_SQL, {"moves": json.dumps(moves), "owner": "w1"}
        else:
            sql = RELEASE_MANY_SQL
            params = {"id": [r[0] for r in rows], "generation": [r[1] for r in rows], "owner": "w1"}
        # The processor's statements are prepared: after five runs PostgreSQL may keep a
        # generic plan, made without the parameters' values (so without the array's length).
        conn.execute(f"SET plan_cache_mode = {mode}")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
    assert "Seq Scan on ramps" not in plan, plan
    # A lookup by id: through ramps_pkey, or (PostgreSQL 18's skip scan, the clones sharing one
    # wallet and creation time) through the wallet index's id column.
    assert re.search(r"Index Cond: \(id = ", plan), plan


class Gate:
    """Advances every ramp at once, but one ramp's first phase only once `opened` is set (a
    chain call taking its full timeout, say)."""

    def __init__(self, held: uuid.UUID) -> None:
        self.held = held
        self.opened = asyncio.Event()
        self.waiting = asyncio.Event()

    async def run(self, ctx: PhaseContext) -> Outcome:
        if ctx.ramp.id == self.held and not self.opened.is_set():
            self.waiting.set()
            await self.opened.wait()
        return Advance()


def test_a_ramp_stuck_in_a_slow_call_does_not_hold_back_the_ramps_due_after_it(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Batches of two, four ramps in flight at most: while the first claimed ramp waits, the
    ones due after it are claimed and finished (batch after batch, its batch never ended and
    nothing more was claimed)."""
    held = aio_loop.run(insert_running(sessions, clock.now - timedelta(seconds=5)))
    gate = Gate(held)
    queue = WorkQueue(sessions, direct, "w1", timedelta(seconds=30), clock)
    phases = [p.name for p in (*SELL_V1.phases, *SELL_V1.cleanup)]
    proc = PhaseProcessor(
        queue,
        RecordLoader(direct),
        {p: gate for p in phases},
        ProcessorConfig(batch_size=2, max_in_flight=4, poll_interval=timedelta(milliseconds=50)),
        WorkerMetrics(),
    )

    async def scenario() -> tuple[list[str], str]:
        stop = asyncio.Event()
        runner = asyncio.ensure_future(proc.run_forever(stop))
        try:
            await asyncio.wait_for(gate.waiting.wait(), 10)
            later = [await insert_running(sessions, clock.now) for _ in range(6)]
            for _ in range(100):
                statuses = [(await ramp_row(sessions, i)).status for i in later]
                if statuses == ["COMPLETE"] * 6:
                    break
                await asyncio.sleep(0.1)
            held_status = (await ramp_row(sessions, held)).status
            gate.opened.set()
            for _ in range(100):
                if (await ramp_row(sessions, held)).status == "COMPLETE":
                    break
                await asyncio.sleep(0.1)
            return statuses, held_status
        finally:
            gate.opened.set()
            stop.set()
            await runner

    statuses, held_status = aio_loop.run(scenario())
    assert statuses == ["COMPLETE"] * 6
    assert held_status == "RUNNING"  # still in its slow call meanwhile
    assert aio_loop.run(ramp_row(sessions, held)).status == "COMPLETE"


def test_a_stop_lets_the_ramps_in_flight_finish(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    held = aio_loop.run(insert_running(sessions, clock.now))
    gate = Gate(held)
    queue = WorkQueue(sessions, direct, "w1", timedelta(seconds=30), clock)
    phases = [p.name for p in (*SELL_V1.phases, *SELL_V1.cleanup)]
    proc = PhaseProcessor(
        queue, RecordLoader(direct), {p: gate for p in phases}, ProcessorConfig(), WorkerMetrics()
    )

    async def scenario() -> bool:
        stop = asyncio.Event()
        runner = asyncio.ensure_future(proc.run_forever(stop))
        await asyncio.wait_for(gate.waiting.wait(), 10)
        stop.set()
        await asyncio.sleep(0.3)
        returned_early = runner.done()
        gate.opened.set()
        await asyncio.wait_for(runner, 10)
        return returned_early

    assert aio_loop.run(scenario()) is False  # it waited for the ramp in flight
    row = aio_loop.run(ramp_row(sessions, held))
    assert (row.status, row.lease_owner) == ("COMPLETE", None)
