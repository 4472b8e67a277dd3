"""The quote service over gRPC, with deadlines, retrying only what is safe to retry.

GetQuote is a read and ConsumeQuote is idempotent per ramp id, so both may be retried after
UNAVAILABLE or DEADLINE_EXCEEDED; every other failure is mapped to a domain error at once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC
from decimal import Decimal
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from ramp_service.domain.errors import QuoteServiceUnavailable, QuoteUnusable, invalid
from ramp_service.domain.ramp import QuoteSnapshot
from service_kit.errors import NotFound

T = TypeVar("T")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return err.code().name


def _snapshot(quote: quote_pb2.Quote) -> QuoteSnapshot:
    return QuoteSnapshot(
        id=uuid.UUID(quote.id),
        ramp_type=quote_pb2.RampType.Name(quote.ramp_type),
        from_network=quote.from_network,
        to_network=quote.to_network,
        input_amount=Decimal(quote.input_amount),
        input_currency=quote.input_currency,
        output_amount=Decimal(quote.output_amount),
        output_currency=quote.output_currency,
        fee_total=Decimal(quote.fee.total),
        status=quote_pb2.Quote.Status.Name(quote.status),
        expires_at=quote.expires_at.ToDatetime(tzinfo=UTC),
    )


# Every address the target resolves to gets its own connection and calls take turns over
# them: with grpc's default (pick_first) one ramp process would send all its quote calls to one
# quote pod, whatever the quote service scaled to. In Kubernetes the target is the headless
# Service, `dns:///quote-service:15051`, which resolves to every ready pod.
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def quote_channel(target: str) -> grpc.aio.Channel:
    """The shared channel to the quote service at `target` (any gRPC name: host:port,
    dns:///name:port, ipv4:a:p,b:p), balancing calls over every address it resolves to."""
    return grpc.aio.insecure_channel(target, options=[("grpc.service_config", SERVICE_CONFIG)])


class GrpcQuoteClient:
    """`QuoteClient` over a shared aio channel."""

    def __init__(
        self, channel: grpc.aio.Channel, timeout_s: float = 2.0, attempts: int = 3
    ) -> None:
        self._stub = quote_pb2_grpc.QuoteServiceStub(channel)
        self._timeout_s = timeout_s
        self._attempts = attempts

    async def get_quote(self, quote_id: uuid.UUID) -> QuoteSnapshot:
        """The quote, whatever its status."""
        quote = await self._call(
            lambda: self._stub.GetQuote(
                quote_pb2.GetQuoteRequest(id=str(quote_id)), timeout=self._timeout_s
            )
        )
        return _snapshot(quote)

    async def consume_quote(self, quote_id: uuid.UUID, ramp_id: uuid.UUID) -> QuoteSnapshot:
        """Consume for `ramp_id`; QUOTE_EXPIRED / QUOTE_CONSUMED surface as QuoteUnusable."""
        response = await self._call(
            lambda: self._stub.ConsumeQuote(
                quote_pb2.ConsumeQuoteRequest(quote_id=str(quote_id), ramp_id=str(ramp_id)),
                timeout=self._timeout_s,
            )
        )
        return _snapshot(response.quote)

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self._attempts + 1):
            try:
                return await call()
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if code in RETRYABLE and attempt < self._attempts:
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                if code in RETRYABLE:
                    raise QuoteServiceUnavailable(code.name) from None
                reason = _reason(err)
                if code == grpc.StatusCode.NOT_FOUND:
                    raise NotFound(reason, err.details() or "quote not found") from None
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise invalid(reason, "quote_id", err.details() or "invalid") from None
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise QuoteUnusable(reason, err.details() or reason) from None
                raise QuoteServiceUnavailable(f"{code.name}: {err.details()}") from None
        raise AssertionError("unreachable")
