"""The quote service as a real process: configuration errors and graceful shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

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
    finally:
        if proc.poll() is None:
            proc.kill()
