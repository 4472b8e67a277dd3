"""Envoy in front of the in-process services, started by the suite on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service_kit.grpc_server import RunningServer
from tests.support.envoy import Gateway, start_gateway


@pytest.fixture
def gateway_factory(
    quote_server: RunningServer, tmp_path: Path
) -> Iterator[Callable[..., Gateway]]:
    """Start gateways in front of the quote service with extra settings; stopped afterwards."""
    started: list[Gateway] = []

    def start(wait_healthy: bool = True, **overrides: object) -> Gateway:
        overrides.setdefault("quote_upstream", f"127.0.0.1:{quote_server.port}")
        overrides.setdefault("ramp_upstream", "")
        gateway = start_gateway(tmp_path, wait_healthy, **overrides)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    """A gateway with the default settings."""
    return gateway_factory()


@pytest.fixture
def rest(gateway: Gateway) -> Iterator[httpx.Client]:
    """An HTTP client for the gateway."""
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client
