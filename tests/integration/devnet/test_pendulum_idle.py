"""The Pendulum adapter across quiet spells and an unreachable node: a node drops idle
WebSockets (this one pings every 0.4 s and drops a client that has not answered within 0.2 s;
substrate-interface only reads while it waits for an answer), and the adapter's pooled clients
and its metadata client must keep working after one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from substrateinterface import Keypair

from devnet.substrate.app import SubstrateConfig
from devnet.substrate.app import create_app as create_node
from ramp_service.chains import pendulum
from ramp_service.chains.errors import RecoverableError
from ramp_service.chains.pendulum import PendulumChain
from tests.integration.devnet.conftest import Node
from tests.support.aio import LoopThread
from tests.support.http_apps import serve

ALICE = Keypair.create_from_uri("//Alice", ss58_format=56).ss58_address
QUIET_S = 1.5  # several heartbeats: every idle socket has been dropped by then


@pytest.fixture
def dropping_node(aio_loop: LoopThread) -> Iterator[tuple[str, object]]:
    app = create_node(SubstrateConfig(block_time_s=0.1, ws_heartbeat_s=0.4))
    runner, port = aio_loop.run(serve(app))
    yield f"ws://127.0.0.1:{port}", runner
    aio_loop.run(runner.cleanup())


async def _balances(chain: PendulumChain, n: int) -> list[object]:
    async def one() -> object:
        try:
            return await chain.balance(ALICE, "PEN")
        except RecoverableError as exc:
            return exc.reason

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_without_reconnecting_idle_clients_fail(
    dropping_node: tuple[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the node really drops idle sockets, and that is what broke registers."""
    monkeypatch.setattr(pendulum, "IDLE_RECONNECT_S", 3600.0)
    monkeypatch.setattr(pendulum, "_stale", lambda client: False)
    chain = PendulumChain(dropping_node[0], timeout_s=10)
    try:
        chain.warm_up(2)
        time.sleep(QUIET_S)
        answers = asyncio.run(_balances(chain, 2))
        assert answers.count("PENDULUM_UNREACHABLE") >= 1, answers
        with pytest.raises(pendulum.CONNECTION_ERRORS):  # the genesis hash, on a dead socket
            chain.issue(chain.token_transfer(ALICE, "USDC", Decimal("1")), ALICE, 0)
    finally:
        chain.close()


def test_pooled_clients_reconnect_after_a_quiet_spell(
    dropping_node: tuple[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pendulum, "IDLE_RECONNECT_S", 0.1)
    chain = PendulumChain(dropping_node[0], timeout_s=10)
    try:
        # Every client the calls below use is pooled and warm: a client initialized inside
        # the loop loads the runtime without reading its socket, and on a loaded machine this
        # node (0.2 s to answer a ping) drops it before it is ever idle.
        chain.warm_up(4)
        assert asyncio.run(_balances(chain, 4)) == [Decimal(0)] * 4
        for _ in range(2):
            time.sleep(QUIET_S)
            assert asyncio.run(_balances(chain, 4)) == [Decimal(0)] * 4
    finally:
        chain.close()


def test_the_runtime_recheck_survives_a_quiet_spell_and_an_unreachable_node(
    dropping_node: tuple[str, object],
    monkeypatch: pytest.MonkeyPatch,
    aio_loop: LoopThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(pendulum, "RUNTIME_RECHECK_S", 0.5)
    url, runner = dropping_node
    chain = PendulumChain(url, timeout_s=10)
    try:
        first = chain.issue(chain.token_transfer(ALICE, "USDC", Decimal("1")), ALICE, 0)
        time.sleep(QUIET_S)  # the metadata client's socket is dropped; the recheck is due
        socket_before = chain._offline.websocket  # type: ignore[union-attr]
        with caplog.at_level(logging.WARNING, logger="pendulum"):
            again = chain.issue(chain.token_transfer(ALICE, "USDC", Decimal("1")), ALICE, 0)
        assert not caplog.records, caplog.text  # the recheck itself succeeded
        assert chain._offline.websocket is not socket_before  # type: ignore[union-attr]
        assert again == first
        aio_loop.run(runner.cleanup())  # type: ignore[attr-defined]
        time.sleep(0.6)
        # No node: the loaded runtime still composes and signs; network calls are recoverable.
        assert chain.issue(chain.token_transfer(ALICE, "USDC", Decimal("1")), ALICE, 0) == first
        assert asyncio.run(_balances(chain, 1)) == ["PENDULUM_UNREACHABLE"]
    finally:
        chain.close()


def test_the_metadata_client_fetches_over_a_live_socket_after_a_quiet_spell(
    dropping_node: tuple[str, object],
) -> None:
    """Warm, then quiet, then the first register: its payload needs the genesis hash, fetched
    over the metadata client's socket, which the node dropped meanwhile (every register failed
    this way in the bench, well before the runtime recheck was due)."""
    chain = PendulumChain(dropping_node[0], timeout_s=10)
    try:
        chain.warm_up(0)
        time.sleep(QUIET_S)
        issued = chain.issue(chain.token_transfer(ALICE, "USDC", Decimal("1")), ALICE, 0)
        assert issued.signing_payload_hex.startswith("0x")
        time.sleep(QUIET_S)
        mortal = chain.issue(chain.token_transfer(ALICE, "USDC", Decimal("1")), ALICE, 0, 64)
        assert mortal.era is not None and mortal.era["period"] == 64  # a block number fetched
    finally:
        chain.close()


def test_a_socket_in_use_is_kept(node: Node) -> None:
    """Calls close together reuse their sockets: reconnecting is for idle ones only (on a node
    with the usual 30 s heartbeat: the dropping node's pings would rightly count as stale)."""

    def pooled_sockets(chain: PendulumChain) -> set[int]:
        clients = []
        while not chain._idle.empty():
            clients.append(chain._idle.get_nowait())
        for client in clients:
            chain._idle.put(client)
        return {id(client.websocket) for client, _ in clients}

    chain = PendulumChain(node.ws_url, timeout_s=10)
    try:
        chain.warm_up(2)
        before = pooled_sockets(chain)
        for _ in range(3):
            assert asyncio.run(_balances(chain, 2)) == [Decimal(0)] * 2
        assert pooled_sockets(chain) == before
        chain.issue(chain.token_transfer(ALICE, "USDC", Decimal("1")), ALICE, 0)
        metadata_socket = chain._offline.websocket  # type: ignore[union-attr]
        chain.issue(chain.token_transfer(ALICE, "USDC", Decimal("2")), ALICE, 1)
        assert chain._offline.websocket is metadata_socket  # type: ignore[union-attr]
    finally:
        chain.close()
