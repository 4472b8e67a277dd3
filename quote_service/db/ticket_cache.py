"""Tickets this process read lately, answered again without a database round trip for as long
as PostgreSQL can still tell the process that one of them changed.

A quote barely changes: a pending one is consumed once, and that is all a reader can see change
before it expires (`QuoteTicket.status_at` turns it EXPIRED by the clock). Migration 0002's
triggers send `NOTIFY quote_ticket_changed, '<id>'` for every update and delete, by any writer
(an empty payload for a TRUNCATE); each process keeps one connection LISTENing
(`ChangeListener`) and drops what it names. Expiry marks (PENDING to EXPIRED, the cleanup
job's by the thousand, the expiry unchanged) send one `expired:<instant>` per statement instead
(migration 0003): the latest expiry among the quotes it marked, after which no PENDING ticket
expiring at or before that instant is answered from memory, whatever this process's clock says.

Three rules keep a held ticket from being staler than the notification takes to arrive:
- Only a PENDING or CONSUMED ticket before its expiry (by this process's clock) is held or
  answered. Deletes of EXPIRED quotes, the cleanup job's bulk of work, send nothing, and need
  not: no process holds one.
- A read that began before a notification about its ticket came in is not kept (`begin`/`put`
  compare generations, which every notification moves): its row may predate the change.
- Nothing is answered unless the listener proved its connection alive within `stale_after_s`
  (a heartbeat every `heartbeat_s`); a lost connection empties the cache until it LISTENs again.
  A connection cut off silently (no error, no answer) therefore serves stale tickets for at
  most `stale_after_s`, and only to GetQuote: ConsumeQuote always goes to the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from quote_service.domain.quote import QuoteStatus, QuoteTicket
from service_kit.config import ServiceSettings
from service_kit.db import CONNECT_TIMEOUT_S, connect_direct

log = logging.getLogger("quote_service.cache")

CHANNEL = "quote_ticket_changed"
EXPIRED = "expired:"  # then an instant, UTC, ISO 8601 (quote migration 0003)


class TicketCache:
    """A bounded LRU of tickets by id, kept coherent by `ChangeListener`. Not thread-safe: one
    event loop owns it."""

    def __init__(
        self,
        capacity: int,
        stale_after_s: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[uuid.UUID, QuoteTicket] = OrderedDict()
        self._capacity = capacity
        self._stale_after_s = stale_after_s
        self._monotonic = monotonic
        # Each change takes the next generation; a read keeps the generation it began at.
        self._generation = 0
        self._changes: OrderedDict[uuid.UUID, int] = OrderedDict()  # id -> its last change
        self._floor = 0  # reads begun before this may have missed a change no longer listed
        self._alive_until = 0.0  # monotonic; the listener's last proof of life + stale_after_s
        # The latest expiry among the quotes the database marked EXPIRED, as notified: a PENDING
        # ticket expiring at or before it may be marked, by a clock ahead of this process's.
        self._marked_through: datetime | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def serving(self) -> bool:
        """Whether held tickets may be answered now (the listener proved itself lately)."""
        return self._capacity > 0 and self._monotonic() < self._alive_until

    def get(self, quote_id: uuid.UUID, now: datetime) -> QuoteTicket | None:
        """The held ticket, if it may be answered at `now` (before its expiry, listener alive)."""
        ticket = self._entries.get(quote_id)
        if ticket is None or not self.serving:
            return None
        if now >= ticket.expires_at or self._may_be_marked(ticket):
            del self._entries[quote_id]
            return None
        self._entries.move_to_end(quote_id)
        return ticket

    def _may_be_marked(self, ticket: QuoteTicket) -> bool:
        return (
            ticket.status is QuoteStatus.PENDING
            and self._marked_through is not None
            and ticket.expires_at <= self._marked_through
        )

    def begin(self) -> int:
        """Call before reading a ticket from the database; give the result to `put`."""
        return self._generation

    def put(self, ticket: QuoteTicket, token: int, now: datetime) -> None:
        """Hold `ticket`, read after `begin` returned `token`, unless something changed since
        (its row may be older than that change) or it is past its expiry. A ticket stored
        EXPIRED (revoked by hand before its expiry) is not held: its delete sends nothing."""
        if (
            token < self._floor
            or self._changes.get(ticket.id, -1) > token
            or not self.serving
            or now >= ticket.expires_at
            or ticket.status is QuoteStatus.EXPIRED
            or self._may_be_marked(ticket)
        ):
            return
        self._entries[ticket.id] = ticket
        self._entries.move_to_end(ticket.id)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def changed(self, quote_id: uuid.UUID | None) -> None:
        """The ticket `quote_id` changed (None: any may have): dropped, and reads of it in
        flight are not kept (of every ticket, for None). Changes are remembered per id for the
        last `capacity` of them (the cleanup's expiry marks come in bursts: one must not void
        every other read in flight); a read older than the oldest remembered is not kept."""
        self._generation += 1
        if quote_id is None:
            self._entries.clear()
            self._changes.clear()
            self._floor = self._generation
            return
        self._entries.pop(quote_id, None)
        self._changes[quote_id] = self._generation
        self._changes.move_to_end(quote_id)
        if len(self._changes) > max(self._capacity, 1):
            _, forgotten = self._changes.popitem(last=False)
            self._floor = max(self._floor, forgotten)

    def marked_expired_through(self, instant: datetime) -> None:
        """The database marked EXPIRED some PENDING quotes, the latest of them expiring at
        `instant`: no PENDING ticket expiring at or before it is answered or kept from now on
        (checked as each is asked for or put, not by a sweep of the cache). The bound only
        rises. Reads in flight need no generation: `put` checks it when they finish."""
        if self._marked_through is None or instant > self._marked_through:
            self._marked_through = instant

    def alive(self) -> None:
        """The listener's connection answered just now, with every notification before."""
        self._alive_until = self._monotonic() + self._stale_after_s

    def deaf(self) -> None:
        """The listener lost its connection: notifications may have been missed."""
        self._alive_until = 0.0
        self.changed(None)


class ChangeListener:
    """One connection that LISTENs on `CHANNEL` and tells `cache` what changed, with a heartbeat
    query every `heartbeat_s`; on any failure it empties the cache and connects again."""

    def __init__(
        self,
        settings: ServiceSettings,
        cache: TicketCache,
        heartbeat_s: float = 1.0,
        retry_s: float = 1.0,
    ) -> None:
        self._settings = settings
        self._cache = cache
        self._heartbeat_s = heartbeat_s
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def start(self, wait_s: float = 5.0) -> None:
        """Start listening; wait up to `wait_s` for the first LISTEN (the cache serves nothing
        before it, and the listener keeps trying in the background if this times out)."""
        if self._task is None:
            self._listening.clear()
            self._task = asyncio.create_task(self._run(), name="quote-cache-listener")
        async with asyncio.timeout(wait_s):
            await self._listening.wait()

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            # Cancelled until done: a cancellation that lands as an awaited call completes
            # can be lost (asyncio.wait_for in 3.11), and the loop would go on.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        self._listening.clear()
        self._cache.deaf()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost database: keep trying, serve nothing meanwhile
                self._cache.deaf()
                self._listening.clear()
                log.warning(
                    "quote cache listener lost its connection; cache off until it reconnects",
                    extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
                )
            await asyncio.sleep(self._retry_s)

    async def _listen(self) -> None:
        timeout = self._heartbeat_s + CONNECT_TIMEOUT_S
        async with asyncio.timeout(timeout):
            conn = await connect_direct(self._settings, "quote_service-cache")
        try:
            async with asyncio.timeout(timeout):
                await conn.execute(f"LISTEN {CHANNEL}")
            # Anything held before this LISTEN may have missed a notification.
            self._cache.changed(None)
            self._cache.alive()
            self._listening.set()
            log.info("quote cache listening", extra={"channel": CHANNEL})
            while True:
                async for notify in conn.notifies(timeout=self._heartbeat_s):
                    self._changed(notify.payload)
                # Notifications that arrive during the heartbeat wait in psycopg's backlog
                # for the next notifies() call, which yields them first.
                async with asyncio.timeout(timeout):
                    await conn.execute("SELECT 1")
                self._cache.alive()
        finally:
            await conn.close()

    def _changed(self, payload: str) -> None:
        if payload.startswith(EXPIRED):
            try:
                instant = datetime.fromisoformat(payload[len(EXPIRED) :]).replace(tzinfo=UTC)
            except ValueError:
                pass
            else:
                self._cache.marked_expired_through(instant)
                return
        try:
            quote_id = uuid.UUID(payload)
        except ValueError:  # a TRUNCATE (''), or not ours: forget everything rather than guess
            quote_id = None
        self._cache.changed(quote_id)
