"""A Spacewalk-style redeem on the Substrate devnet pays out on the Horizon devnet."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
from stellar_sdk import Asset, Keypair, TransactionBuilder
from stellar_sdk import Keypair as StellarKeypair
from substrateinterface import Keypair as SubstrateKeypair
from substrateinterface import SubstrateInterface

from devnet.bridge import bridge_payout
from devnet.horizon.app import LEDGER_KEY, HorizonConfig
from devnet.horizon.app import create_app as create_horizon
from devnet.substrate.app import SubstrateConfig
from devnet.substrate.app import create_app as create_substrate
from tests.support.aio import LoopThread
from tests.support.http_apps import serve


def test_redeem_pays_the_stellar_account(aio_loop: LoopThread) -> None:
    vault = StellarKeypair.random()
    horizon_app = create_horizon(
        HorizonConfig(ledger_close_s=0.2, genesis={vault.public_key: Decimal(1000)})
    )
    node_app = create_substrate(SubstrateConfig(0.1, bridge_payout(horizon_app[LEDGER_KEY], vault)))
    horizon_runner, horizon_port = aio_loop.run(serve(horizon_app))
    node_runner, node_port = aio_loop.run(serve(node_app))
    substrate = SubstrateInterface(url=f"ws://127.0.0.1:{node_port}", ss58_format=56)
    try:
        from stellar_sdk import Server

        horizon = Server(f"http://127.0.0.1:{horizon_port}")
        receiver = Keypair.random()
        httpx.get(
            f"http://127.0.0.1:{horizon_port}/friendbot",
            params={"addr": receiver.public_key},
            timeout=5,
        )
        eurc = Asset("EURC", vault.public_key)
        trust = (
            TransactionBuilder(
                horizon.load_account(receiver.public_key),
                horizon_app[LEDGER_KEY].network_passphrase,
            )
            .append_change_trust_op(eurc)
            .set_timeout(60)
            .build()
        )
        trust.sign(receiver)
        horizon.submit_transaction(trust)
        redeemer = SubstrateKeypair.create_from_uri("//Redeemer", ss58_format=56)
        for currency, amount in (("PEN", "1"), ("EURC", "30")):
            httpx.post(
                f"http://127.0.0.1:{node_port}/",
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "dev_mint",
                    "params": [redeemer.ss58_address, currency, amount],
                },
            )
        time.sleep(0.4)
        call = substrate.compose_call(
            "Spacewalk",
            "request_redeem",
            {
                "amount": 25 * 10**12,
                "asset": "EURC",
                "stellar_address": "0x" + receiver.raw_public_key().hex(),
            },
        )
        receipt = substrate.submit_extrinsic(
            substrate.create_signed_extrinsic(call, redeemer), wait_for_inclusion=True
        )
        assert receipt.is_success, receipt.error_message
        balances = horizon.accounts().account_id(receiver.public_key).call()["balances"]
        assert any(b.get("asset_code") == "EURC" and Decimal(b["balance"]) == 25 for b in balances)
        assert (
            substrate.query("Tokens", "Accounts", [redeemer.ss58_address, "EURC"]).value["free"]
            == 5 * 10**12
        )
    finally:
        substrate.close()
        aio_loop.run(node_runner.cleanup())
        aio_loop.run(horizon_runner.cleanup())
