"""The system under test for benchmarks: a fresh database and real service processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import make_url

from devnet.horizon.app import DEVNET_PASSPHRASE
from devnet.keys import load_or_create_keys
from devstack.database import migrate_all
from service_kit.db import libpq_url
from service_kit.embedded_pg import start_embedded_postgres
from tests.support.envoy import start_gateway
from tests.support.processes import free_port, wait_serving

ROOT = Path(__file__).resolve().parent.parent
# Server processes per service on a shared port (SO_REUSEPORT). One by default: on a 2-core
# machine the load generator and PostgreSQL already share the cores, and two processes per
# service measured no gain (README, Performance).
PROCESSES = os.environ.get("BENCH_SERVICE_PROCESSES", "1")


@dataclass
class Stack:
    """Where the benchmark's processes listen."""

    database_url: str
    quote_address: str
    echo_address: str
    ramp_address: str
    rest_url: str
    passphrase: str
    pids: dict[str, int]  # echo, quote, ramp, envoy: for CPU accounting


def fresh_database() -> str:
    """A new, migrated database on BENCH_DATABASE_URL / TEST_DATABASE_URL's server, or embedded."""
    server = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    server = libpq_url(server) if server else start_embedded_postgres(ROOT / ".data" / "bench-pg")
    name = f"pp_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    migrate_all(url)
    return url


def drop_database(url: str) -> None:
    """Remove a benchmark's database (its rows can run to gigabytes)."""
    parsed = make_url(url)
    with psycopg.connect(
        parsed.set(database="postgres").render_as_string(False), autocommit=True
    ) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


def spawn(
    stack: ExitStack, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child process killed when the benchmark ends; its output is discarded."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        env={**os.environ, "LOG_LEVEL": "WARNING", "LOG_RPCS": "false", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(proc.wait)
    stack.callback(proc.kill)
    return proc


def start(stack: ExitStack) -> Stack:
    """Start the database, the echo server, both services and Envoy in front of them."""
    url = fresh_database()
    stack.callback(drop_database, url)  # runs last: after every process using it has stopped
    echo_port, quote_port, ramp_port = free_port(), free_port(), free_port()
    echo = spawn(stack, ["-m", "bench.echo_server", str(echo_port)])
    devnet = {name: free_port() for name in ("horizon", "anchor", "pix", "substrate")}
    keys_file = Path(tempfile.mkdtemp(prefix="bench-devnet-")) / "keys.json"
    keys = load_or_create_keys(keys_file)
    spawn(
        stack,
        ["-m", "devnet"],
        {
            "DEVNET_KEYS_FILE": str(keys_file),
            **{f"DEVNET_{name.upper()}_PORT": str(port) for name, port in devnet.items()},
        },
    )
    quote = spawn(
        stack,
        ["-m", "quote_service"],
        {
            "DATABASE_URL": url,
            "GRPC_PORT": str(quote_port),
            "DB_POOL_SIZE": "20",
            "GRPC_PROCESSES": PROCESSES,
        },
    )
    ramp = spawn(
        stack,
        ["-m", "ramp_service"],
        {
            "DATABASE_URL": url,
            "GRPC_PORT": str(ramp_port),
            "DB_POOL_SIZE": "20",
            "GRPC_PROCESSES": PROCESSES,
            "QUOTE_SERVICE_TARGET": f"127.0.0.1:{quote_port}",
            "HORIZON_URL": f"http://127.0.0.1:{devnet['horizon']}",
            "SUBSTRATE_URL": f"ws://127.0.0.1:{devnet['substrate']}",
            "ANCHOR_URL": f"http://127.0.0.1:{devnet['anchor']}",
            "PIX_URL": f"http://127.0.0.1:{devnet['pix']}",
            "STELLAR_FUNDING_SECRET": keys["stellar_funding"],
            "PENDULUM_FUNDING_SEED": keys["pendulum_funding"],
        },
    )
    wait_serving(f"127.0.0.1:{quote_port}")
    wait_serving(f"127.0.0.1:{ramp_port}")
    gateway = start_gateway(
        Path(tempfile.mkdtemp(prefix="bench-envoy-")),
        True,
        quote_upstream=f"127.0.0.1:{quote_port}",
        ramp_upstream=f"127.0.0.1:{ramp_port}",
        rate_limit_tokens=10_000_000,
        rate_limit_per_s=10_000_000,
    )
    stack.callback(gateway.stop)
    return Stack(
        url,
        f"127.0.0.1:{quote_port}",
        f"127.0.0.1:{echo_port}",
        f"127.0.0.1:{ramp_port}",
        gateway.url,
        DEVNET_PASSPHRASE,
        {"echo": echo.pid, "quote": quote.pid, "ramp": ramp.pid, "envoy": gateway.process.pid},
    )
