"""The Spacewalk-like bridge's Stellar side: a vault paying out redeemed assets on Horizon."""

from __future__ import annotations

import logging
from decimal import ROUND_DOWN, Decimal

from stellar_sdk import Account, Asset, Keypair, TransactionBuilder

from devnet.horizon.ledger import Ledger, money
from devnet.substrate.chain import StellarPayout

log = logging.getLogger("devnet.bridge")


def bridge_payout(ledger: Ledger, vault: Keypair) -> StellarPayout:
    """The Spacewalk vault: pay the redeemed asset on Stellar from the asset's issuer."""

    async def pay(destination: str, currency: str, amount: Decimal) -> None:
        source = ledger.accounts[vault.public_key]
        tx = (
            TransactionBuilder(
                Account(vault.public_key, source.sequence), ledger.network_passphrase, 100
            )
            .append_payment_op(
                destination,
                Asset(currency, vault.public_key),
                money(amount.quantize(Decimal("1e-7"), ROUND_DOWN)),
            )
            .set_timeout(60)
            .build()
        )
        tx.sign(vault)
        outcome = ledger.submit(tx.to_xdr())
        log.info(
            "bridge payout",
            extra={
                "destination": destination,
                "currency": currency,
                "amount": str(amount),
                "successful": outcome.successful,
            },
        )

    return pay
