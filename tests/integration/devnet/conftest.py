"""The devnet stand-ins, served from the test loop on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from stellar_sdk import Keypair, Server

from devnet.horizon.app import DEVNET_PASSPHRASE, HorizonConfig, create_app
from tests.support.aio import LoopThread
from tests.support.http_apps import serve


class Horizon:
    """A running Horizon stand-in and a real SDK client for it."""

    def __init__(self, url: str, config: HorizonConfig) -> None:
        self.url = url
        self.config = config
        self.server = Server(url)

    def fund(self, keypair: Keypair | None = None) -> Keypair:
        """A new account funded by the friendbot."""
        keypair = keypair or Keypair.random()
        response = httpx.get(
            f"{self.url}/friendbot", params={"addr": keypair.public_key}, timeout=5
        )
        response.raise_for_status()
        return keypair


@pytest.fixture
def horizon(aio_loop: LoopThread) -> Iterator[Horizon]:
    """A fresh Horizon stand-in with fast ledgers."""
    config = HorizonConfig(
        network_passphrase=DEVNET_PASSPHRASE, ledger_close_s=0.2, friendbot_amount=Decimal(1000)
    )
    runner, port = aio_loop.run(serve(create_app(config)))
    yield Horizon(f"http://127.0.0.1:{port}", config)
    aio_loop.run(runner.cleanup())


class Node:
    """A running Substrate stand-in and how to reach it."""

    def __init__(self, port: int, chain: object) -> None:
        self.http_url = f"http://127.0.0.1:{port}/"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.chain = chain
        self.clients: list[object] = []

    def rpc(self, method: str, *params: object) -> dict[str, object]:
        """One JSON-RPC call over HTTP."""
        answer = httpx.post(
            self.http_url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
            timeout=5,
        ).json()
        return dict(answer)

    def interface(self) -> object:
        """The real substrate-interface client."""
        from substrateinterface import SubstrateInterface

        client = SubstrateInterface(url=self.ws_url, ss58_format=56)
        self.clients.append(client)
        return client


@pytest.fixture
def node(aio_loop: LoopThread) -> Iterator[Node]:
    """A fresh Substrate stand-in producing a block every 0.1 s."""
    from devnet.substrate.app import CHAIN_KEY, SubstrateConfig
    from devnet.substrate.app import create_app as create_node

    app = create_node(SubstrateConfig(block_time_s=0.1))
    runner, port = aio_loop.run(serve(app))
    running = Node(port, app[CHAIN_KEY])
    yield running
    for client in running.clients:
        client.close()  # type: ignore[attr-defined]
    aio_loop.run(runner.cleanup())
