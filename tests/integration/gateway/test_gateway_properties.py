"""Headers reach the upstream as metadata; random bodies never produce a 5xx or a bad shape."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from tests.support.aio import LoopThread
from tests.support.envoy import Gateway, start_gateway
from tests.support.quotes import serve_quote_standin


class MetadataEcho(quote_pb2_grpc.QuoteServiceServicer):
    """A stand-in upstream that answers GetQuote with the metadata it received."""

    async def GetQuote(
        self, request: quote_pb2.GetQuoteRequest, context: grpc.aio.ServicerContext
    ) -> quote_pb2.Quote:
        metadata = dict(context.invocation_metadata() or ())
        return quote_pb2.Quote(
            id=request.id,
            partner_id=str(metadata.get("idempotency-key", "")),
            input_currency=str(metadata.get("x-request-id", "")),
        )


@pytest.fixture
def echo_gateway(aio_loop: LoopThread, tmp_path: Path) -> Iterator[Gateway]:
    upstream = aio_loop.run(serve_quote_standin(MetadataEcho()))
    gateway = start_gateway(
        tmp_path, True, quote_upstream=f"127.0.0.1:{upstream.port}", ramp_upstream=""
    )
    yield gateway
    gateway.stop()
    aio_loop.run(upstream.stop(0))


def test_idempotency_key_and_request_id_reach_the_upstream_as_metadata(
    echo_gateway: Gateway,
) -> None:
    response = httpx.get(
        f"{echo_gateway.url}/v1/ramp/quotes/00000000-0000-0000-0000-000000000001",
        headers={"Idempotency-Key": "key-123", "X-Request-Id": "req-9"},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["partnerId"] == "key-123"
    assert response.json()["inputCurrency"] == "req-9"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [
    "rampType",
    "from",
    "to",
    "inputAmount",
    "inputCurrency",
    "outputCurrency",
    "partnerId",
    "ramp_type",
]
PLAUSIBLE = {
    "rampType": st.sampled_from(["SELL", "BUY", "RAMP_TYPE_UNSPECIFIED", "sell", 1, 2, 99]),
    "from": st.sampled_from(["pendulum", "assethub", "pix", "moon", ""]),
    "to": st.sampled_from(["sepa", "cbu", "assethub", "pix", ""]),
    "inputAmount": st.sampled_from(
        ["100", "0", "-1", "1e3", "99999999999", "10.1234567", "abc", ""]
    )
    | st.decimals(min_value=-10, max_value=20000, places=2, allow_nan=False).map(str),
    "inputCurrency": st.sampled_from(["USDC", "BRL", "EUR", "XYZ"]),
    "outputCurrency": st.sampled_from(["EUR", "ARS", "USDC", "BRL"]),
    "partnerId": st.sampled_from(["", "acme-wallet", "flat-partner", "nobody"]),
}
BODIES = st.fixed_dictionaries(
    {}, optional={k: PLAUSIBLE[k] | JSON_VALUES for k in PLAUSIBLE}
) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), JSON_VALUES, max_size=6)

QUOTE_KEYS = {
    "id",
    "rampType",
    "from",
    "to",
    "inputAmount",
    "inputCurrency",
    "outputCurrency",
    "partnerId",
    "outputAmount",
    "rate",
    "fee",
    "status",
    "expiresAt",
    "createdAt",
}


def check_shape(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    if response.status_code == 200:
        assert set(body) == QUOTE_KEYS
        assert all(isinstance(body[k], str) for k in ("inputAmount", "outputAmount", "rate"))
        assert body["status"] == "PENDING"
    else:
        assert isinstance(body["code"], int) and isinstance(body["message"], str)


def test_random_create_bodies_never_break_the_contract(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(body=BODIES)
        def run(body: dict[str, Any]) -> None:
            check_shape(client.post("/v1/ramp/quotes", json=body))

        run()


def test_random_ids_never_break_the_contract(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(
            quote_id=st.text(
                alphabet=st.characters(
                    min_codepoint=33, max_codepoint=126, exclude_characters="/?#%\\"
                ),
                min_size=1,
                max_size=40,
            )
        )
        def run(quote_id: str) -> None:
            response = client.get(f"/v1/ramp/quotes/{quote_id}")
            assert response.status_code in (400, 404), (
                quote_id,
                response.status_code,
                response.text,
            )
            assert isinstance(response.json()["code"], int)

        run()


class SlowPeers(quote_pb2_grpc.QuoteServiceServicer):
    """A stand-in upstream whose GetQuote takes a while and notes the connection it came on."""

    def __init__(self) -> None:
        self.peers: set[str] = set()

    async def GetQuote(
        self, request: quote_pb2.GetQuoteRequest, context: grpc.aio.ServicerContext
    ) -> quote_pb2.Quote:
        self.peers.add(context.peer())
        await asyncio.sleep(0.3)
        return quote_pb2.Quote(id=request.id)


def test_concurrent_requests_spread_over_several_upstream_connections(
    aio_loop: LoopThread, tmp_path: Path
) -> None:
    """A service's SO_REUSEPORT processes each get whole connections from the kernel, so the
    gateway must not funnel a busy upstream into one connection per worker thread (Envoy's
    default): 16 concurrent calls at 4 streams per connection need at least 4 connections."""
    slow = SlowPeers()
    upstream = aio_loop.run(serve_quote_standin(slow))
    gateway = start_gateway(
        tmp_path,
        True,
        quote_upstream=f"127.0.0.1:{upstream.port}",
        ramp_upstream="",
        upstream_streams_per_connection=4,
    )
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:

            def get(i: int) -> int:
                return client.get(f"/v1/ramp/quotes/q{i}").status_code

            with ThreadPoolExecutor(16) as pool:
                assert list(pool.map(get, range(16))) == [200] * 16
    finally:
        gateway.stop()
        aio_loop.run(upstream.stop(0))
    assert len(slow.peers) >= 4, slow.peers


@pytest.mark.parametrize("concurrency", [None, 2])
def test_envoy_runs_as_many_worker_threads_as_configured(
    concurrency: int | None, aio_loop: LoopThread, tmp_path: Path
) -> None:
    """GATEWAY_CONCURRENCY (1 by default) reaches Envoy's command line: left to itself Envoy
    starts a worker per hardware thread of the host, whatever the CPUs it may use."""
    upstream = aio_loop.run(serve_quote_standin(MetadataEcho()))
    overrides = {} if concurrency is None else {"concurrency": concurrency}
    gateway = start_gateway(
        tmp_path, True, quote_upstream=f"127.0.0.1:{upstream.port}", ramp_upstream="", **overrides
    )
    try:
        info = httpx.get(f"{gateway.admin_url}/server_info", timeout=5).json()
    finally:
        gateway.stop()
        aio_loop.run(upstream.stop(0))
    assert info["command_line_options"]["concurrency"] == (concurrency or 1)
