"""Idempotency keys on real PostgreSQL: races, replays, reuse, failures, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pendulumpay.ramp.v1 import ramp_pb2
from ramp_service.domain.errors import IdempotencyInProgress, IdempotencyKeyReused
from ramp_service.idempotency import IdempotencyStore
from service_kit.config import ServiceSettings
from service_kit.db import create_engine, session_factory
from service_kit.errors import DomainError, InvalidInput
from tests.support.aio import FakeClock, LoopThread


@pytest.fixture
def engine(database_url: str, aio_loop: LoopThread) -> Iterator[AsyncEngine]:
    settings = ServiceSettings(database_url=database_url, db_pool_size=20)
    engine = aio_loop.run(_make(settings))
    yield engine
    aio_loop.run(engine.dispose())


async def _make(settings: ServiceSettings) -> AsyncEngine:
    return create_engine(settings, "test")


def store(engine: AsyncEngine, clock: FakeClock) -> IdempotencyStore:
    return IdempotencyStore(
        session_factory(engine), clock, ttl=timedelta(hours=24), lock_for=timedelta(seconds=30)
    )


REQUEST = ramp_pb2.StartRampRequest(ramp_id="r-1")


def test_sixteen_concurrent_identical_requests_execute_once(
    engine: AsyncEngine, clock: FakeClock, aio_loop: LoopThread
) -> None:
    executions = 0

    async def execute() -> ramp_pb2.Ramp:
        nonlocal executions
        executions += 1
        await asyncio.sleep(0.2)
        return ramp_pb2.Ramp(id="r-1", current_phase="initial")

    async def race() -> list[object]:
        s = store(engine, clock)
        calls = [s.run("StartRamp", "key-1", REQUEST, ramp_pb2.Ramp, execute) for _ in range(16)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = aio_loop.run(race())
    assert executions == 1
    replies = [o for o in outcomes if isinstance(o, ramp_pb2.Ramp)]
    busy = [o for o in outcomes if isinstance(o, IdempotencyInProgress)]
    assert len(replies) + len(busy) == 16 and len(replies) >= 1
    # After completion every retry replays the identical response.
    again = aio_loop.run(
        store(engine, clock).run("StartRamp", "key-1", REQUEST, ramp_pb2.Ramp, execute)
    )
    assert again == replies[0] and executions == 1


def test_same_key_different_request_is_rejected_and_keys_are_scoped_to_the_rpc(
    engine: AsyncEngine, clock: FakeClock, aio_loop: LoopThread
) -> None:
    s = store(engine, clock)

    async def execute() -> ramp_pb2.Ramp:
        return ramp_pb2.Ramp(id="r-1")

    aio_loop.run(s.run("StartRamp", "key-2", REQUEST, ramp_pb2.Ramp, execute))
    with pytest.raises(IdempotencyKeyReused):
        aio_loop.run(
            s.run(
                "StartRamp",
                "key-2",
                ramp_pb2.StartRampRequest(ramp_id="r-2"),
                ramp_pb2.Ramp,
                execute,
            )
        )
    other_rpc = aio_loop.run(
        s.run(
            "UpdateRamp", "key-2", ramp_pb2.StartRampRequest(ramp_id="r-2"), ramp_pb2.Ramp, execute
        )
    )
    assert other_rpc.id == "r-1"


def test_a_failed_request_releases_its_key(
    engine: AsyncEngine, clock: FakeClock, aio_loop: LoopThread
) -> None:
    s = store(engine, clock)
    attempts = 0

    async def flaky() -> ramp_pb2.Ramp:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise InvalidInput("TEMPORARY", "first try fails")
        return ramp_pb2.Ramp(id="ok")

    with pytest.raises(DomainError):
        aio_loop.run(s.run("StartRamp", "key-3", REQUEST, ramp_pb2.Ramp, flaky))
    assert aio_loop.run(s.run("StartRamp", "key-3", REQUEST, ramp_pb2.Ramp, flaky)).id == "ok"
    assert attempts == 2


def test_replays_survive_a_restart_and_expire_after_the_ttl(
    database_url: str, engine: AsyncEngine, clock: FakeClock, aio_loop: LoopThread
) -> None:
    calls = 0

    async def execute() -> ramp_pb2.Ramp:
        nonlocal calls
        calls += 1
        return ramp_pb2.Ramp(id=f"call-{calls}")

    aio_loop.run(store(engine, clock).run("StartRamp", "key-4", REQUEST, ramp_pb2.Ramp, execute))
    # A new engine and store: what a restarted process would have.
    fresh = aio_loop.run(_make(ServiceSettings(database_url=database_url)))
    try:
        replay = aio_loop.run(
            store(fresh, clock).run("StartRamp", "key-4", REQUEST, ramp_pb2.Ramp, execute)
        )
        assert replay.id == "call-1"
        clock.advance(hours=24, seconds=1)
        after_ttl = aio_loop.run(
            store(fresh, clock).run("StartRamp", "key-4", REQUEST, ramp_pb2.Ramp, execute)
        )
        assert after_ttl.id == "call-2"
    finally:
        aio_loop.run(fresh.dispose())


def test_a_dead_holder_is_taken_over_after_its_lock_expires(
    engine: AsyncEngine, clock: FakeClock, aio_loop: LoopThread
) -> None:
    s = store(engine, clock)
    started = asyncio.Event()

    async def hangs() -> ramp_pb2.Ramp:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def quick() -> ramp_pb2.Ramp:
        return ramp_pb2.Ramp(id="second")

    async def scenario() -> tuple[ramp_pb2.Ramp, type[BaseException]]:
        holder = asyncio.ensure_future(s.run("StartRamp", "key-5", REQUEST, ramp_pb2.Ramp, hangs))
        await started.wait()
        try:
            await s.run("StartRamp", "key-5", REQUEST, ramp_pb2.Ramp, quick)
        except IdempotencyInProgress as exc:
            busy = type(exc)
        clock.advance(seconds=31)
        result = await s.run("StartRamp", "key-5", REQUEST, ramp_pb2.Ramp, quick)
        holder.cancel()
        return result, busy

    result, busy = aio_loop.run(scenario())
    assert busy is IdempotencyInProgress
    assert result.id == "second"


def test_a_request_that_ran_past_its_lock_cannot_release_or_complete_its_successor_s_claim(
    engine: AsyncEngine, clock: FakeClock, aio_loop: LoopThread
) -> None:
    """A runs past the lock; retry B takes the key over. A's late failure must not free B's
    claim (a third request would run beside B), and A's late success must not overwrite it."""
    s = store(engine, clock)
    a_started, a_fails, a_succeeds = asyncio.Event(), asyncio.Event(), asyncio.Event()
    b_started, b_done = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    async def slow_a() -> ramp_pb2.Ramp:
        a_started.set()
        await a_fails.wait()
        raise InvalidInput("PARTNER_REFUSED", "A failed late")

    async def slow_a2() -> ramp_pb2.Ramp:
        a_started.set()
        await a_succeeds.wait()
        return ramp_pb2.Ramp(id="from-a")

    async def b() -> ramp_pb2.Ramp:
        ran.append("b")
        b_started.set()
        await b_done.wait()
        return ramp_pb2.Ramp(id="from-b")

    async def c() -> ramp_pb2.Ramp:
        ran.append("c")
        return ramp_pb2.Ramp(id="from-c")

    async def scenario(
        key: str, a_execute: Callable[[], Awaitable[ramp_pb2.Ramp]], a_finishes: asyncio.Event
    ) -> ramp_pb2.Ramp:
        a_started.clear()
        b_started.clear()
        b_done.clear()
        first = asyncio.ensure_future(s.run("StartRamp", key, REQUEST, ramp_pb2.Ramp, a_execute))
        await a_started.wait()
        clock.advance(seconds=31)  # A's lock expires while it still runs
        second = asyncio.ensure_future(s.run("StartRamp", key, REQUEST, ramp_pb2.Ramp, b))
        await b_started.wait()
        a_finishes.set()  # A ends now, B still running
        await asyncio.gather(first, return_exceptions=True)
        with pytest.raises(IdempotencyInProgress):  # B still holds the key
            await s.run("StartRamp", key, REQUEST, ramp_pb2.Ramp, c)
        b_done.set()
        await second
        return await s.run("StartRamp", key, REQUEST, ramp_pb2.Ramp, c)  # B's, replayed

    replay = aio_loop.run(scenario("key-late-fail", slow_a, a_fails))
    assert (replay.id, ran) == ("from-b", ["b"])
    ran.clear()
    replay = aio_loop.run(scenario("key-late-success", slow_a2, a_succeeds))
    assert (replay.id, ran) == ("from-b", ["b"])
