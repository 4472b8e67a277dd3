"""Raw baselines: PostgreSQL primary-key selects and single-row inserts, and the SQL claim
ceiling of the phase processor (batch claims of 10 with SKIP LOCKED, nothing else)."""

from __future__ import annotations

import time

import psycopg

from service_kit.db import libpq_url

SELECT_SQL = "SELECT v FROM bench_kv WHERE id = %s"
KV_ROWS = 10_000


def prepare_kv(database_url: str) -> None:
    """The table the selects read (here and in bench.echo_server's Select): KV_ROWS rows, id i
    holding the text "v<i>"."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_kv (id int PRIMARY KEY, v text)")
        conn.execute(
            "INSERT INTO bench_kv SELECT g, 'v' || g FROM generate_series(1, %s) g "
            "ON CONFLICT DO NOTHING",
            [KV_ROWS],
        )


def pg_select_per_s(database_url: str, seconds: float) -> float:
    """Primary-key selects per second on one connection, prepared."""
    prepare_kv(database_url)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        count, deadline, i = 0, time.perf_counter() + seconds, 0
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            i = i % KV_ROWS + 1
            conn.execute(SELECT_SQL, [i], prepare=True).fetchone()
            count += 1
        return count / (time.perf_counter() - started)


def pg_insert_per_s(database_url: str, seconds: float) -> float:
    """Durable single-row inserts (one commit each) per second on one connection."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_log (id bigserial PRIMARY KEY, v text)")
        count, deadline = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            conn.execute("INSERT INTO bench_log (v) VALUES (%s)", ["x"], prepare=True)
            count += 1
        return count / (time.perf_counter() - started)


def settle(database_url: str) -> None:
    """Start the next workload from a quiet database: vacuum the queue table (dead versions a
    previous workload left) and checkpoint (its WAL flushed now, not during the next one)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE ramp.ramps")
        conn.execute("CHECKPOINT")


CLAIM_AND_FINISH = """
UPDATE ramp.ramps SET status = 'COMPLETE', generation = generation + 1
WHERE id IN (SELECT id FROM ramp.ramps WHERE status = 'RUNNING' AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT 10 FOR UPDATE SKIP LOCKED)
"""


def claim_ceiling_per_s(database_url: str) -> float:
    """Ramps per second that raw SQL alone can claim (10 at a time) and finish; the table
    must hold RUNNING, due ramps."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        started, claimed = time.perf_counter(), 0
        while True:
            n = conn.execute(CLAIM_AND_FINISH, prepare=True).rowcount
            if n == 0:
                break
            claimed += n
        return claimed / (time.perf_counter() - started)
