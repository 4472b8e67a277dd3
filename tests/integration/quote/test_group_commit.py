"""CreateQuote's group commit on real PostgreSQL: quotes created while an insert is on its way
are committed together by the next one, every caller answered only after its own row is
committed; one bad row fails only its own caller."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from quote_service.config import QuoteSettings
from quote_service.db.repository import fetch_ticket, insert_tickets
from quote_service.domain.quote import QuoteTicket
from service_kit.coalesce import Coalescer
from service_kit.db import DirectPool, libpq_url, one_items_fault
from tests.integration.conftest import start_quote_server
from tests.support.aio import FakeClock, LoopThread, eventually
from tests.support.quotes import sell_request

Stub = quote_pb2_grpc.QuoteServiceStub


def rows_by_transaction(database_url: str) -> list[int]:
    """How many quotes each transaction inserted (a multi-row INSERT's rows share its xmin)."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        return [
            count
            for (count,) in conn.execute(
                "SELECT count(*) FROM quote.quote_tickets GROUP BY xmin::text ORDER BY 1"
            )
        ]


def waiting_inserts(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO quote.quote_tickets%'"
        ).fetchone()
        return int(row[0]) if row else 0


def test_quotes_created_while_an_insert_waits_are_committed_together_by_the_next(
    quote_stub: Stub, database_url: str
) -> None:
    with psycopg.connect(libpq_url(database_url)) as lock:
        # Inserts wait on this lock; reads do not.
        lock.execute("LOCK TABLE quote.quote_tickets IN SHARE MODE")
        with ThreadPoolExecutor(20) as pool:
            first = pool.submit(quote_stub.CreateQuote, sell_request("100"), timeout=30)
            eventually(lambda: waiting_inserts(database_url) == 1, "the first insert waits")
            rest = [
                pool.submit(quote_stub.CreateQuote, sell_request(str(101 + i)), timeout=30)
                for i in range(19)
            ]
            time.sleep(0.5)  # the 19 are queued behind the first insert, not sent
            assert waiting_inserts(database_url) == 1
            assert not first.done() and not any(f.done() for f in rest)  # none is committed
            lock.rollback()
            created = [first.result(), *(f.result() for f in rest)]

    assert rows_by_transaction(database_url) == [1, 19]
    for quote in created:  # each caller got its own quote, stored as answered
        stored = quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id), timeout=5)
        assert stored == quote
    assert sorted(q.input_amount for q in created) == [f"{100 + i}.000000" for i in range(20)]
    assert len({q.id for q in created}) == 20


def test_with_group_commit_off_each_quote_is_its_own_insert(
    quote_settings: QuoteSettings, clock: FakeClock, aio_loop: LoopThread, database_url: str
) -> None:
    running = start_quote_server(
        quote_settings.model_copy(update={"quote_insert_batch": 1}), clock, aio_loop
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = Stub(channel)
            with ThreadPoolExecutor(16) as pool:
                amounts = [str(100 + i) for i in range(32)]
                list(pool.map(lambda a: stub.CreateQuote(sell_request(a), timeout=10), amounts))
    finally:
        aio_loop.run(running.stop(0))
    assert rows_by_transaction(database_url) == [1] * 32


def test_a_row_the_table_refuses_fails_only_its_own_caller(
    quote_stub: Stub, direct: DirectPool, aio_loop: LoopThread, database_url: str
) -> None:
    """A batch that fails on one ticket's own data is retried ticket by ticket."""
    template = ticket_of(quote_stub.CreateQuote(sell_request(), timeout=5), database_url)
    fresh = [dataclasses.replace(template, id=uuid.uuid4()) for _ in range(3)]
    duplicate = template  # its id is taken: a unique violation

    sizes: list[int] = []  # the tickets each statement carried

    async def insert(tickets: Sequence[QuoteTicket]) -> list[None]:
        sizes.append(len(tickets))
        async with direct.connection() as conn:
            await insert_tickets(conn, tickets)
        return [None] * len(tickets)

    async def submit_all() -> list[object]:
        writer: Coalescer[QuoteTicket, None] = Coalescer(
            insert, one_items_fault, max_in_flight=1, max_batch=32
        )
        submitted = (fresh[0], duplicate, fresh[1], fresh[2])
        return await asyncio.gather(*map(writer.submit, submitted), return_exceptions=True)

    answers = aio_loop.run(submit_all())
    assert sizes == [4, 1, 1, 1, 1]  # the batch, then each alone
    assert answers[0] is None and answers[2] is None and answers[3] is None
    assert isinstance(answers[1], psycopg.errors.UniqueViolation)
    for ticket in fresh:
        stored = quote_stub.GetQuote(quote_pb2.GetQuoteRequest(id=str(ticket.id)), timeout=5)
        assert stored.id == str(ticket.id)


def ticket_of(quote: quote_pb2.Quote, database_url: str) -> QuoteTicket:
    """The stored ticket behind `quote`."""

    async def read() -> QuoteTicket:
        conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
        async with conn:
            ticket = await fetch_ticket(conn, uuid.UUID(quote.id))
        assert ticket is not None
        return ticket

    return asyncio.run(read())
