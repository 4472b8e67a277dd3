"""Running services for integration tests: real gRPC servers on loopback, real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from pendulumpay.quote.v1 import quote_pb2_grpc

from quote_service.config import QuoteSettings
from quote_service.main import QuoteDeps, create_server
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
def quote_server(
    database_url: str, clock: FakeClock, aio_loop: LoopThread
) -> Iterator[RunningServer]:
    """The quote service on an ephemeral port, on a fresh database."""
    settings = QuoteSettings(database_url=database_url, grpc_port=0, log_rpcs=False)

    async def build() -> RunningServer:
        running, _ = create_server(settings, QuoteDeps(clock=clock))
        await running.start()
        return running

    running = aio_loop.run(build())
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
