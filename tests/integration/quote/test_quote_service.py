"""QuoteService over a real gRPC channel on real PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from service_kit.db import libpq_url
from tests.support.aio import FakeClock
from tests.support.grpc_errors import failure
from tests.support.quotes import sell_request

Stub = quote_pb2_grpc.QuoteServiceStub


def test_create_then_get(quote_stub: Stub, clock: FakeClock) -> None:
    created = quote_stub.CreateQuote(sell_request("100"), timeout=5)
    assert uuid.UUID(created.id)
    assert created.status == quote_pb2.Quote.PENDING
    assert (created.input_amount, created.input_currency, created.output_currency) == (
        "100.000000",
        "USDC",
        "EUR",
    )
    fee = created.fee
    parts = [
        Decimal(fee.network),
        Decimal(fee.platform),
        Decimal(fee.anchor),
        Decimal(fee.partner_markup),
    ]
    assert sum(parts) == Decimal(fee.total)
    assert fee.currency == "USDC"
    net = Decimal(created.input_amount) - Decimal(fee.total)
    assert Decimal(created.output_amount) == (net * Decimal(created.rate)).quantize(
        Decimal("0.01"), rounding="ROUND_DOWN"
    )
    assert created.created_at.ToDatetime().replace(tzinfo=clock.now.tzinfo) == clock.now
    assert created.expires_at.ToDatetime() - created.created_at.ToDatetime() == timedelta(
        minutes=10
    )

    fetched = quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=created.id), timeout=5)
    assert fetched == created


def test_buy_corridor_and_partner(quote_stub: Stub) -> None:
    quote = quote_stub.CreateQuote(
        quote_pb2.CreateQuoteRequest(
            ramp_type=quote_pb2.BUY,
            from_network="pix",
            to_network="assethub",
            input_amount="500.00",
            input_currency="BRL",
            output_currency="USDC",
            partner_id="acme-wallet",
        ),
        timeout=5,
    )
    assert quote.ramp_type == quote_pb2.BUY
    assert quote.partner_id == "acme-wallet"
    assert Decimal(quote.fee.partner_markup) == Decimal("2.50")  # 0.5% of 500 BRL
    assert len(quote.output_amount.split(".")[1]) == 6


def test_invalid_request_names_every_bad_field(quote_stub: Stub) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        quote_stub.CreateQuote(
            quote_pb2.CreateQuoteRequest(from_network="moon", input_amount="-1"), timeout=5
        )
    err = failure(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_QUOTE_REQUEST"
    assert set(err.fields) == {
        "ramp_type",
        "from",
        "to",
        "input_currency",
        "output_currency",
        "input_amount",
    }


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (sell_request("5"), "AMOUNT_BELOW_MINIMUM"),
        (sell_request("1000000"), "AMOUNT_ABOVE_MAXIMUM"),
        (sell_request("100", output_currency="ARS"), "UNSUPPORTED_CORRIDOR"),
        (sell_request("100", partner_id="nobody"), "INVALID_QUOTE_REQUEST"),
    ],
)
def test_unquotable_requests(
    quote_stub: Stub, request_: quote_pb2.CreateQuoteRequest, reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        quote_stub.CreateQuote(request_, timeout=5)
    err = failure(exc.value)
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert err.fields


def test_get_unknown_and_malformed_ids(quote_stub: Stub) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=str(uuid.uuid4())), timeout=5)
    assert (failure(exc.value).code, failure(exc.value).reason) == (
        grpc.StatusCode.NOT_FOUND,
        "QUOTE_NOT_FOUND",
    )
    with pytest.raises(grpc.RpcError) as exc:
        quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id="not-a-uuid"), timeout=5)
    err = failure(exc.value)
    assert (err.code, err.reason, err.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_QUOTE_ID",
        ["id"],
    )


def consume(stub: Stub, quote_id: str, ramp_id: str) -> quote_pb2.ConsumeQuoteResponse:
    return stub.ConsumeQuote(
        quote_pb2.ConsumeQuoteRequest(quote_id=quote_id, ramp_id=ramp_id), timeout=10
    )


def test_consume_is_idempotent_per_ramp_and_exclusive(quote_stub: Stub) -> None:
    quote = quote_stub.CreateQuote(sell_request(), timeout=5)
    assert consume(quote_stub, quote.id, "ramp-a").quote.status == quote_pb2.Quote.CONSUMED
    assert consume(quote_stub, quote.id, "ramp-a").quote.status == quote_pb2.Quote.CONSUMED
    with pytest.raises(grpc.RpcError) as exc:
        consume(quote_stub, quote.id, "ramp-b")
    assert (failure(exc.value).code, failure(exc.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "QUOTE_CONSUMED",
    )
    fetched = quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id), timeout=5)
    assert fetched.status == quote_pb2.Quote.CONSUMED


def test_expiry_with_an_injected_clock(quote_stub: Stub, clock: FakeClock) -> None:
    quote = quote_stub.CreateQuote(sell_request(), timeout=5)
    clock.advance(minutes=9, seconds=59)
    assert (
        quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id)).status
        == quote_pb2.Quote.PENDING
    )
    clock.advance(seconds=1)
    assert (
        quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id)).status
        == quote_pb2.Quote.EXPIRED
    )
    with pytest.raises(grpc.RpcError) as exc:
        consume(quote_stub, quote.id, "late-ramp")
    assert (failure(exc.value).code, failure(exc.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "QUOTE_EXPIRED",
    )


def test_a_holder_s_repeated_consume_is_answered_until_expiry_and_the_quote_stays_its(
    quote_stub: Stub, clock: FakeClock
) -> None:
    """The holder's repeat (a register retried after it consumed the quote and stopped before
    storing its ramp) succeeds until the quote expires, not after: the price is not held open
    for ever. The quote stays consumed by its holder either way."""
    quote = quote_stub.CreateQuote(sell_request(), timeout=5)
    consume(quote_stub, quote.id, "ramp-a")
    clock.advance(minutes=9)
    assert consume(quote_stub, quote.id, "ramp-a").quote.status == quote_pb2.Quote.CONSUMED
    clock.advance(minutes=1)
    with pytest.raises(grpc.RpcError) as late:
        consume(quote_stub, quote.id, "ramp-a")
    assert failure(late.value).reason == "QUOTE_EXPIRED"
    held = quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id), timeout=5)
    assert held.status == quote_pb2.Quote.CONSUMED
    with pytest.raises(grpc.RpcError) as taken:  # and no other ramp may take it
        consume(quote_stub, quote.id, "ramp-b")
    assert failure(taken.value).reason == "QUOTE_CONSUMED"


def test_consume_rejects_bad_ids(quote_stub: Stub) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        consume(quote_stub, str(uuid.uuid4()), "ramp-a")
    assert failure(exc.value).reason == "QUOTE_NOT_FOUND"
    quote = quote_stub.CreateQuote(sell_request(), timeout=5)
    with pytest.raises(grpc.RpcError) as exc:
        consume(quote_stub, quote.id, "")
    assert (failure(exc.value).reason, failure(exc.value).fields) == (
        "INVALID_RAMP_ID",
        ["ramp_id"],
    )
    with pytest.raises(grpc.RpcError) as exc:
        consume(quote_stub, "nope", "ramp-a")
    assert (failure(exc.value).reason, failure(exc.value).fields) == (
        "INVALID_QUOTE_ID",
        ["quote_id"],
    )


def test_twenty_concurrent_consumers_exactly_one_wins(quote_stub: Stub) -> None:
    quote = quote_stub.CreateQuote(sell_request(), timeout=5)

    def attempt(i: int) -> str:
        try:
            consume(quote_stub, quote.id, f"ramp-{i}")
            return "won"
        except grpc.RpcError as err:
            return failure(err).reason

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    assert outcomes.count("won") == 1
    assert outcomes.count("QUOTE_CONSUMED") == 19


def test_unexpected_errors_are_internal_with_a_generic_message(
    quote_stub: Stub, database_url: str
) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("DROP TABLE quote.quote_tickets")
    with pytest.raises(grpc.RpcError) as exc:
        quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=str(uuid.uuid4())), timeout=5)
    err = failure(exc.value)
    assert (err.code, err.reason, err.message) == (
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        "internal error",
    )


def test_health_and_reflection(quote_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(quote_channel)
    response = health.Check(
        health_pb2.HealthCheckRequest(service="pendulumpay.quote.v1.QuoteService")
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(quote_channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert "pendulumpay.quote.v1.QuoteService" in names
    assert "grpc.health.v1.Health" in names
