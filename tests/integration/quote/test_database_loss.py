"""Losing the database connections: a clear, retryable error, then recovery — nothing lost."""

from __future__ import annotations

import grpc
import psycopg
import pytest

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from quote_service.config import QuoteSettings
from service_kit.db import libpq_url
from tests.support.grpc_errors import failure
from tests.support.quotes import sell_request

KILL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = 'quote_service'"
)


@pytest.fixture
def quote_settings(quote_settings: QuoteSettings) -> QuoteSettings:
    """Without the ticket cache: every GetQuote here must reach the pool under test (the
    cache's own loss of its connection: tests/integration/quote/test_ticket_cache.py)."""
    return quote_settings.model_copy(update={"quote_cache_size": 0})


def terminate_service_connections(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        row = conn.execute(KILL).fetchone()
        return int(row[0]) if row else 0


def test_killed_connections_cost_at_most_one_unavailable_call_and_lose_nothing(
    quote_stub: quote_pb2_grpc.QuoteServiceStub, database_url: str
) -> None:
    created = quote_stub.CreateQuote(sell_request(), timeout=5)
    for _ in range(3):  # every pooled connection has been used and is idle now
        quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=created.id), timeout=5)
    assert terminate_service_connections(database_url) >= 1

    outcomes: list[str] = []
    for _ in range(6):
        try:
            got = quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=created.id), timeout=5)
            assert got == created
            outcomes.append("ok")
        except grpc.RpcError as err:
            f = failure(err)
            outcomes.append(f"{f.code.name}:{f.reason}")
    # The first call may meet a dead connection; it says so retryably, and the pool replaces
    # every dead connection at once, so all later calls succeed.
    assert outcomes[1:] == ["ok"] * 5, outcomes
    assert outcomes[0] in ("ok", "UNAVAILABLE:DATABASE_UNAVAILABLE"), outcomes

    # Writes recover the same way, and what was stored before is all still there.
    terminate_service_connections(database_url)
    answers = []
    for _ in range(3):
        try:
            answers.append(quote_stub.CreateQuote(sell_request(), timeout=5).id)
        except grpc.RpcError as err:
            f = failure(err)
            answers.append(f"{f.code.name}:{f.reason}")
    assert not answers[1].startswith("UNAVAILABLE") and not answers[2].startswith("UNAVAILABLE")
    if answers[0].startswith("UNAVAILABLE"):
        assert answers[0] == "UNAVAILABLE:DATABASE_UNAVAILABLE"
    stored = [a for a in answers if not a.startswith("UNAVAILABLE")]
    for quote_id in [created.id, *stored]:
        assert quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote_id), timeout=5).id == quote_id
