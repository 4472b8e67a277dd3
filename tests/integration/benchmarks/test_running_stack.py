"""`make bench` measures the stack `make run` started when it is up (what devstack writes about
itself), and starts its own otherwise: a missing, stale or unanswering record means its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench import stack
from tests.support.processes import free_port


@pytest.fixture
def state_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run" / "stack.json"
    monkeypatch.setattr(stack, "STATE_FILE", path)
    return path


@pytest.fixture
def serving() -> Iterator[str]:
    """A real gRPC health service reporting SERVING."""
    server = grpc.server(ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    for name in (stack.QUOTE_SERVICE, stack.RAMP_SERVICE):  # ready, as after warm-up
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def _write(path: Path, pid: int, quote: str, ramp: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "database_url": "postgresql://postgres@127.0.0.1:5432/dev",
                "quote_address": quote,
                "ramp_address": ramp,
                "pids": {"quote": pid, "ramp": pid},
            }
        )
    )


def test_no_record_means_no_running_stack(state_file: Path) -> None:
    assert stack.running_stack() is None


def test_a_serving_stack_is_found(state_file: Path, serving: str) -> None:
    _write(state_file, os.getpid(), serving, serving)
    state = stack.running_stack()
    assert state is not None and state["quote_address"] == serving


def test_a_record_left_by_a_dead_process_is_ignored(state_file: Path, serving: str) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write(state_file, gone.pid, serving, serving)
    assert stack.running_stack() is None


def test_services_that_do_not_answer_mean_no_running_stack(state_file: Path, serving: str) -> None:
    _write(state_file, os.getpid(), serving, f"127.0.0.1:{free_port()}")
    assert stack.running_stack() is None


def test_a_corrupt_record_is_ignored(state_file: Path) -> None:
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    assert stack.running_stack() is None
