"""Which address is the client's, for the per-client rate limit and the access log: the peer's,
or with GATEWAY_XFF_TRUSTED_HOPS=N the one N trusted proxies put into X-Forwarded-For."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx

from tests.support.envoy import Gateway


def statuses(gateway: Gateway, forwarded_for: list[str]) -> list[int]:
    """One quote lookup per entry, each with that X-Forwarded-For header."""
    with httpx.Client(base_url=gateway.url, timeout=5) as client:
        return [
            client.get(
                f"/v1/ramp/quotes/{uuid.uuid4()}", headers={"x-forwarded-for": xff}
            ).status_code
            for xff in forwarded_for
        ]


def logged_clients(gateway: Gateway) -> set[str]:
    """The client addresses of the quote lookups in the access log (read after a stop)."""
    entries = [
        json.loads(line)
        for line in gateway.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    return {e["client"] for e in entries if e["path"].startswith("/v1/ramp/quotes/")}


def test_behind_one_proxy_each_forwarded_client_has_its_own_bucket(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory(rate_limit_tokens=3, rate_limit_per_s=1, xff_trusted_hops=1)
    # The proxy appends the address it saw: the last entry is the client, the rest is theirs.
    first = statuses(gateway, ["10.9.9.9, 203.0.113.1"] * 10)
    assert 429 in first, first
    second = statuses(gateway, ["203.0.113.2"] * 3)
    assert 429 not in second, second
    gateway.stop()
    assert {"203.0.113.1", "203.0.113.2"} == logged_clients(gateway)


def test_without_trusted_proxies_a_forged_forwarded_for_gets_no_fresh_bucket(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory(rate_limit_tokens=3, rate_limit_per_s=1)
    first = statuses(gateway, ["203.0.113.1"] * 10)
    assert 429 in first, first
    forged = statuses(gateway, [f"198.51.100.{i}" for i in range(10)])
    assert 429 in forged, forged
    gateway.stop()
    assert logged_clients(gateway) == {"127.0.0.1"}
