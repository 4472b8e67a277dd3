"""The measured workloads."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc
import psycopg
from sqlalchemy import create_engine as create_sync_engine

from bench.loadgen import Result, measure
from cleanup_job.config import CleanupSettings
from cleanup_job.job import CleanupJob, Summary
from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from pendulumpay.ramp.v1 import ramp_pb2, ramp_pb2_grpc
from ramp_service.db.repository import RampRepository
from ramp_service.domain.flows import SELL_V1
from ramp_service.domain.outcomes import Advance, Outcome
from ramp_service.domain.ramp import RampRecord
from ramp_service.worker.engine import PhaseProcessor, ProcessorConfig
from ramp_service.worker.handlers import PhaseContext
from ramp_service.worker.metrics import WorkerMetrics
from ramp_service.worker.queue import WorkQueue
from service_kit.config import ServiceSettings
from service_kit.db import create_engine, libpq_url, session_factory, sqlalchemy_url
from tests.support.quotes import sell_request
from tests.support.ramps import insert_registered, insert_running, sell_record

SELL = sell_request()


async def echo(address: str, seconds: float) -> tuple[Result, Result]:
    """The bare grpc.aio echo server through the same load generator."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/bench.Echo/Echo")
        payload = b"x" * 64
        return await measure(lambda: call(payload, timeout=5), seconds)


async def quote_create(address: str, seconds: float) -> tuple[Result, Result]:
    """CreateQuote: pricing plus one durable insert."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = quote_pb2_grpc.QuoteServiceStub(channel)
        return await measure(lambda: stub.CreateQuote(SELL, timeout=5), seconds)


async def quote_get(address: str, seconds: float) -> tuple[Result, Result]:
    """GetQuote by id."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = quote_pb2_grpc.QuoteServiceStub(channel)
        ids = [(await stub.CreateQuote(SELL, timeout=5)).id for _ in range(200)]
        requests = [quote_pb2.GetQuoteRequest(id=i) for i in ids]
        counter = iter(range(10**12))
        return await measure(
            lambda: stub.GetQuote(requests[next(counter) % 200], timeout=5), seconds
        )


def seed_polled_ramps(database_url: str, count: int) -> list[str]:
    """`count` registered ramps to poll; their ids."""
    settings = ServiceSettings(database_url=database_url)

    async def add() -> list[str]:
        engine = create_engine(settings, "bench")
        sessions = session_factory(engine)
        ids = []
        for _ in range(count):
            record = sell_record(datetime.now(UTC))
            await insert_registered(sessions, record)
            ids.append(str(record.id))
        await engine.dispose()
        return ids

    return asyncio.run(add())


async def status_poll_grpc(address: str, ids: list[str], seconds: float) -> tuple[Result, Result]:
    """GetRamp over gRPC, round-robin over `ids`."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ramp_pb2_grpc.RampServiceStub(channel)
        requests = [ramp_pb2.GetRampRequest(id=i) for i in ids]
        counter = iter(range(10**12))
        return await measure(
            lambda: stub.GetRamp(requests[next(counter) % len(requests)], timeout=5), seconds
        )


async def status_poll_rest(base_url: str, ids: list[str], seconds: float) -> tuple[Result, Result]:
    """GET /v1/ramp/{id} through Envoy (aiohttp client: httpx itself capped out near 400/s)."""
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=5)
    ) as client:
        counter = iter(range(10**12))

        async def call() -> None:
            async with client.get(f"/v1/ramp/{ids[next(counter) % len(ids)]}") as response:
                response.raise_for_status()
                await response.read()

        return await measure(call, seconds)


def seed_running_ramps(database_url: str, count: int) -> None:
    """`count` RUNNING, due SELL ramps in `initial` (cloned in SQL from one stored ramp)."""
    settings = ServiceSettings(database_url=database_url)

    async def one() -> uuid.UUID:
        engine = create_engine(settings, "bench")
        ramp_id = await insert_running(
            session_factory(engine), datetime.now(UTC) - timedelta(seconds=1)
        )
        await engine.dispose()
        return ramp_id

    template = asyncio.run(one())
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'ramp' "
                "AND table_name = 'ramps' AND column_name NOT IN ('id', 'quote_id')"
            )
        ]
        cols = ", ".join(columns)
        conn.execute(
            f"INSERT INTO ramp.ramps (id, quote_id, {cols}) "
            f"SELECT gen_random_uuid(), gen_random_uuid(), {cols} FROM ramp.ramps, "
            f"generate_series(1, %s) WHERE id = %s",
            [count - 1, template],
        )


class Noop:
    """A phase that costs nothing: measures the processor's own overhead per transition."""

    async def run(self, ctx: PhaseContext) -> Outcome:
        return Advance()


async def phase_advance(
    database_url: str, seconds: float, window: float, workers: int = 2
) -> tuple[float, float]:
    """Ramps completed per second by `workers` processors, and last-window rate / first-window."""
    engine = create_engine(ServiceSettings(database_url=database_url, db_pool_size=20), "bench")
    sessions = session_factory(engine)

    async def load(ramp_id: uuid.UUID) -> RampRecord:
        async with sessions.begin() as session:
            record = await RampRepository(session).get(ramp_id)
        assert record is not None
        return record

    handlers = {p.name: Noop() for p in (*SELL_V1.phases, *SELL_V1.cleanup)}
    processors = [
        PhaseProcessor(
            WorkQueue(sessions, f"bench-{i}", timedelta(seconds=30), lambda: datetime.now(UTC)),
            load,
            handlers,
            ProcessorConfig(batch_size=10),
            WorkerMetrics(),
        )
        for i in range(workers)
    ]
    stop = asyncio.Event()
    runners = [asyncio.ensure_future(p.run_forever(stop)) for p in processors]

    async def completed() -> int:
        async with sessions.begin() as session:
            from sqlalchemy import text

            return int(
                await session.scalar(
                    text(
                        "SELECT count(*) FROM ramp.ramps"
                        " WHERE status = 'COMPLETE' AND cleanup_phase IS NULL"
                    )
                )
                or 0
            )

    start_count = await completed()
    await asyncio.sleep(window)
    first = (await completed() - start_count) / window
    await asyncio.sleep(max(0.0, seconds - 2 * window))
    before_last = await completed()
    await asyncio.sleep(window)
    last = (await completed() - before_last) / window
    total = (await completed() - start_count) / seconds
    stop.set()
    await asyncio.gather(*runners)
    await engine.dispose()
    return total, (last / first if first else 0.0)


def cleanup(
    database_url: str, quote_address: str, rows: int, seconds: float
) -> tuple[float, float, float]:
    """Cleanup rows/s over `rows` expired quotes, its largest batch, and status-poll QPS while
    it runs relative to the same poll without it."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO quote.quote_tickets SELECT gen_random_uuid(), ramp_type, from_network, "
            "to_network, input_amount, input_currency, output_amount, output_currency, rate, "
            "fee_network, fee_platform, fee_anchor, fee_partner_markup, fee_total, fee_currency, "
            "partner_id, 'EXPIRED', NULL, NULL, created_at - interval '100 days', "
            "expires_at - interval '100 days' "
            "FROM quote.quote_tickets, generate_series(1, %s) LIMIT %s",
            [rows, rows],
        )

    async def poll_qps(running: threading.Thread | None, duration: float) -> float:
        """Closed-loop GetQuote QPS for `duration`, or for as long as `running` is alive."""
        async with grpc.aio.insecure_channel(quote_address) as channel:
            stub = quote_pb2_grpc.QuoteServiceStub(channel)
            request = quote_pb2.GetQuoteRequest(id=(await stub.CreateQuote(SELL, timeout=5)).id)
            done = 0
            deadline = time.perf_counter() + duration

            async def worker() -> None:
                nonlocal done
                while running.is_alive() if running else time.perf_counter() < deadline:
                    await stub.GetQuote(request, timeout=5)
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(16)))
            return done / (time.perf_counter() - started)

    baseline = asyncio.run(poll_qps(None, seconds))
    engine = create_sync_engine(sqlalchemy_url(database_url))
    job = CleanupJob(
        engine,
        CleanupSettings(database_url="x"),
        lambda: datetime.now(UTC),
    )
    summaries: list[Summary] = []
    thread = threading.Thread(target=lambda: summaries.append(job.run()))
    thread.start()
    during = asyncio.run(poll_qps(thread, seconds))
    thread.join()
    engine.dispose()
    summary = summaries[0]
    rows_per_s = summary.counts["quotes_deleted"] / (summary.duration_ms / 1000)
    return rows_per_s, summary.max_batch_ms, during / baseline
