"""Wiring of the quote service: the only place that builds things."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from quote_service.adapters.pricing_file import load_pricing
from quote_service.api.servicer import QuoteServicer
from quote_service.config import QuoteSettings
from quote_service.db.repository import insert_tickets
from quote_service.db.ticket_cache import ChangeListener, TicketCache
from quote_service.domain.quote import QuoteTicket
from quote_service.service import Clock, QuoteService, utc_now
from service_kit.coalesce import Coalescer
from service_kit.config import load_settings
from service_kit.db import DirectPool, one_items_fault
from service_kit.errors import DependencyUnavailable
from service_kit.grpc_server import RunningServer, build_server, run_service

WAITING_INSERT_BATCHES = 16

SERVICE_NAME = quote_pb2.DESCRIPTOR.services_by_name["QuoteService"].full_name


@dataclass
class QuoteDeps:
    """What the server needs from outside: a clock (tests inject one)."""

    clock: Clock = utc_now


def create_server(
    settings: QuoteSettings, deps: QuoteDeps | None = None
) -> tuple[RunningServer, QuoteService]:
    """Build the quote gRPC server (not started) and the service behind it."""
    deps = deps or QuoteDeps()
    pricing, pools = load_pricing(settings.pricing_file)
    # Every statement is a single one on an autocommit connection: no ORM sessions here.
    direct = DirectPool(settings, "quote_service")
    cache = TicketCache(settings.quote_cache_size)

    async def insert(tickets: Sequence[QuoteTicket]) -> list[None]:
        async with direct.connection() as conn:
            await insert_tickets(conn, tickets)
        return [None] * len(tickets)

    # CreateQuote's inserts, group-committed: one on its way at a time per process, the
    # tickets created meanwhile in the next (README, Performance: one in flight kept the
    # batches larger than two did, and won). QUOTE_INSERT_BATCH=1: each at once, alone.
    # While the database is slow or gone, a quote whose caller gave up is not inserted, and
    # at most WAITING_INSERT_BATCHES batches' worth wait: more fail at once, retryable.
    batched = settings.quote_insert_batch > 1
    writer: Coalescer[QuoteTicket, None] = Coalescer(
        insert,
        one_items_fault,
        max_in_flight=1 if batched else None,
        max_batch=settings.quote_insert_batch,
        # (Off, nothing waits for a round trip: all that one loop turn submitted goes out.)
        max_pending=WAITING_INSERT_BATCHES * settings.quote_insert_batch if batched else None,
        when_full=lambda: DependencyUnavailable(
            "DATABASE_BUSY", "too many quotes waiting to be stored; retry"
        ),
        drop_cancelled=True,
    )
    service = QuoteService(
        direct,
        pricing,
        pools,
        timedelta(seconds=settings.quote_ttl_s),
        cache,
        writer,
        deps.clock,
    )
    running = build_server(
        settings.grpc_host,
        settings.grpc_port,
        lambda server: quote_pb2_grpc.add_QuoteServiceServicer_to_server(
            QuoteServicer(service, settings.quote_cache_size), server
        ),
        [SERVICE_NAME],
        log_rpcs=settings.log_rpcs,
        reuse_port=settings.grpc_processes > 1,
    )
    if settings.quote_cache_size:  # the cache serves nothing until its listener listens
        listener = ChangeListener(settings, cache)
        running.warm_up.append(listener.start)
        running.on_stop.append(listener.stop)

    async def last_inserts() -> None:  # after the server's grace: the batch on its way
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.db_statement_timeout_ms / 1000 + 1):
                await writer.wait_idle()

    running.on_stop.append(last_inserts)
    running.on_stop.append(direct.close)
    return running, service


def run() -> None:
    """Entry point of `python -m quote_service`."""
    run_service("quote service", load_settings(QuoteSettings), create_server)
