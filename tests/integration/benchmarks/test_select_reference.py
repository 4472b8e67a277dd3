"""The bench's Select reference: a real grpc.aio server process that answers each call with the
row its request names, read from PostgreSQL, and that several processes serve on one port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from bench import h2
from bench.baselines import prepare_kv
from bench.echo_server import ECHO, SELECT
from tests.support.processes import free_port


@pytest.fixture
def select_server(database_url: str) -> Iterator[str]:
    prepare_kv(database_url)
    port = free_port()
    servers = [
        subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(port), database_url])
        for _ in range(2)
    ]
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    yield address
    for server in servers:
        server.kill()
        server.wait()
    assert all(s.returncode == -9 for s in servers)  # both were still serving: none lost the port


def test_select_answers_the_row_each_request_names(select_server: str) -> None:
    with grpc.insecure_channel(select_server) as channel:
        select = channel.unary_unary(SELECT)
        echo = channel.unary_unary(ECHO)
        assert select(b"42", timeout=10) == b"v42"
        assert select(b"10000", timeout=10) == b"v10000"
        assert select(b"10001", timeout=10) == b""  # no such row
        assert echo(b"same", timeout=10) == b"same"


def test_select_under_the_load_generator(select_server: str) -> None:
    target = h2.Target.of(select_server, grpc=True)
    requests = [h2.grpc_request(SELECT, str(i).encode()) for i in range(1, 51)]
    result = h2.run(target, requests, seconds=0.5, concurrency=8)
    assert result.errors == 0 and result.requests > 20
