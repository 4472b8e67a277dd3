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
