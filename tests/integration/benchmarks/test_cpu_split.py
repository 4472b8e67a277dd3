"""The bench's CPU split reads real processes: a child burning one core, and the PostgreSQL
server's processes running a query (bench/cpu.py; where register's cycles go in the table)."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg

from bench import cpu

BURN = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"


def test_a_child_burning_a_core_reads_as_one_core_and_an_idle_one_as_none() -> None:
    busy = subprocess.Popen([sys.executable, "-c", BURN])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    time.sleep(0.3)  # both started, past the interpreter's own start-up
    split = cpu.Split(
        {
            "busy": lambda: cpu.cpu_seconds([busy.pid]),
            "idle": lambda: cpu.cpu_seconds([idle.pid]),
        }
    )
    began = time.perf_counter()
    time.sleep(0.2)
    cores = split.cores(time.perf_counter() - began)
    busy.wait(timeout=10)
    idle.kill()
    assert 0.5 <= cores["busy"] <= 1.2, cores
    assert cores["idle"] <= 0.1, cores


def test_the_database_s_work_is_counted_in_the_postgres_group(pg_server_url: str) -> None:
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        split = cpu.Split({"postgres": cpu.postgres_seconds})
        began = time.perf_counter()
        conn.execute("SELECT count(*) FROM generate_series(1, 20000000)").fetchone()
        cores = split.cores(time.perf_counter() - began)
    assert cores["postgres"] >= 0.5, cores
