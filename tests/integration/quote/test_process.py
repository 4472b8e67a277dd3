"""The quote service as a real process: configuration errors and graceful shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psycopg

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from service_kit.db import libpq_url
from tests.support.processes import free_port, start_module, wait_serving
from tests.support.quotes import sell_request


def test_bad_configuration_exits_with_a_clear_message(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quote_service"],
        env={
            "DATABASE_URL": database_url,
            "GRPC_PORT": "not-a-port",
            "DB_POOL_SIZE": "0",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "GRPC_PORT='not-a-port'" in stderr
    assert "DB_POOL_SIZE='0'" in stderr


def test_sigterm_drains_in_flight_calls(database_url: str) -> None:
    port = free_port()
    proc = start_module(
        "quote_service",
        {"DATABASE_URL": database_url, "GRPC_PORT": str(port), "SHUTDOWN_GRACE_S": "10"},
    )
    try:
        address = f"127.0.0.1:{port}"
        wait_serving(address)
        with grpc.insecure_channel(address) as channel:
            stub = quote_pb2_grpc.QuoteServiceStub(channel)
            quote = stub.CreateQuote(
                sell_request(),
                timeout=5,
            )
            # Hold the quote's row lock so the consume call is still in flight at SIGTERM.
            with psycopg.connect(libpq_url(database_url)) as blocker:
                blocker.execute(
                    "SELECT 1 FROM quote.quote_tickets WHERE id = %s FOR UPDATE", [quote.id]
                )
                in_flight = stub.ConsumeQuote.future(
                    quote_pb2.ConsumeQuoteRequest(quote_id=quote.id, ramp_id="ramp-1"), timeout=15
                )
                time.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                threading.Event().wait(0.5)
                assert not in_flight.done()
            # The lock is released: the in-flight call completes despite the shutdown.
            assert in_flight.result(timeout=10).quote.status == quote_pb2.Quote.CONSUMED
        assert proc.wait(timeout=15) == 0
        logs = proc.stderr.read().decode() if proc.stderr else ""
        assert '"msg": "shutting down"' in logs
        assert '"msg": "stopped"' in logs
        assert '"msg": "start-up heap frozen"' in logs  # the process entry point freezes it
        # Every call's access line is written by the time the process has stopped.
        entries = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        methods = [e["method"].rsplit("/", 1)[1] for e in entries if e["msg"] == "rpc"]
        assert methods.count("CreateQuote") == 1 and methods.count("ConsumeQuote") == 1
    finally:
        if proc.poll() is None:
            proc.kill()


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_several_processes_share_the_port_and_stop_together(database_url: str) -> None:
    port = free_port()
    proc = start_module(
        "quote_service",
        {"DATABASE_URL": database_url, "GRPC_PORT": str(port), "GRPC_PROCESSES": "3"},
    )
    try:
        wait_serving(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        siblings = _children(proc.pid)
        assert len(siblings) == 2
        for _ in range(8):  # separate connections, spread by the kernel over the processes
            with grpc.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                quote_pb2_grpc.QuoteServiceStub(channel).CreateQuote(sell_request(), timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in siblings) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in siblings)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_siblings_die_with_a_killed_parent(database_url: str) -> None:
    port = free_port()
    proc = start_module(
        "quote_service",
        {"DATABASE_URL": database_url, "GRPC_PORT": str(port), "GRPC_PROCESSES": "2"},
    )
    wait_serving(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 20
    while not _children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    [sibling] = _children(proc.pid)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while _alive(sibling) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(sibling)
