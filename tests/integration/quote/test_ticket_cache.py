"""GetQuote's held tickets across processes: two quote services on one real database, each with
its own cache and LISTENing connection, changed by each other and by plain SQL.

A held ticket is told apart from a database read with a table lock the read would wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import grpc
import psycopg
import pytest

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from quote_service.config import QuoteSettings
from quote_service.db.cleanup import DELETE_EXPIRED_BATCH, EXPIRE_BATCH
from quote_service.db.ticket_cache import ChangeListener, TicketCache
from service_kit.db import libpq_url
from service_kit.grpc_server import RunningServer
from tests.integration.conftest import start_quote_server
from tests.support.aio import FakeClock, LoopThread, eventually
from tests.support.grpc_errors import failure
from tests.support.quotes import sell_request

Stub = quote_pb2_grpc.QuoteServiceStub
RAMP_ID = "5d0c2b8e-9f6a-4a51-9d7e-1a2b3c4d5e6f"
LISTENERS = "application_name = 'quote_service-cache' AND datname = current_database()"


@pytest.fixture
def other(quote_settings: QuoteSettings, clock: FakeClock, aio_loop: LoopThread) -> Iterator[Stub]:
    """A second quote service process on the same database (as SO_REUSEPORT or pods have)."""
    running: RunningServer = start_quote_server(quote_settings, clock, aio_loop)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield quote_pb2_grpc.QuoteServiceStub(channel)
    aio_loop.run(running.stop(0))


@contextmanager
def tickets_locked(database_url: str) -> Iterator[None]:
    """Every read of quote.quote_tickets waits while this is open."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("LOCK TABLE quote.quote_tickets IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def get(stub: Stub, quote_id: str, timeout: float = 5) -> quote_pb2.Quote:
    return stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote_id), timeout=timeout)


def held(stub: Stub, quote_id: str, database_url: str) -> bool:
    """Whether `stub` answers `quote_id` without reading the database (a read would wait on the
    lock past any deadline; an answer from memory takes milliseconds)."""
    with tickets_locked(database_url):
        try:
            get(stub, quote_id, timeout=2)
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            return False
    return True


def sql(database_url: str, statement: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        cursor = conn.execute(statement, args)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def test_a_consume_in_one_process_reaches_the_ticket_another_holds(
    quote_stub: Stub, other: Stub, database_url: str
) -> None:
    created = quote_stub.CreateQuote(sell_request(), timeout=5)
    assert get(other, created.id) == created
    assert held(other, created.id, database_url)  # the second read came from its cache
    assert held(quote_stub, created.id, database_url)  # the creator held it from the start

    quote_stub.ConsumeQuote(
        quote_pb2.ConsumeQuoteRequest(quote_id=created.id, ramp_id=RAMP_ID), timeout=5
    )
    # The consuming process reads its own write at once; the other once notified.
    assert get(quote_stub, created.id).status == quote_pb2.Quote.CONSUMED
    eventually(
        lambda: get(other, created.id).status == quote_pb2.Quote.CONSUMED, "consumed", 5, 0.005
    )
    assert held(other, created.id, database_url)  # and holds the consumed ticket again


def test_any_writer_s_change_reaches_a_held_ticket(
    quote_stub: Stub, clock: FakeClock, database_url: str
) -> None:
    """By SQL, as an operator would: consumed, revoked before its expiry, deleted, truncated.
    (The test's clock is days behind the database's: nothing may depend on their agreeing.)"""
    consumed, revoked, cut_short, deleted = (
        quote_stub.CreateQuote(sell_request(), timeout=5).id for _ in range(4)
    )
    for quote_id in (consumed, revoked, cut_short, deleted):
        assert held(quote_stub, quote_id, database_url)

    sql(
        database_url,
        "UPDATE quote.quote_tickets SET status = 'CONSUMED', consumed_by = %s,"
        " consumed_at = created_at WHERE id = %s",
        RAMP_ID,
        consumed,
    )
    # Expired with an earlier expiry than the one held: told by its id, not by an instant the
    # held ticket's expiry lies after. (First: the revocation below names an instant all of
    # these quotes' expiries lie at, the test's clock standing still.)
    sql(
        database_url,
        "UPDATE quote.quote_tickets SET status = 'EXPIRED', expires_at = created_at WHERE id = %s",
        cut_short,
    )
    eventually(
        lambda: get(quote_stub, cut_short).status == quote_pb2.Quote.EXPIRED, "cut short", 5, 0.005
    )
    sql(database_url, "UPDATE quote.quote_tickets SET status = 'EXPIRED' WHERE id = %s", revoked)
    sql(database_url, "DELETE FROM quote.quote_tickets WHERE id = %s", deleted)

    eventually(
        lambda: get(quote_stub, consumed).status == quote_pb2.Quote.CONSUMED, "consumed", 5, 0.005
    )
    eventually(
        lambda: get(quote_stub, revoked).status == quote_pb2.Quote.EXPIRED, "revoked", 5, 0.005
    )
    assert not held(quote_stub, revoked, database_url)  # stored EXPIRED: never held
    eventually(lambda: gone(quote_stub, deleted), "deleted", 5, 0.005)

    get(quote_stub, consumed)  # every notification is in: this read is kept
    assert held(quote_stub, consumed, database_url)
    sql(database_url, "TRUNCATE quote.quote_tickets")
    eventually(lambda: gone(quote_stub, consumed), "truncated", 5, 0.005)


def gone(stub: Stub, quote_id: str) -> bool:
    try:
        get(stub, quote_id)
    except grpc.RpcError as err:
        return failure(err).reason == "QUOTE_NOT_FOUND"
    return False


def test_expiry_marks_send_one_notification_a_batch_and_deleting_expired_quotes_none(
    quote_stub: Stub, database_url: str
) -> None:
    """The cleanup job's statements, thousands of rows each, must not flood every listener:
    a batch of expiry marks sends one notification naming the latest expiry it marked, which
    the service honours even though its clock (the test's, days behind the database's) says
    the quotes are still pending; a delete of expired quotes sends nothing."""
    created = [quote_stub.CreateQuote(sell_request(), timeout=5).id for _ in range(3)]
    # Expiries apart by fractions of a second: the notification names the latest, to the µs.
    expiries = [
        row[0]
        for row in sql(
            database_url,
            "UPDATE quote.quote_tickets AS q SET expires_at = q.expires_at + i.shift"
            " FROM unnest(%s::uuid[], ARRAY[interval '0.5 s', interval '1.234567 s',"
            " interval '0.000001 s']) AS i(id, shift) WHERE q.id = i.id RETURNING q.expires_at",
            created,
        )
    ]
    latest = max(expiries)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute("LISTEN quote_ticket_changed")
        # Created by the test's clock: days ago by the database's. The writer's DateStyle does
        # not change what it sends.
        with psycopg.connect(libpq_url(database_url), autocommit=True) as job:
            job.execute("SET DateStyle = 'SQL, DMY'")
            expired = job.execute(
                EXPIRE_BATCH.text.replace(":now", "%(now)s").replace(":batch", "%(batch)s"),
                {"now": datetime.now(UTC), "batch": 10},
            ).rowcount
            marked = [n.payload for n in listener.notifies(timeout=1)]
            deleted = job.execute(
                DELETE_EXPIRED_BATCH.format(held="false")
                .replace(":cutoff", "%(now)s")
                .replace(":skip", "%(skip)s")
                .replace(":batch", "%(batch)s"),
                {"now": datetime.now(UTC), "skip": [], "batch": 10},
            ).fetchone()
        assert expired == 3
        utc = latest.astimezone(UTC).replace(tzinfo=None)
        assert marked == [f"expired:{utc.isoformat(timespec='microseconds')}"]
        assert deleted is not None and deleted[:2] == (3, 3)
        assert list(listener.notifies(timeout=0.3)) == []
    for quote_id in created:
        eventually(lambda q=quote_id: gone(quote_stub, q), "deleted", 5, 0.005)


def test_the_service_answers_a_quote_the_database_marked_expired_by_its_clock(
    quote_stub: Stub, database_url: str
) -> None:
    """Marked EXPIRED by the cleanup job, whose clock (the database's here) is ahead of the
    service's: GetQuote reads EXPIRED, not the pending ticket it held, and holds it no more;
    a quote expiring after the batch's latest is still held."""
    marked, later = (quote_stub.CreateQuote(sell_request(), timeout=5).id for _ in range(2))
    sql(
        database_url,
        "UPDATE quote.quote_tickets SET expires_at = expires_at + interval '1 minute'"
        " WHERE id = %s",
        later,
    )
    # Read again until the read is kept: one that began before the update's notification came
    # in is not (held() itself cannot fill the cache: its read waits on the table lock).
    eventually(
        lambda: get(quote_stub, later) is not None and held(quote_stub, later, database_url),
        "held",
        15,
        0.05,
    )
    assert held(quote_stub, marked, database_url)
    sql(
        database_url,
        EXPIRE_BATCH.text.replace(":now", "%s")
        .replace(":batch", "%s")
        .replace("expires_at <= %s", "expires_at <= %s AND id = %s"),
        datetime.now(UTC),
        marked,
        10,
    )
    eventually(
        lambda: get(quote_stub, marked).status == quote_pb2.Quote.EXPIRED, "marked", 5, 0.005
    )
    assert not held(quote_stub, marked, database_url)
    assert held(quote_stub, later, database_url)


def test_a_lost_listener_turns_the_cache_off_until_it_listens_again(
    quote_stub: Stub, database_url: str
) -> None:
    created = quote_stub.CreateQuote(sell_request(), timeout=5)
    assert held(quote_stub, created.id, database_url)
    (old_pid,) = sql(database_url, f"SELECT pid FROM pg_stat_activity WHERE {LISTENERS}")[0]
    sql(database_url, "SELECT pg_terminate_backend(%s)", old_pid)

    # Notifications sent while it was gone are lost: nothing held before is answered again.
    # (It reconnects only after it noticed the loss and emptied the cache.)
    def relistening() -> bool:
        pids = sql(database_url, f"SELECT pid FROM pg_stat_activity WHERE {LISTENERS}")
        return bool(pids) and pids[0][0] != old_pid

    eventually(relistening, "a new listener", 5, 0.005)
    assert not held(quote_stub, created.id, database_url)
    assert get(quote_stub, created.id) == created  # read again, and held again
    assert held(quote_stub, created.id, database_url)


class Stubborn(ChangeListener):
    """Swallows its first cancellation and goes on listening: what asyncio.wait_for (3.11) can
    do to a cancellation that lands as the awaited call completes."""

    swallowed = False

    async def _listen(self) -> None:
        try:
            await super()._listen()
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed = True
            await super()._listen()


def test_stop_ends_the_listener_and_its_connection_even_if_a_cancellation_is_lost(
    database_url: str, aio_loop: LoopThread
) -> None:
    settings = QuoteSettings(database_url=database_url)
    cache = TicketCache(8)
    listener = Stubborn(settings, cache, heartbeat_s=0.05)

    async def start_then_stop() -> None:
        await listener.start()
        assert cache.serving
        async with asyncio.timeout(10):
            await listener.stop()

    aio_loop.run(start_then_stop())
    assert listener.swallowed and not cache.serving
    eventually(
        lambda: not sql(database_url, f"SELECT pid FROM pg_stat_activity WHERE {LISTENERS}"),
        "the listener's connection closed",
        5,
        0.005,
    )
