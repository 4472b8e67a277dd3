"""The funding lock on real PostgreSQL: one holder per funding account at a time, and the
ramps of one process wait for it without each taking a pooled connection."""

from __future__ import annotations

import asyncio
import itertools
import time

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from ramp_service.chains.errors import RecoverableError
from ramp_service.worker.handlers.phases import FundingLock
from tests.support.aio import LoopThread


def test_many_waiters_share_one_connection_and_never_overlap(
    database_url: str, aio_loop: LoopThread
) -> None:
    """Eight ramps of one process fund at once through a pool of one connection that gives
    up after 0.5 s: each waits its turn on the process's own lock (waiting in the pool, the
    later ones timed out), and no two hold the lock together."""
    url = make_url(database_url).set(drivername="postgresql+psycopg")

    async def run() -> tuple[list[tuple[float, float]], object]:
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.5)
        lock = FundingLock(engine, wait_s=10)
        spans: list[tuple[float, float]] = []

        async def fund() -> None:
            async with lock.hold("GFUNDING"):
                entered = time.monotonic()
                await asyncio.sleep(0.15)
                spans.append((entered, time.monotonic()))

        await asyncio.gather(*(fund() for _ in range(8)))
        # A waiter past its budget is told so, as a recoverable error.
        short = FundingLock(engine, wait_s=0.1)
        async with short.hold("GFUNDING"):
            try:
                async with short.hold("GFUNDING"):
                    outcome: object = "entered"
            except RecoverableError as exc:
                outcome = exc.reason
        await engine.dispose()
        return spans, outcome

    spans, outcome = aio_loop.run(run())
    assert len(spans) == 8
    ordered = sorted(spans)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(ordered))
    assert outcome == "FUNDING_BUSY"


def test_a_holder_gone_silent_loses_the_lock_after_its_bound(
    database_url: str, aio_loop: LoopThread
) -> None:
    """A holder that stops talking to the database while holding (a worker whose node was cut
    off) would keep the lock until TCP gave up: the server ends its session once it has been
    idle in the transaction for `hold_s`, and the next holder gets the lock."""
    url = make_url(database_url).set(drivername="postgresql+psycopg")

    async def run() -> tuple[float, str]:
        engine = create_async_engine(url, pool_size=2, max_overflow=0)
        silent = FundingLock(engine, wait_s=10, hold_s=0.5)
        other = FundingLock(engine, wait_s=10)  # another process: its own in-process lock
        held = asyncio.Event()
        ended = ""

        async def go_silent() -> None:
            nonlocal ended
            try:
                async with silent.hold("GFUNDING"):
                    held.set()
                    await asyncio.sleep(5)  # says nothing to the database meanwhile
            except Exception as exc:  # its session was ended under it
                ended = type(exc).__name__

        task = asyncio.create_task(go_silent())
        await held.wait()
        started = time.monotonic()
        async with other.hold("GFUNDING"):
            waited = time.monotonic() - started
        await task
        await engine.dispose()
        return waited, ended

    waited, ended = aio_loop.run(run())
    assert waited < 4.5  # before the silent holder would have let go by itself (5 s)
    assert ended  # and it learns its session is gone when it speaks again
