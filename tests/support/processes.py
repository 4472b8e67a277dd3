"""Start our services as real processes, the way `make run` and Kubernetes do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago, and that this process has not handed
    out before: the kernel may give the same ephemeral port to two binds in a row, and two
    servers told the same port make the second one fail while a readiness probe of that port
    answers from the first (seen: the ramp service's port served by the quote service)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def start_module(module: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`python -m module` with the test environment plus `env`, output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_serving(address: str, service: str = "", timeout: float = 20) -> None:
    """Block until the gRPC health service at `address` reports SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1
                ).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not serving after {timeout}s")
            time.sleep(0.05)
