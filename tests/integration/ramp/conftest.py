"""Fixtures of the ramp service's API tests."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.domain.ramp import RampRecord
from tests.support.aio import FakeClock, LoopThread
from tests.support.ramps import insert_registered, sell_record


@pytest.fixture
def registered(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, aio_loop: LoopThread
) -> RampRecord:
    """A SELL ramp stored as RegisterRamp stores it."""
    record = sell_record(clock.now)
    aio_loop.run(insert_registered(sessions, record))
    return record
