"""The access log of a real server: one line per call, each with its own call's request id,
outcome and method, written by the time the server has stopped."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import grpc
import pytest

from service_kit.errors import NotFound
from service_kit.grpc_server import build_server
from tests.support.aio import LoopThread

ECHO, MISSING = "/test.Echo/Echo", "/test.Echo/Missing"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise NotFound("THING_NOT_FOUND", "no such thing")


def _register(server: grpc.aio.Server) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Missing": grpc.unary_unary_rpc_method_handler(_missing),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))


@pytest.fixture
def info_on_grpc_logger() -> Iterator[None]:
    logger = logging.getLogger("grpc")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("info_on_grpc_logger")
def test_every_call_is_logged_with_its_own_request_id_and_outcome(
    aio_loop: LoopThread, capfd: pytest.CaptureFixture[str]
) -> None:
    async def main() -> list[str]:
        running = build_server("127.0.0.1", 0, _register, ["test.Echo"])
        running.access._flush_s = 3600  # only the stop writes the lines
        await running.start()
        codes = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            echo = channel.unary_unary(ECHO)
            missing = channel.unary_unary(MISSING)
            for rid in ("req-1", "req-2", 'bad"id'):
                await echo(b"x", metadata=(("x-request-id", rid),), timeout=5)
            await echo(b"x", timeout=5)
            try:
                await missing(b"x", metadata=(("x-request-id", "req-3"),), timeout=5)
            except grpc.aio.AioRpcError as err:
                codes.append(err.code().name)
        await running.stop(0)
        return codes

    assert aio_loop.run(main()) == ["NOT_FOUND"]
    entries = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"rpc"' in line]
    calls = [(e["method"], e["outcome"]) for e in entries]
    assert calls == [(ECHO, "OK")] * 4 + [(MISSING, "NOT_FOUND:THING_NOT_FOUND")]
    ids = [e["request_id"] for e in entries]
    assert ids[:2] == ["req-1", "req-2"] and ids[4] == "req-3"
    # A malformed id and a missing one each get an id of ours, distinct from every other.
    assert ids[2] != 'bad"id' and len(set(ids)) == 5
