"""Quote use cases: each one short transaction, opened here and nowhere else."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from quote_service.db.repository import consume_if_pending, fetch_ticket
from quote_service.db.ticket_cache import TicketCache
from quote_service.domain.errors import QuoteNotFound
from quote_service.domain.pricing import PriceSource, PricingConfig, QuoteRequest, price_quote
from quote_service.domain.quote import QuoteTicket, new_ticket, parse_quote_id, parse_ramp_id
from service_kit.coalesce import Coalescer
from service_kit.db import DirectPool
from service_kit.errors import Conflict

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class QuoteService:
    """Creates, reads and consumes quotes."""

    def __init__(
        self,
        direct: DirectPool,
        pricing: PricingConfig,
        price_source: PriceSource,
        ttl: timedelta,
        cache: TicketCache,
        writer: Coalescer[QuoteTicket, None],
        clock: Clock = utc_now,
    ) -> None:
        # Every use case is one or two single statements: no transaction, no ORM (DirectPool).
        self._direct = direct
        self._pricing = pricing
        self._price_source = price_source
        self._ttl = ttl
        self._cache = cache  # GetQuote's tickets, dropped when PostgreSQL says they changed
        self._writer = writer  # CreateQuote's inserts, group-committed
        self._clock = clock

    @property
    def inserts_waiting(self) -> int:
        """New quotes waiting for the insert on its way to return (tests, probes)."""
        return self._writer.waiting

    async def create_quote(self, request: QuoteRequest) -> QuoteTicket:
        """Price `request` and store it as a PENDING quote."""
        price = price_quote(request, self._pricing, self._price_source)
        now = self._clock()
        ticket = new_ticket(request, price, now, self._ttl)
        token = self._cache.begin()
        await self._writer.submit(ticket)  # committed when it returns
        self._cache.put(ticket, token, now)  # the creator often reads it back next
        return ticket

    async def get_quote(self, quote_id: str) -> QuoteTicket:
        """The quote as a reader sees it now (a stale PENDING reads as EXPIRED): held by this
        process (quote_service.db.ticket_cache) or read from the database."""
        qid = parse_quote_id(quote_id)
        now = self._clock()
        held = self._cache.get(qid, now)
        if held is not None:  # before its expiry: its status is the one stored
            return held
        token = self._cache.begin()
        async with self._direct.connection() as conn:
            ticket = await fetch_ticket(conn, qid)
        if ticket is None:
            raise QuoteNotFound(quote_id)
        self._cache.put(ticket, token, now)
        status = ticket.status_at(now)
        # The held object itself when it reads the same (its rendering is then held too).
        return ticket if status is ticket.status else dataclasses.replace(ticket, status=status)

    async def consume_quote(self, quote_id: str, ramp_id: str) -> QuoteTicket:
        """Atomically give the quote to `ramp_id`; repeating the call for the same ramp succeeds."""
        qid = parse_quote_id(quote_id, "quote_id")
        ramp = parse_ramp_id(ramp_id)
        now = self._clock()
        try:
            async with self._direct.connection() as conn:
                consumed = await consume_if_pending(conn, qid, ramp, now)
                if consumed is not None:
                    return consumed
                ticket = await fetch_ticket(conn, qid)  # why not: the ticket as it is now
        finally:
            # This process's next read goes to the database, and reads begun before are not
            # kept (the trigger's notification tells every process, this one a moment later).
            self._cache.changed(qid)
        if ticket is None:
            raise QuoteNotFound(quote_id)
        if ticket.check_consumable_by(ramp, now):
            return ticket
        # Pending and unexpired, yet the conditional update matched nothing: a concurrent
        # writer changed it between our statements. Safe for the caller to retry.
        raise Conflict("QUOTE_CONSUME_RACE", f"quote {quote_id} changed concurrently; retry")
