"""The ramp service's channel to the quote service spreads calls over every address its target
resolves to (in Kubernetes, the headless Service's pods), instead of pinning them to one."""

from __future__ import annotations

import uuid
from collections import Counter

import grpc

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from ramp_service.adapters.quote_client import quote_channel
from tests.support.aio import LoopThread
from tests.support.processes import free_port
from tests.support.quotes import serve_quote_standin


class Named(quote_pb2_grpc.QuoteServiceServicer):
    """A stand-in quote pod that answers with its own name and counts its calls."""

    def __init__(self, name: str, calls: Counter[str]) -> None:
        self.name, self.calls = name, calls

    async def GetQuote(
        self, request: quote_pb2.GetQuoteRequest, context: grpc.aio.ServicerContext
    ) -> quote_pb2.Quote:
        self.calls[self.name] += 1
        return quote_pb2.Quote(id=request.id, partner_id=self.name)


def test_calls_take_turns_over_every_resolved_address(aio_loop: LoopThread) -> None:
    port = free_port()
    calls: Counter[str] = Counter()
    hosts = ["127.0.0.1", "127.0.0.2"]  # two "pods" on one port, as a headless Service gives

    servers = [aio_loop.run(serve_quote_standin(Named(h, calls), h, port)) for h in hosts]

    async def call_many() -> list[str]:
        channel = quote_channel(f"ipv4:{hosts[0]}:{port},{hosts[1]}:{port}")
        stub = quote_pb2_grpc.QuoteServiceStub(channel)
        try:
            request = quote_pb2.GetQuoteRequest(id=str(uuid.uuid4()))
            await stub.GetQuote(request, timeout=5, wait_for_ready=True)  # both subchannels up
            await channel.channel_ready()
            return [(await stub.GetQuote(request, timeout=5)).partner_id for _ in range(20)]
        finally:
            await channel.close()

    try:
        answered = aio_loop.run(call_many())
    finally:
        for server in servers:
            aio_loop.run(server.stop(0))
    # Round robin: consecutive calls alternate once both connections are ready.
    assert set(answered) == set(hosts), calls
    assert min(calls.values()) >= 8, calls
