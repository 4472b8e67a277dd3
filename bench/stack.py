"""The system under test for benchmarks: a fresh database and real service processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import make_url

from bench.baselines import prepare_kv
from devnet.horizon.app import DEVNET_PASSPHRASE
from devnet.keys import load_or_create_keys
from devstack.database import STATE_FILE, migrate_all
from quote_service.main import SERVICE_NAME as QUOTE_SERVICE  # ready once warm; "" is liveness
from ramp_service.main import SERVICE_NAME as RAMP_SERVICE
from service_kit.db import libpq_url
from service_kit.embedded_pg import start_embedded_postgres
from tests.support.envoy import start_gateway
from tests.support.processes import free_port, wait_serving

ROOT = Path(__file__).resolve().parent.parent
# Server processes per service on a shared port (SO_REUSEPORT): one per core by default, as a
# deployment on such a machine would run them (README, Performance).
PROCESSES = os.environ.get("BENCH_SERVICE_PROCESSES", str(os.cpu_count() or 1))


@dataclass
class Stack:
    """Where the benchmark's processes listen."""

    database_url: str  # the services' database
    quote_address: str
    echo_address: str
    ramp_address: str
    rest_url: str
    passphrase: str
    pids: dict[str, int]  # echo, quote, ramp, envoy (and devnet if ours): for CPU accounting
    # Where the database-only workloads (raw baselines, claim ceiling, phase processor) run:
    # the services' database for the bench's own stack; a fresh one beside `make run`'s, whose
    # worker would otherwise take the bench's seeded ramps.
    work_database_url: str
    attached: bool  # measuring the stack `make run` started
    # The Select reference (bench.echo_server with a database): as many processes as each
    # service runs, on one port; their pid keys are "select-<i>".
    select_address: str = ""


def fresh_database(server: str | None = None) -> str:
    """A new, migrated database on `server`, else BENCH_DATABASE_URL / TEST_DATABASE_URL's
    server, else the embedded one."""
    server = server or os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
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
    """A child process killed when the benchmark ends; its output is discarded. No per-RPC
    access lines, as in the production overlay (deploy/k8s/overlays/production: Envoy logs
    each request there)."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        env={**os.environ, "LOG_LEVEL": "WARNING", "LOG_RPCS": "false", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(proc.wait)
    stack.callback(proc.kill)
    return proc


def running_stack() -> dict[str, Any] | None:
    """What `make run` wrote about itself, if it is up and serving; else None."""
    try:
        state: dict[str, Any] = json.loads(STATE_FILE.read_text())
        os.kill(state["pid"], 0)
        for address, service in (
            (state["quote_address"], QUOTE_SERVICE),
            (state["ramp_address"], RAMP_SERVICE),
        ):
            wait_serving(address, timeout=3)  # alive at all
            wait_serving(address, service, timeout=60)  # ready: a starting stack may finish
    except (OSError, ValueError, KeyError, TimeoutError):
        return None
    return state


def start(stack: ExitStack) -> Stack:
    """The system under test: the services `make run` started when it is up, else our own
    database, devnet and services. Either way the echo server, and an Envoy in front of the
    services with its rate limit lifted (the bench is not the abuse the limit is for), are ours.
    """
    echo_port = free_port()
    echo = spawn(stack, ["-m", "bench.echo_server", str(echo_port)])
    state = running_stack()
    if state:
        url = state["database_url"]
        work = fresh_database(url)
        stack.callback(drop_database, work)
        quote_address, ramp_address = state["quote_address"], state["ramp_address"]
        pids = {n: p for n in ("quote", "ramp", "devnet") if (p := state["pids"].get(n))}
    else:
        url = work = fresh_database()
        stack.callback(drop_database, url)  # runs last: after every process using it stopped
        quote_address, ramp_address, pids = _own_services(stack, url)
    _wait_listening(echo_port)
    select_port = free_port()
    prepare_kv(work)
    selects = {
        f"select-{i}": spawn(stack, ["-m", "bench.echo_server", str(select_port), work]).pid
        for i in range(1 if state else int(PROCESSES))  # `make run` runs one per service
    }
    _wait_listening(select_port)
    gateway = start_gateway(
        Path(tempfile.mkdtemp(prefix="bench-envoy-")),
        True,
        quote_upstream=quote_address,
        ramp_upstream=ramp_address,
        rate_limit_tokens=10_000_000,
        rate_limit_per_s=10_000_000,
    )
    stack.callback(gateway.stop)
    return Stack(
        url,
        quote_address,
        f"127.0.0.1:{echo_port}",
        ramp_address,
        gateway.url,
        DEVNET_PASSPHRASE,
        {"echo": echo.pid, **pids, "envoy": gateway.process.pid, **selects},
        work,
        state is not None,
        f"127.0.0.1:{select_port}",
    )


def _wait_listening(port: int, timeout: float = 20) -> None:
    """Until something accepts connections on loopback `port` (the echo server has no health
    service)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {port} after {timeout}s") from None
            time.sleep(0.05)


def _own_services(stack: ExitStack, url: str) -> tuple[str, str, dict[str, int]]:
    """The devnet and both services on `url`: their addresses and pids."""
    quote_port, ramp_port = free_port(), free_port()
    devnet = {name: free_port() for name in ("horizon", "anchor", "pix", "substrate")}
    keys_file = Path(tempfile.mkdtemp(prefix="bench-devnet-")) / "keys.json"
    keys = load_or_create_keys(keys_file)
    chains = spawn(
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
    wait_serving(f"127.0.0.1:{quote_port}", QUOTE_SERVICE, timeout=60)
    wait_serving(f"127.0.0.1:{ramp_port}", RAMP_SERVICE, timeout=60)  # after its warm-up
    return (
        f"127.0.0.1:{quote_port}",
        f"127.0.0.1:{ramp_port}",
        {"quote": quote.pid, "ramp": ramp.pid, "devnet": chains.pid},
    )
