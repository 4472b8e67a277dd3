"""CreateQuote's group commit on real PostgreSQL: quotes created while an insert is on its way
are committed together by the next one, every caller answered only after its own row is
committed; one bad row fails only its own caller."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc
import psycopg
import pytest

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from quote_service.config import QuoteSettings
from quote_service.db.repository import fetch_ticket, insert_tickets
from quote_service.domain.pricing import QuoteRequest
from quote_service.domain.quote import QuoteTicket
from quote_service.main import WAITING_INSERT_BATCHES, QuoteDeps, create_server
from quote_service.service import QuoteService
from service_kit.coalesce import Coalescer
from service_kit.db import DirectPool, libpq_url, one_items_fault
from service_kit.grpc_server import RunningServer
from tests.integration.conftest import start_quote_server
from tests.support.aio import FakeClock, LoopThread, eventually
from tests.support.grpc_errors import failure
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
    """Inserts into quote.quote_tickets waiting for a lock."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO quote.quote_tickets%'"
        ).fetchone()
        return int(row[0]) if row else 0


@dataclasses.dataclass
class Served:
    stub: Stub
    service: QuoteService


@contextlib.contextmanager
def serve(settings: QuoteSettings, clock: FakeClock, aio_loop: LoopThread) -> Iterator[Served]:
    """The quote service (and the QuoteService behind it, to see its waiting inserts)."""

    async def build() -> tuple[RunningServer, QuoteService]:
        running, service = create_server(settings, QuoteDeps(clock=clock))
        await running.start()
        return running, service

    running, service = aio_loop.run(build())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Served(Stub(channel), service)
    finally:
        aio_loop.run(running.stop(0))


@contextlib.contextmanager
def inserts_held(database_url: str) -> Iterator[None]:
    """Inserts into quote.quote_tickets wait while this is open; reads do not."""
    with psycopg.connect(libpq_url(database_url)) as lock:
        lock.execute("LOCK TABLE quote.quote_tickets IN SHARE MODE")
        yield
        lock.rollback()


def test_quotes_created_while_an_insert_waits_are_committed_together_by_the_next(
    quote_settings: QuoteSettings, clock: FakeClock, aio_loop: LoopThread, database_url: str
) -> None:
    with (
        serve(quote_settings, clock, aio_loop) as served,
        ThreadPoolExecutor(20) as pool,
    ):
        create = served.stub.CreateQuote
        with inserts_held(database_url):
            first = pool.submit(create, sell_request("100"), timeout=30)
            eventually(lambda: waiting_inserts(database_url) == 1, "the first insert waits")
            rest = [pool.submit(create, sell_request(str(101 + i)), timeout=30) for i in range(19)]
            eventually(lambda: served.service.inserts_waiting == 19, "19 quotes wait behind it")
            assert waiting_inserts(database_url) == 1  # they are not sent meanwhile
            assert not first.done() and not any(f.done() for f in rest)  # none is answered
        created = [first.result(), *(f.result() for f in rest)]

        assert rows_by_transaction(database_url) == [1, 19]
        for quote in created:  # each caller got its own quote, stored as answered
            stored = served.stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id), timeout=5)
            assert stored == quote
    assert sorted(q.input_amount for q in created) == [f"{100 + i}.000000" for i in range(20)]
    assert len({q.id for q in created}) == 20


def test_while_inserts_wait_a_caller_who_gives_up_is_not_stored_and_a_full_queue_fails_fast(
    quote_settings: QuoteSettings, clock: FakeClock, aio_loop: LoopThread, database_url: str
) -> None:
    """A slow or lost database must not pile up quotes nobody will receive: a caller whose
    deadline passed while its quote waited is left out, and beyond WAITING_INSERT_BATCHES
    batches' worth a create fails at once with a retryable DATABASE_BUSY."""
    settings = quote_settings.model_copy(update={"quote_insert_batch": 2})
    limit = WAITING_INSERT_BATCHES * 2
    with serve(settings, clock, aio_loop) as served, ThreadPoolExecutor(limit + 8) as pool:
        create = served.stub.CreateQuote
        with inserts_held(database_url):
            first = pool.submit(create, sell_request("100"), timeout=30)
            eventually(lambda: waiting_inserts(database_url) == 1, "the first insert waits")
            with pytest.raises(grpc.RpcError) as gave_up:
                create(sell_request("99"), timeout=0.5)
            assert gave_up.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            # The server learns of it a moment after the client: then nobody waits for it.
            eventually(lambda: served.service.inserts_waiting == 0, "the 99's caller left")
            waiting = [pool.submit(create, sell_request("101"), timeout=30) for _ in range(limit)]
            eventually(lambda: served.service.inserts_waiting == limit, "the queue is full")
            with pytest.raises(grpc.RpcError) as busy:
                create(sell_request("102"), timeout=5)
            assert busy.value.code() is grpc.StatusCode.UNAVAILABLE
            assert failure(busy.value).reason == "DATABASE_BUSY"
        created = [first.result(), *(f.result() for f in waiting)]

    assert len(created) == limit + 1
    assert sum(rows_by_transaction(database_url)) == limit + 1  # neither the 99 nor the 102
    with psycopg.connect(libpq_url(database_url)) as conn:
        amounts = {a for (a,) in conn.execute("SELECT input_amount FROM quote.quote_tickets")}
    assert amounts == {Decimal(100), Decimal(101)}


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


def test_with_group_commit_off_a_burst_in_one_loop_turn_is_not_refused(
    quote_settings: QuoteSettings, clock: FakeClock, aio_loop: LoopThread, database_url: str
) -> None:
    """Off, nothing waits for a round trip, so no bound on waiting quotes applies: many
    creates reaching the writer in one event-loop turn all go (none DATABASE_BUSY)."""
    settings = quote_settings.model_copy(update={"quote_insert_batch": 1})
    burst = 3 * WAITING_INSERT_BATCHES
    with serve(settings, clock, aio_loop) as served:
        request = QuoteRequest("SELL", "pendulum", "sepa", "100", "USDC", "EUR")

        async def at_once() -> list[QuoteTicket]:
            return await asyncio.gather(
                *(served.service.create_quote(request) for _ in range(burst))
            )

        assert len({t.id for t in aio_loop.run(at_once())}) == burst
    assert rows_by_transaction(database_url) == [1] * burst


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
