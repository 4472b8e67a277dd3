"""A user's whole journey on the devnet, as the demo and the end-to-end tests run it: quote,
fresh ephemeral keys, register, presign, start, and the user's own part (the SELL deposit
from their wallet, the BUY PIX payment from their bank)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from substrateinterface import Keypair as SubstrateKeypair

from devnet.wallet import DevnetWallet
from pendulumpay_client import Ephemerals, RampClient

DEMO_IBAN = "DE89370400440532013000"
DEMO_CPF = "529.982.247-25"


@dataclass
class Journey:
    """A started ramp and what the user holds."""

    ramp: dict[str, Any]
    quote: dict[str, Any]
    keys: Ephemerals
    user: SubstrateKeypair
    destination: str

    @property
    def id(self) -> str:
        return str(self.ramp["id"])


def new_user() -> SubstrateKeypair:
    """A user's own Pendulum wallet."""
    return SubstrateKeypair.create_from_mnemonic(
        SubstrateKeypair.generate_mnemonic(), ss58_format=56
    )


def start_sell(
    rest: RampClient, wallet: DevnetWallet, passphrase: str, amount: str = "100"
) -> Journey:
    """SELL USDC → EUR: registered, presigned and started; the user's USDC is not sent yet."""
    quote = rest.create_quote("SELL", "pendulum", "sepa", amount, "USDC", "EUR")
    keys, user = Ephemerals.new("SELL"), new_user()
    ramp = rest.register(quote["id"], keys, wallet_address=user.ss58_address, destination=DEMO_IBAN)
    started = rest.start(ramp["id"], keys.sign(ramp["unsignedTxs"], passphrase))
    return Journey(started, quote, keys, user, DEMO_IBAN)


def fund_user(wallet: DevnetWallet, journey: Journey) -> None:
    """The faucet gives the user the USDC they sell (and PEN for their own fee)."""
    amount = Decimal(journey.quote["inputAmount"])
    wallet.mint(journey.user.ss58_address, "PEN", Decimal(1))
    wallet.mint(journey.user.ss58_address, "USDC", amount)
    wallet.wait_balance(journey.user.ss58_address, "USDC", amount)


def deposit(wallet: DevnetWallet, journey: Journey) -> None:
    """The user's wallet sends the input amount to the Pendulum ephemeral."""
    wallet.transfer(
        journey.user,
        journey.keys.pendulum.ss58_address,
        "USDC",
        Decimal(journey.quote["inputAmount"]),
    )


def start_buy(
    rest: RampClient, wallet: DevnetWallet, passphrase: str, amount: str = "500"
) -> Journey:
    """BUY BRL (PIX) → USDC on AssetHub: registered, presigned and started; not paid yet."""
    quote = rest.create_quote("BUY", "pix", "assethub", amount, "BRL", "USDC")
    keys, user = Ephemerals.new("BUY"), new_user()
    ramp = rest.register(
        quote["id"],
        keys,
        wallet_address=user.ss58_address,
        destination=user.ss58_address,
        tax_id=DEMO_CPF,
    )
    started = rest.start(ramp["id"], keys.sign(ramp["unsignedTxs"], passphrase))
    return Journey(started, quote, keys, user, user.ss58_address)


def pay_pix(wallet: DevnetWallet, journey: Journey) -> None:
    """The user pays the PIX charge (opened by start: in the started ramp) from their bank."""
    wallet.pay_pix(journey.ramp["depositInstructions"]["pixDepositId"])
