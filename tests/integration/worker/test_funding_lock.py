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
