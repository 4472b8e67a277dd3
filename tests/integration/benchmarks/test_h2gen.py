"""The benchmark's C load generator against a real grpc.aio server over loopback: what it counts
as done and as failed, the open loop's fixed schedule, and an early stop."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench import h2
from bench.echo_server import ECHO
from tests.support.processes import free_port

PAYLOAD = h2.grpc_request(ECHO, b"x" * 64)


def _wait_answering(target: h2.Target, timeout: float = 20) -> None:
    """Until a server just started answers calls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            h2.run(target, [PAYLOAD], seconds=0.05, concurrency=1)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def echo() -> Iterator[h2.Target]:
    """`python -m bench.echo_server`, as the bench runs it."""
    assert h2.BINARY.exists(), "make builds build/h2gen before the tests"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(port)])
    target = h2.Target(port, grpc=True)
    _wait_answering(target)
    yield target
    server.kill()
    server.wait()


def test_a_closed_loop_counts_every_answered_call_with_its_latency(echo: h2.Target) -> None:
    result = h2.run(echo, [PAYLOAD], seconds=0.5, concurrency=8)
    assert result.errors == 0
    assert result.requests > 50
    assert 0 < result.p50_ms <= result.p99_ms <= result.p999_ms


def test_grpc_status_in_the_trailers_decides_success(echo: h2.Target) -> None:
    # HTTP 200 with grpc-status 12 (UNIMPLEMENTED): a failure, though every HTTP status is 2xx.
    unknown = h2.grpc_request("/bench.Echo/Nope", b"x")
    result = h2.run(echo, [unknown, PAYLOAD], seconds=0.5, concurrency=4)
    assert result.errors > 0
    assert result.requests - result.errors > 0
    assert abs(result.errors - (result.requests - result.errors)) <= 4  # round-robin halves


def test_an_open_loop_sends_exactly_its_schedule(echo: h2.Target) -> None:
    result = h2.run(echo, [PAYLOAD], seconds=1.0, rate=150)
    assert result.requests == 150
    assert result.errors == 0
    assert 0.9 * 150 <= result.qps <= 1.1 * 150


def test_an_open_loop_counts_latency_from_the_intended_start(echo: h2.Target) -> None:
    # Far beyond what one Python server answers: the queue grows, and latencies measured from
    # each request's intended start must show it (a generator that waits would not).
    flooded = h2.run(echo, [PAYLOAD], seconds=1.0, rate=20_000)
    calm = h2.run(echo, [PAYLOAD], seconds=1.0, rate=100)
    assert flooded.p99_ms > 10 * calm.p50_ms
    assert flooded.p99_ms > 200


def test_a_stopped_run_ends_early_and_reports_completion_times(echo: h2.Target) -> None:
    launch = h2.Launch(echo, [PAYLOAD], seconds=60, concurrency=4, completions=True)
    time.sleep(0.5)
    before = time.monotonic_ns()
    run = launch.finish(stop=True)
    assert time.monotonic_ns() - before < 5e9
    assert run.result.requests > 10
    assert len(run.completions) == run.result.requests - run.result.errors
    assert run.completions == sorted(run.completions)
    assert run.completions[-1] <= time.monotonic_ns()


def test_a_refused_connection_is_an_error_not_a_result() -> None:
    with pytest.raises(RuntimeError, match="h2gen failed"):
        h2.run(h2.Target(free_port(), grpc=True), [PAYLOAD], seconds=0.1)


def test_a_stop_before_the_first_send_reports_an_empty_run(echo: h2.Target) -> None:
    run = h2.Launch(echo, [PAYLOAD], seconds=60, concurrency=4).finish(stop=True)
    assert run.result.errors == 0
    assert run.result.qps >= 0


AGING_SERVER = """
import asyncio, sys, grpc
async def echo(request, context):
    return request
async def main():
    server = grpc.aio.server(options=[("grpc.max_connection_age_ms", 300),
                                      ("grpc.max_connection_age_grace_ms", 200)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


def test_connections_the_server_ends_take_no_more_requests_and_the_run_ends() -> None:
    # The server sends GOAWAY 300 ms into each connection and closes it 200 ms later: h2gen
    # must neither spin on refused streams nor die, and must stop once no connection is left.
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", AGING_SERVER, str(port)])
    try:
        target = h2.Target(port, grpc=True)
        _wait_answering(target)
        began = time.monotonic()
        result = h2.run(target, [PAYLOAD], seconds=5, concurrency=8)
        assert time.monotonic() - began < 4  # ended with its connections, not at 5 s
        assert result.requests - result.errors > 10
        assert result.errors <= 8 * 4  # at most the streams in flight on each connection
    finally:
        server.kill()
        server.wait()
