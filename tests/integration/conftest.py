"""Running services for integration tests: real gRPC servers on loopback, real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pendulumpay.quote.v1 import quote_pb2_grpc
from pendulumpay.ramp.v1 import ramp_pb2_grpc
from quote_service.config import QuoteSettings
from quote_service.main import QuoteDeps, create_server
from ramp_service.config import RampSettings
from ramp_service.main import RampDeps
from ramp_service.main import create_server as create_ramp_server
from service_kit.config import ServiceSettings
from service_kit.db import DirectPool, create_engine, session_factory
from service_kit.grpc_server import RunningServer
from tests.support.aio import FakeClock, LoopThread


@pytest.fixture(scope="session")
def aio_loop() -> Iterator[LoopThread]:
    """One background event loop for every in-process server of the session."""
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def clock() -> FakeClock:
    """The injected clock, starting at a fixed UTC instant."""
    return FakeClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


@pytest.fixture
def quote_settings(database_url: str) -> QuoteSettings:
    """The quote service's settings (a module overrides this fixture to change them)."""
    return QuoteSettings(database_url=database_url, grpc_port=0, log_rpcs=False)


def start_quote_server(
    settings: QuoteSettings, clock: FakeClock, aio_loop: LoopThread
) -> RunningServer:
    """A started quote service in the shared loop (stop it with `aio_loop.run(s.stop(0))`)."""

    async def build() -> RunningServer:
        running, _ = create_server(settings, QuoteDeps(clock=clock))
        await running.start()
        return running

    return aio_loop.run(build())


@pytest.fixture
def quote_server(
    quote_settings: QuoteSettings, clock: FakeClock, aio_loop: LoopThread
) -> Iterator[RunningServer]:
    """The quote service on an ephemeral port, on a fresh database."""
    running = start_quote_server(quote_settings, clock, aio_loop)
    yield running
    aio_loop.run(running.stop(0))


@pytest.fixture
def quote_channel(quote_server: RunningServer) -> Iterator[grpc.Channel]:
    """A real gRPC channel to the quote service."""
    with grpc.insecure_channel(f"127.0.0.1:{quote_server.port}") as channel:
        yield channel


@pytest.fixture
def quote_stub(quote_channel: grpc.Channel) -> quote_pb2_grpc.QuoteServiceStub:
    """Client stub for QuoteService."""
    return quote_pb2_grpc.QuoteServiceStub(quote_channel)


def start_ramp_server(
    aio_loop: LoopThread, database_url: str, quote_port: int, clock: FakeClock, **overrides: Any
) -> RunningServer:
    """The ramp service on an ephemeral port in front of `database_url`."""
    settings = RampSettings(
        database_url=database_url,
        grpc_port=0,
        log_rpcs=False,
        quote_service_target=f"127.0.0.1:{quote_port}",
        admin_token="test-admin-token",
        # A test's few chain calls load their clients on first use: each loaded at start
        # decodes the runtime's metadata (seconds apiece on a slow machine).
        **{"pendulum_warm_clients": 0, **overrides},
    )  # type: ignore[arg-type]

    async def build() -> RunningServer:
        running, _ = create_ramp_server(settings, RampDeps(clock=clock))
        await running.start()
        return running

    return aio_loop.run(build())


@pytest.fixture
def ramp_server(
    database_url: str, quote_server: RunningServer, clock: FakeClock, aio_loop: LoopThread
) -> Iterator[RunningServer]:
    """The ramp service, talking to the quote service over gRPC, on a fresh database."""
    running = start_ramp_server(aio_loop, database_url, quote_server.port, clock)
    yield running
    aio_loop.run(running.stop(0))


@pytest.fixture
def ramp_stub(ramp_server: RunningServer) -> Iterator[ramp_pb2_grpc.RampServiceStub]:
    """Client stub for RampService over a real channel."""
    with grpc.insecure_channel(f"127.0.0.1:{ramp_server.port}") as channel:
        yield ramp_pb2_grpc.RampServiceStub(channel)


@pytest.fixture
def sessions(database_url: str, aio_loop: LoopThread) -> Iterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test database, for tests that store or inspect rows directly."""

    async def make() -> AsyncEngine:
        return create_engine(ServiceSettings(database_url=database_url, db_pool_size=20), "test")

    engine = aio_loop.run(make())
    yield session_factory(engine)
    aio_loop.run(engine.dispose())


@pytest.fixture
def direct(database_url: str, aio_loop: LoopThread) -> Iterator[DirectPool]:
    """The direct (psycopg, autocommit) pool on the test database, as the services use it."""
    pool = DirectPool(ServiceSettings(database_url=database_url, db_direct_pool_size=4), "test")
    yield pool
    aio_loop.run(pool.close())
