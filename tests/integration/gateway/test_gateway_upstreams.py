"""The gateway in front of several upstream hosts per service, some of them down: readiness
needs one healthy host per cluster, and reads (never writes) are retried on another host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.config import GatewaySettings
from gateway.render import render_config
from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from service_kit.grpc_server import RunningServer
from tests.support.aio import LoopThread
from tests.support.envoy import Gateway, start_gateway
from tests.support.processes import free_port
from tests.support.quotes import serve_quote_standin


class CountingQuotes(quote_pb2_grpc.QuoteServiceServicer):
    """A stand-in upstream that answers GetQuote and CreateQuote and counts the calls."""

    def __init__(self) -> None:
        self.calls = {"GetQuote": 0, "CreateQuote": 0}

    async def GetQuote(
        self, request: quote_pb2.GetQuoteRequest, context: grpc.aio.ServicerContext
    ) -> quote_pb2.Quote:
        self.calls["GetQuote"] += 1
        return quote_pb2.Quote(id=request.id)

    async def CreateQuote(
        self, request: quote_pb2.CreateQuoteRequest, context: grpc.aio.ServicerContext
    ) -> quote_pb2.Quote:
        self.calls["CreateQuote"] += 1
        return quote_pb2.Quote(id="created")


@pytest.fixture
def standins(aio_loop: LoopThread) -> Iterator[list[RunningServer]]:
    """Two running stand-in upstreams (each its own host); stopped afterwards if still up."""
    servers = [aio_loop.run(serve_quote_standin(CountingQuotes())) for _ in range(2)]
    yield servers
    for server in servers:
        aio_loop.run(server.stop(0))


def hosts(*ports: int) -> str:
    """An upstream setting naming one loopback host per port."""
    return ",".join(f"127.0.0.1:{port}" for port in ports)


def host_health(gateway: Gateway, cluster: str) -> dict[int, bool]:
    """Envoy's own view of a cluster: port → healthy (passed its last active health checks)."""
    statuses = httpx.get(f"{gateway.admin_url}/clusters?format=json", timeout=5).json()
    (status,) = [c for c in statuses["cluster_statuses"] if c["name"] == cluster]
    return {
        h["address"]["socket_address"]["port_value"]: not h["health_status"].get(
            "failed_active_health_check", False
        )
        for h in status["host_statuses"]
    }


def wait_for_health(gateway: Gateway, cluster: str, expected: dict[int, bool]) -> None:
    """Block until Envoy's health checks have seen each host as `expected`."""
    deadline = time.monotonic() + 15
    while (seen := host_health(gateway, cluster)) != expected:
        assert time.monotonic() < deadline, f"{cluster}: {seen}, waiting for {expected}"
        time.sleep(0.05)


def counter(gateway: Gateway, name: str) -> int:
    """One of Envoy's counters, read from the admin endpoint."""
    text = httpx.get(f"{gateway.admin_url}/stats?filter=^{name}$", timeout=5).text
    (line,) = text.splitlines()
    return int(line.split(":")[1])


def test_ready_while_every_cluster_has_a_healthy_host(
    standins: list[RunningServer], aio_loop: LoopThread, tmp_path: Path
) -> None:
    """One unhealthy pod of a service must not take the gateway out of every Service's
    endpoints; only a service with no healthy pod at all makes the gateway unready."""
    quote, ramp = standins
    down = free_port()
    gateway = start_gateway(
        tmp_path, False, quote_upstream=hosts(quote.port), ramp_upstream=hosts(ramp.port, down)
    )
    try:
        wait_for_health(gateway, "quote", {quote.port: True})
        wait_for_health(gateway, "ramp", {ramp.port: True, down: False})
        assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200

        aio_loop.run(ramp.stop(0))
        wait_for_health(gateway, "ramp", {ramp.port: False, down: False})
        assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 503
    finally:
        gateway.stop()


def test_reads_are_retried_on_another_host_and_writes_never(
    aio_loop: LoopThread, tmp_path: Path
) -> None:
    """A pod that stopped listening but is still in DNS refuses connections until Envoy's
    health checks catch up. A GET (a read: safe to repeat) moves on to another host; a POST
    is never sent twice, it fails. One live host of three is below Envoy's panic threshold,
    so Envoy balances over all three, the two that refuse connections included."""
    servicer = CountingQuotes()
    live = aio_loop.run(serve_quote_standin(servicer))
    gateway = start_gateway(
        tmp_path,
        True,
        quote_upstream=hosts(live.port, free_port(), free_port()),
        ramp_upstream="",
    )
    try:
        with httpx.Client(base_url=gateway.url, timeout=5) as client:
            reads = [client.get(f"/v1/ramp/quotes/q{i}").status_code for i in range(6)]
            assert reads == [200] * 6
            assert servicer.calls["GetQuote"] == 6
            retried = counter(gateway, "cluster.quote.upstream_rq_retry")
            assert retried > 0

            writes = [client.post("/v1/ramp/quotes", json={}).status_code for _ in range(6)]
            assert set(writes) == {200, 503}, writes
            assert servicer.calls["CreateQuote"] == writes.count(200)
            assert counter(gateway, "cluster.quote.upstream_rq_retry") == retried
    finally:
        gateway.stop()
        aio_loop.run(live.stop(0))


def test_only_the_get_methods_have_a_retry_policy() -> None:
    config = render_config(GatewaySettings())
    (listener,) = config["static_resources"]["listeners"]
    (vhost,) = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ]
    retried = {
        r["match"]["path"].rsplit("/", 1)[1]
        for r in vhost["routes"]
        if "retry_policy" in r.get("route", {})
    }
    assert retried == {"GetQuote", "GetRamp", "GetRampErrors", "ListRamps"}
