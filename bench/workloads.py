"""The measured workloads."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg

from bench import cpu, echo_server, h2
from bench.loadgen import Result, closed_loop, open_loop
from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from pendulumpay.ramp.v1 import ramp_pb2, ramp_pb2_grpc
from quote_service.main import SERVICE_NAME as QUOTE_SERVICE
from ramp_service.domain.flows import SELL_V1
from ramp_service.domain.outcomes import Advance, Outcome
from ramp_service.main import SERVICE_NAME as RAMP_SERVICE
from ramp_service.worker.config import WorkerSettings
from ramp_service.worker.engine import PhaseProcessor, ProcessorConfig
from ramp_service.worker.handlers import PhaseContext
from ramp_service.worker.loader import RecordLoader
from ramp_service.worker.metrics import WorkerMetrics
from ramp_service.worker.queue import WorkQueue
from service_kit.config import ServiceSettings
from service_kit.db import (
    DirectPool,
    create_engine,
    libpq_url,
    session_factory,
)
from service_kit.loop import run as run_on_loop
from tests.support.quotes import sell_register_request, sell_request
from tests.support.ramps import insert_registered, insert_running, sell_record

SELL = sell_request()


def row(peak: Result, half: Result) -> dict[str, float]:
    """A results row: peak throughput, latency at half of peak."""
    return {
        "qps": peak.qps,
        "p50_ms": half.p50_ms,
        "p99_ms": half.p99_ms,
        "p999_ms": half.p999_ms,
        "errors": float(peak.errors + half.errors),
    }


ECHO = h2.grpc_request(echo_server.ECHO, b"x" * 64)
QUOTES = f"/{QUOTE_SERVICE}/"  # method paths: /package.Service/Method
RAMPS = f"/{RAMP_SERVICE}/"


def echo_target(address: str) -> h2.Target:
    """The echo server, over the connections it does best with (h2.ECHO_CONNECTIONS)."""
    return h2.Target.of(address, grpc=True, connections=h2.ECHO_CONNECTIONS)


def echo(address: str, seconds: float) -> tuple[Result, Result]:
    """The bare grpc.aio echo server through the same load generator."""
    return h2.measure(echo_target(address), [ECHO], seconds)


def echo_peak(address: str, seconds: float) -> Result:
    """The echo server's peak alone (a baseline round beside a workload)."""
    return h2.run(echo_target(address), [ECHO], seconds=seconds)


def echo_select(address: str, seconds: float) -> tuple[Result, Result]:
    """The Select reference (bench.echo_server): one primary-key select per call, round-robin
    over 200 rows."""
    requests = [h2.grpc_request(echo_server.SELECT, str(i).encode()) for i in range(1, 201)]
    return h2.measure(h2.Target.of(address, grpc=True), requests, seconds)


def quote_create(address: str, seconds: float) -> tuple[Result, Result]:
    """CreateQuote: pricing plus one durable insert."""
    request = h2.grpc_request(QUOTES + "CreateQuote", SELL.SerializeToString())
    return h2.measure(h2.Target.of(address, grpc=True), [request], seconds)


def create_quotes(address: str, count: int) -> list[str]:
    """`count` fresh quotes' ids."""
    with grpc.insecure_channel(address) as channel:
        stub = quote_pb2_grpc.QuoteServiceStub(channel)
        return [stub.CreateQuote(SELL, timeout=5).id for _ in range(count)]


def quote_get(address: str, seconds: float) -> tuple[Result, Result]:
    """GetQuote, round-robin over 200 quotes."""
    requests = [
        h2.grpc_request(QUOTES + "GetQuote", quote_pb2.GetQuoteRequest(id=i).SerializeToString())
        for i in create_quotes(address, 200)
    ]
    return h2.measure(h2.Target.of(address, grpc=True), requests, seconds)


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


def status_poll_grpc(address: str, ids: list[str], seconds: float) -> tuple[Result, Result]:
    """GetRamp over gRPC, round-robin over `ids`."""
    requests = [
        h2.grpc_request(RAMPS + "GetRamp", ramp_pb2.GetRampRequest(id=i).SerializeToString())
        for i in ids
    ]
    return h2.measure(h2.Target.of(address, grpc=True), requests, seconds)


def status_poll_rest(base_url: str, ids: list[str], seconds: float) -> tuple[Result, Result]:
    """GET /v1/ramp/{id} through Envoy (JSON transcoded to and from gRPC)."""
    requests = [h2.rest_get(f"/v1/ramp/{i}") for i in ids]
    return h2.measure(h2.Target.of(base_url, grpc=False), requests, seconds)


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


class _RoundRobin:
    """Each call on the next of several stubs (one per connection)."""

    def __init__(self, stubs: list[ramp_pb2_grpc.RampServiceStub]) -> None:
        self._stubs = itertools.cycle(stubs)

    def __getattr__(self, method: str) -> Any:
        return getattr(next(self._stubs), method)


async def register_start(
    ramp_address: str,
    quote_address: str,
    passphrase: str,
    seconds: float,
    cpu_groups: dict[str, Callable[[], float]] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """RegisterRamp (quote consumed over gRPC, freshness checked on both devnet chains, every
    transaction built, the anchor withdrawal opened) then StartRamp (every presigned transaction
    verified). Quotes and ephemeral keys are made, and registered ramps signed, outside the
    timed windows. Returns the combined row (one register plus one start per ramp: their rates
    combined harmonically, their latencies added) and each half's own row; plus the count of
    ramps 16 concurrent retries of one start left RUNNING (must be exactly 1). With
    `cpu_groups`, each half's row also has `cpu_ms`: the milliseconds of CPU per call each group
    of processes spent over its peak run (where register's and start's cycles go)."""
    from stellar_sdk import Keypair as StellarKeypair
    from substrateinterface import Keypair as SubstrateKeypair

    from tests.support.signing import sign_all

    # Clients arrive over several connections, as through h2gen: one channel's single
    # connection would reach one of the ramp service's SO_REUSEPORT processes only.
    # (A local subchannel pool each, else grpc shares one connection among the channels.)
    async with contextlib.AsyncExitStack() as channels:
        quote_channel = await channels.enter_async_context(grpc.aio.insecure_channel(quote_address))
        ramp_channels = [
            await channels.enter_async_context(
                grpc.aio.insecure_channel(
                    ramp_address, options=[("grpc.use_local_subchannel_pool", 1)]
                )
            )
            for _ in range(h2.CONNECTIONS)
        ]
        quotes = quote_pb2_grpc.QuoteServiceStub(quote_channel)
        ramps = _RoundRobin([ramp_pb2_grpc.RampServiceStub(c) for c in ramp_channels])
        # Enough registers for the warm-up, the peak and the half-rate run at up to ~350/s;
        # each run stops at its budget rather than run out (an exhausted pool would count
        # every further call as an error, fast).
        pool_size = 400 + int(550 * seconds)
        quote_ids: list[str] = []
        while len(quote_ids) < pool_size:
            batch = await asyncio.gather(*(quotes.CreateQuote(SELL, timeout=10) for _ in range(32)))
            quote_ids += [q.id for q in batch]
        prepared = []
        for quote_id in quote_ids:
            stellar = StellarKeypair.random()
            pendulum = SubstrateKeypair.create_from_seed(os.urandom(32).hex(), ss58_format=56)
            request = sell_register_request(quote_id, stellar.public_key, pendulum.ss58_address)
            prepared.append((request, {"stellar": stellar, "pendulum": pendulum}))
        registered: list[tuple[ramp_pb2.Ramp, dict[str, object]]] = []
        requests = iter(prepared)

        failures: list[str] = []

        async def register() -> None:
            request, keys = next(requests)
            try:
                registered.append((await ramps.RegisterRamp(request, timeout=30), keys))
            except Exception as err:
                failures.append(
                    f"{err.code().name}: {err.details()}"
                    if isinstance(err, grpc.aio.AioRpcError)
                    else repr(err)
                )
                raise

        await closed_loop(register, 16, min(1.0, seconds / 4), budget=200)  # warm-up
        left = pool_size - len(registered) - len(failures)
        split = cpu.Split(cpu_groups or {})
        reg_peak = await closed_loop(register, 16, seconds, budget=left * 3 // 5)
        reg_cpu = split.per_request(reg_peak.requests)
        rate = max(1.0, reg_peak.qps / 2)
        left = pool_size - len(registered) - len(failures)
        reg_half = await open_loop(register, rate, min(seconds, left / rate))
        if len(registered) < 2:
            raise RuntimeError(f"registers failed ({len(failures)}), first: {failures[:1]}")
        signed = [
            ramp_pb2.StartRampRequest(
                ramp_id=ramp.id, presigned_txs=sign_all(ramp, keys, passphrase)
            )
            for ramp, keys in registered
        ]
        # 16 concurrent retries of one start: one RUNNING ramp, one start event.
        retried = signed.pop()
        answers = await asyncio.gather(
            *(
                ramps.StartRamp(retried, metadata=(("idempotency-key", "bench-retry"),), timeout=30)
                for _ in range(16)
            ),
            return_exceptions=True,
        )
        running_ids = {a.id for a in answers if isinstance(a, ramp_pb2.Ramp)}
        starts = iter(signed)

        async def start() -> None:
            await ramps.StartRamp(next(starts), timeout=30)

        # Half the signed ramps for the peak, the other half for latency at half that rate.
        half = len(signed) // 2
        split = cpu.Split(cpu_groups or {})
        start_peak = await closed_loop(start, 16, seconds, budget=half)
        start_cpu = split.per_request(start_peak.requests)
        rate = max(1.0, start_peak.qps / 2)
        start_half = await open_loop(start, rate, (len(signed) - half) / rate)

    reg: dict[str, Any] = row(reg_peak, reg_half)
    sta: dict[str, Any] = row(start_peak, start_half)
    combined = {
        "qps": 1 / (1 / reg["qps"] + 1 / sta["qps"]) if reg["qps"] and sta["qps"] else 0.0,
        "p50_ms": reg["p50_ms"] + sta["p50_ms"],
        "p99_ms": reg["p99_ms"] + sta["p99_ms"],
        "p999_ms": reg["p999_ms"] + sta["p999_ms"],
        "errors": reg["errors"] + sta["errors"],
        "start_retries_ramps_running": float(len(running_ids)),
    }
    if cpu_groups:
        reg["cpu_ms"], sta["cpu_ms"] = reg_cpu, start_cpu
    return combined, {"register": reg, "start": sta}


# As deployed: the worker's default claim size.
BATCH_SIZE = int(
    os.environ.get(
        "BENCH_WORKER_BATCH_SIZE", WorkerSettings.model_fields["worker_batch_size"].default
    )
)


async def _drive_processor(database_url: str, owner: str, stop: threading.Event) -> None:
    # Enough connections for the ramps in flight: overflow connections are closed on
    # return, and a new PostgreSQL backend per statement costs more than the statement.
    settings = ServiceSettings(database_url=database_url, db_pool_size=24)
    engine = create_engine(settings, "bench")
    sessions = session_factory(engine)
    direct = DirectPool(settings, "bench")

    handlers = {p.name: Noop() for p in (*SELL_V1.phases, *SELL_V1.cleanup)}
    processor = PhaseProcessor(
        WorkQueue(sessions, direct, owner, timedelta(seconds=30), lambda: datetime.now(UTC)),
        RecordLoader(direct),
        handlers,
        ProcessorConfig(batch_size=BATCH_SIZE, poll_interval=timedelta(milliseconds=20)),
        WorkerMetrics(),
    )
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def relay() -> None:
        stop.wait()
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=relay, daemon=True).start()
    await processor.run_forever(done)  # as the worker runs it (ramp_service/worker/__main__.py)
    await direct.close()
    await engine.dispose()


def _processor_process(database_url: str, owner: str, stop: object) -> None:
    """One worker process (as in production: one per core)."""
    import multiprocessing.synchronize

    assert isinstance(stop, multiprocessing.synchronize.Event)
    local = threading.Event()

    def relay() -> None:
        stop.wait()
        local.set()

    threading.Thread(target=relay, daemon=True).start()
    run_on_loop(_drive_processor(database_url, owner, local), "uvloop")  # as deployed


async def phase_advance(
    database_url: str, seconds: float, window: float, workers: int | None = None
) -> tuple[float, float, int, dict[str, float]]:
    """Ramps completed per second by one processor process per core, last-window rate /
    first-window rate, how many ramps were still due at the end (fewer than a window's
    worth: it may have run dry in the last window, which then measured the seed), and the cores
    the processor processes and PostgreSQL kept busy over the measured time."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    processes = [
        context.Process(target=_processor_process, args=(database_url, f"bench-{i}", stop))
        for i in range(workers or os.cpu_count() or 2)
    ]

    def completed() -> int:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM ramp.ramps"
                " WHERE status = 'COMPLETE' AND cleanup_phase IS NULL"
            ).fetchone()
            return int(row[0]) if row else 0

    for process in processes:
        process.start()
    await asyncio.sleep(3)  # let the processes import and connect before measuring
    start_count = completed()
    pids = [p.pid for p in processes if p.pid is not None]
    split = cpu.Split(
        {
            "processor": lambda: cpu.cpu_seconds(pids, descendants=False),
            "postgres": cpu.postgres_seconds,
        }
    )
    began = time.perf_counter()
    await asyncio.sleep(window)
    first = (completed() - start_count) / window
    await asyncio.sleep(max(0.0, seconds - 2 * window))
    before_last = completed()
    await asyncio.sleep(window)
    last = (completed() - before_last) / window
    total = (completed() - start_count) / seconds
    cores = split.cores(time.perf_counter() - began)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        # The claim's own condition, leases aside (held ramps are due again once moved).
        row = conn.execute(
            "SELECT count(*) FROM ramp.ramps WHERE (status = 'RUNNING' OR cleanup_phase IS NOT"
            " NULL) AND next_attempt_at <= now()"
        ).fetchone()
        due_left = int(row[0]) if row else 0
    stop.set()
    for process in processes:
        process.join(timeout=30)
    return total, (last / first if first else 0.0), due_left, cores


def cleanup(
    database_url: str, ramp_address: str, ramp_id: str, rows: int, seconds: float
) -> tuple[float, float, float]:
    """Cleanup rows/s over `rows` expired quotes, its largest batch, and status-poll QPS
    (GetRamp of `ramp_id`) while it runs relative to the same poll just before. The job runs as
    deployed, in its own process (`python -m cleanup_job`), and reports through its one-line
    JSON summary; one closed poll loop runs throughout and is counted in two windows: the
    `seconds` before the job starts, and from the job's "cleanup started" (lock taken, Python
    started) to its exit. (Until session 11 the poll was GetQuote, which now answers from
    memory without reading the database: see README, Performance.)"""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        template = conn.execute("SELECT count(*) FROM quote.quote_tickets").fetchone()
        assert template and template[0], "the quote workloads store the quotes to clone"
        conn.execute(
            "INSERT INTO quote.quote_tickets SELECT gen_random_uuid(), ramp_type, from_network, "
            "to_network, input_amount, input_currency, output_amount, output_currency, rate, "
            "fee_network, fee_platform, fee_anchor, fee_partner_markup, fee_total, fee_currency, "
            "partner_id, 'EXPIRED', NULL, NULL, created_at - interval '100 days', "
            "expires_at - interval '100 days' "
            "FROM quote.quote_tickets, generate_series(1, %s) LIMIT %s",
            [rows, rows],
        )
        # Rows 100 days old have long been vacuumed (visibility and hint bits set) and analyzed
        # by autovacuum; fresh from a bulk insert, the first batch would pay for all of that.
        conn.execute("VACUUM ANALYZE quote.quote_tickets")

    get = ramp_pb2.GetRampRequest(id=ramp_id)
    poll = h2.Launch(
        h2.Target.of(ramp_address, grpc=True),
        [h2.grpc_request(RAMPS + "GetRamp", get.SerializeToString())],
        seconds=3600,  # until stopped
        concurrency=16,
        completions=True,
    )
    try:
        time.sleep(seconds + 0.5)  # half a second of warm-up, then the baseline
        before = time.monotonic_ns()
        job = subprocess.Popen(
            [sys.executable, "-m", "cleanup_job"],
            env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "INFO"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert job.stderr is not None
        while b"cleanup started" not in (line := job.stderr.readline()):
            if not line:
                raise RuntimeError("cleanup job ended before it started")
        started = time.monotonic_ns()
        out, _ = job.communicate()
        ended = time.monotonic_ns()
    finally:
        completions = poll.finish(stop=True).completions
    if job.returncode != 0:
        raise RuntimeError(f"cleanup job exited {job.returncode}")
    baseline = sum(before - seconds * 1e9 <= t < before for t in completions) / seconds
    during = sum(started <= t < ended for t in completions) / ((ended - started) / 1e9)
    summary = json.loads(out.decode().strip().splitlines()[-1])["cleanup"]
    poll_ratio = during / baseline
    rows_per_s = summary["counts"]["quotes_deleted"] / (summary["duration_ms"] / 1000)
    return rows_per_s, summary["max_batch_ms"], poll_ratio
