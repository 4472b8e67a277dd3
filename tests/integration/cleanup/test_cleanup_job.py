"""The cleanup job against real PostgreSQL: exact counts, batching, rules, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from sqlalchemy import Engine, create_engine

from cleanup_job.config import CleanupSettings
from cleanup_job.job import LOCK_KEY, CleanupJob
from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from quote_service.config import QuoteSettings
from service_kit.db import libpq_url, sqlalchemy_url
from service_kit.grpc_server import RunningServer
from tests.support.aio import LoopThread
from tests.support.quotes import sell_request
from tests.support.ramps import buy_record, sell_record

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

INSERT_QUOTES = """
INSERT INTO quote.quote_tickets (id, ramp_type, from_network, to_network, input_amount,
    input_currency, output_amount, output_currency, rate, fee_network, fee_platform, fee_anchor,
    fee_partner_markup, fee_total, fee_currency, partner_id, status, consumed_by, created_at,
    expires_at)
SELECT gen_random_uuid(), 'SELL', 'pendulum', 'sepa', 100, 'USDC', 90, 'EUR', 0.9, 0, 1, 0, 0, 1,
    'USDC', '',
    %(status)s::varchar, CASE WHEN %(status)s::varchar = 'CONSUMED' THEN 'ramp' END,
    %(expires)s::timestamptz - interval '10 minutes', %(expires)s::timestamptz
FROM generate_series(1, %(n)s)
"""

INSERT_KEYS = (
    "INSERT INTO ramp.idempotency_keys (rpc, key, request_hash, state, created_at, locked_until) "
)


def seed_quotes(conn: psycopg.Connection, status: str, expires: datetime, n: int) -> None:
    conn.execute(INSERT_QUOTES, {"status": status, "expires": expires, "n": n})


def count(conn: psycopg.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def pg(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(sqlalchemy_url(database_url))
    yield engine
    engine.dispose()


def job(engine: Engine, batch: int = 1000, **overrides: object) -> CleanupJob:
    settings = CleanupSettings(database_url="unused", cleanup_batch_size=batch, **overrides)  # type: ignore[arg-type]
    return CleanupJob(engine, settings, lambda: NOW)


def insert_ramp(
    database_url: str,
    aio_loop: LoopThread,
    quote_id: uuid.UUID | None,
    status: str,
    start_deadline: datetime,
    buy: bool = False,
) -> uuid.UUID:
    """A SELL (or BUY) ramp row (through the ramp repository), optionally holding `quote_id`."""
    import dataclasses

    from ramp_service.db.repository import RampRepository
    from ramp_service.domain.ramp import RampStatus
    from service_kit.config import ServiceSettings
    from service_kit.db import create_engine as create_async
    from service_kit.db import session_factory

    record = buy_record(NOW, f"5{uuid.uuid4().hex}", {}) if buy else sell_record(NOW)
    record = dataclasses.replace(
        record,
        status=RampStatus(status),
        start_deadline=start_deadline,
        quote=dataclasses.replace(record.quote, id=quote_id or record.quote.id),
    )

    async def add() -> None:
        engine = create_async(ServiceSettings(database_url=database_url), "test")
        async with session_factory(engine).begin() as session:
            await RampRepository(session).add(record, "test")
        await engine.dispose()

    aio_loop.run(add())
    return record.id


def test_each_task_with_exact_counts_across_batches(
    pg: psycopg.Connection, engine: Engine, database_url: str, aio_loop: LoopThread
) -> None:
    seed_quotes(pg, "PENDING", NOW - timedelta(minutes=1), 2500)  # → EXPIRED
    seed_quotes(pg, "PENDING", NOW + timedelta(minutes=5), 7)  # still valid
    seed_quotes(pg, "EXPIRED", NOW - timedelta(days=61), 1200)  # past retention → deleted
    seed_quotes(pg, "EXPIRED", NOW - timedelta(days=59), 11)  # within retention
    seed_quotes(pg, "CONSUMED", NOW - timedelta(days=90), 5)  # never deleted
    referenced = uuid.uuid4()
    pg.execute(
        INSERT_QUOTES.replace("gen_random_uuid()", "%(id)s"),
        {"id": referenced, "status": "EXPIRED", "expires": NOW - timedelta(days=70), "n": 1},
    )
    insert_ramp(database_url, aio_loop, referenced, "COMPLETE", NOW)
    pg.execute(
        INSERT_KEYS + "SELECT 'StartRamp', 'k' || g, 'h', 'COMPLETED', %(t)s, %(t)s"
        " FROM generate_series(1, 1500) g",
        {"t": NOW - timedelta(hours=25)},
    )
    pg.execute(
        INSERT_KEYS + "VALUES ('StartRamp', 'fresh', 'h', 'COMPLETED', %(t)s, %(t)s)",
        {"t": NOW - timedelta(hours=23)},
    )
    late = [
        insert_ramp(database_url, aio_loop, None, "REGISTERED", NOW - timedelta(seconds=1))
        for _ in range(3)
    ]
    late_buy = insert_ramp(
        database_url, aio_loop, None, "REGISTERED", NOW - timedelta(seconds=1), buy=True
    )
    insert_ramp(database_url, aio_loop, None, "REGISTERED", NOW + timedelta(minutes=5))
    insert_ramp(database_url, aio_loop, None, "RUNNING", NOW - timedelta(hours=1))

    summary = job(engine, batch=1000).run()

    assert summary.counts == {
        "quotes_expired": 2500,
        "quotes_examined": 1201,
        "quotes_deleted": 1200,
        "quotes_kept_referenced": 1,
        "idempotency_keys_deleted": 1500,
        "ramps_timed_out": 4,
    }
    assert summary.batches >= 3 + 2 + 2 + 1 + 4  # more rows than a batch: several per task
    assert count(pg, "SELECT count(*) FROM quote.quote_tickets WHERE status = 'PENDING'") == 7
    assert (
        count(pg, "SELECT count(*) FROM quote.quote_tickets WHERE status = 'EXPIRED'")
        == 2500 + 11 + 1
    )
    assert count(pg, "SELECT count(*) FROM quote.quote_tickets WHERE status = 'CONSUMED'") == 5
    assert count(pg, "SELECT count(*) FROM ramp.idempotency_keys") == 1
    for ramp_id in [*late, late_buy]:
        row = pg.execute(
            "SELECT status, current_phase, cleanup_phase, next_attempt_at, phase_started_at"
            " FROM ramp.ramps WHERE id = %s",
            [ramp_id],
        ).fetchone()
        # A SELL's deposit address stays watched (the user may have sent before starting): the
        # worker's follow-up is set, due now; a BUY has no address the user pays into.
        watch = None if ramp_id == late_buy else "watchLateDeposit"
        assert row == ("TIMED_OUT", "timedOut", watch, NOW, NOW)
        event = pg.execute(
            "SELECT to_phase, actor FROM ramp.phase_events WHERE ramp_id = %s"
            " ORDER BY id DESC LIMIT 1",
            [ramp_id],
        ).fetchone()
        assert event == ("timedOut", "cleanup_job")
    assert count(pg, "SELECT count(*) FROM ramp.ramps WHERE status = 'REGISTERED'") == 1
    assert count(pg, "SELECT count(*) FROM ramp.ramps WHERE status = 'RUNNING'") == 1
    # A second run finds nothing left to do.
    again = job(engine).run()
    assert (
        again.counts["quotes_expired"]
        == again.counts["quotes_deleted"]
        == again.counts["ramps_timed_out"]
        == 0
    )


def test_a_second_run_skips_while_the_first_holds_the_lock(
    pg: psycopg.Connection, engine: Engine
) -> None:
    seed_quotes(pg, "PENDING", NOW - timedelta(minutes=1), 10)
    with psycopg.connect(pg.info.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", [LOCK_KEY])
        skipped = job(engine).run()
        assert skipped.skipped and skipped.counts == {}
        assert count(pg, "SELECT count(*) FROM quote.quote_tickets WHERE status = 'PENDING'") == 10
    assert job(engine).run().counts["quotes_expired"] == 10


class PacedTime:
    """The job's monotonic clock and sleep: time passes only by the job's sleeps, and by
    `per_batch` seconds each time the job reads the clock (a batch's own duration)."""

    def __init__(self, per_batch: float) -> None:
        self.now = 0.0
        self.per_batch = per_batch
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        self.now += self.per_batch
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("max_rows_per_s", "per_batch", "expected_sleeps"),
    [
        (10_000, 0.0, [0.1, 0.1, 0.05, 0.1, 0.1]),
        (10_000, 0.04, [0.06, 0.06, 0.01, 0.06, 0.06]),
        (0, 0.0, []),  # unpaced: never sleeps
    ],
)
def test_the_job_paces_itself_to_max_rows_per_s_over_the_whole_run(
    pg: psycopg.Connection,
    engine: Engine,
    max_rows_per_s: int,
    per_batch: float,
    expected_sleeps: list[float],
) -> None:
    seed_quotes(pg, "PENDING", NOW - timedelta(minutes=1), 2500)
    seed_quotes(pg, "EXPIRED", NOW - timedelta(days=100), 2000)
    time_ = PacedTime(per_batch)
    settings = CleanupSettings(
        database_url="unused", cleanup_batch_size=1000, cleanup_max_rows_per_s=max_rows_per_s
    )  # type: ignore[call-arg]
    summary = CleanupJob(
        engine, settings, lambda: NOW, sleep=time_.sleep, monotonic=time_.monotonic
    ).run()
    assert summary.counts["quotes_expired"] == 2500
    assert summary.counts["quotes_deleted"] == 2000
    # 1000 rows at 10k rows/s is 0.1 s: each batch sleeps what the run is ahead of the pace,
    # counted over every task, less the time its batches took. Empty batches do not sleep.
    assert time_.sleeps == pytest.approx(expected_sleeps)


def test_an_old_quote_batch_deletes_by_tid_not_by_hashing_the_table(pg: psycopg.Connection) -> None:
    """Joined back by id, the planner hashed the whole table per batch on a freshly analyzed
    table (80 ms a batch instead of 10); the batch's delete goes by the locked rows' ctids."""
    from quote_service.db.cleanup import DELETE_EXPIRED_BATCH
    from ramp_service.db.cleanup import QUOTE_HELD

    seed_quotes(pg, "EXPIRED", NOW - timedelta(days=100), 50_000)
    pg.execute("VACUUM ANALYZE quote.quote_tickets")
    sql = DELETE_EXPIRED_BATCH.format(held=QUOTE_HELD)
    for name in ("cutoff", "batch", "skip"):
        sql = sql.replace(f":{name}", f"%({name})s")
    plan = "\n".join(
        row[0]
        for row in pg.execute(
            "EXPLAIN " + sql, {"cutoff": NOW, "batch": 1000, "skip": []}
        ).fetchall()
    )
    assert "Tid Scan on quote_tickets" in plan
    assert "Seq Scan on quote_tickets" not in plan


def test_two_processes_at_once_both_exit_zero_and_the_work_is_done_once(
    database_url: str, pg: psycopg.Connection
) -> None:
    seed_quotes(pg, "EXPIRED", NOW - timedelta(days=100), 20_000)
    env = {"DATABASE_URL": database_url, "CLEANUP_BATCH_SIZE": "500", "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cleanup_job"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    summaries = [json.loads(out.decode().strip().splitlines()[-1])["cleanup"] for out, _ in outputs]
    deleted = sum(s["counts"].get("quotes_deleted", 0) for s in summaries)
    assert deleted == 20_000
    assert count(pg, "SELECT count(*) FROM quote.quote_tickets") == 0


def test_unreachable_database_exits_non_zero_with_a_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cleanup_job"],
        env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert '"msg": "cleanup failed"' in result.stderr.decode()
    assert result.stdout == b""


@pytest.fixture
def quote_settings(quote_settings: QuoteSettings) -> QuoteSettings:
    """The quote service with its ticket cache off: each GetQuote reads the table the job
    deletes from (with the cache on it would not read the database at all)."""
    return quote_settings.model_copy(update={"quote_cache_size": 0})


def test_status_polling_keeps_working_while_100k_rows_are_deleted(
    pg: psycopg.Connection, engine: Engine, quote_server: RunningServer
) -> None:
    seed_quotes(pg, "EXPIRED", NOW - timedelta(days=100), 100_000)
    with grpc.insecure_channel(f"127.0.0.1:{quote_server.port}") as channel:
        stub = quote_pb2_grpc.QuoteServiceStub(channel)
        quote = stub.CreateQuote(
            sell_request(),
            timeout=5,
        )
        done = threading.Event()
        polls, failures = 0, 0

        def poll() -> None:
            nonlocal polls, failures
            while not done.is_set():
                try:
                    stub.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id), timeout=2)
                    polls += 1
                except grpc.RpcError:
                    failures += 1

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            summary = job(engine, batch=5000).run()
        finally:
            done.set()
            poller.join()
    assert summary.counts["quotes_deleted"] == 100_000
    assert failures == 0
    assert polls > 0
