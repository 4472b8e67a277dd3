"""A user's side of the devnet: faucets, a wallet's token transfer, the bank's PIX payment.

What a person does on a testnet by hand, as a tool for the demo and the end-to-end tests. It
talks to the stand-ins over their public protocols only (JSON-RPC, substrate-interface,
Horizon, the PIX partner's HTTP API).
"""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
from stellar_sdk import Server
from substrateinterface import Keypair, SubstrateInterface

from devnet.substrate.chain import DECIMALS as CHAIN_DECIMALS

# The devnet's own token table, with the native token under its symbol.
DECIMALS = {("PEN" if name == "Native" else name): d for name, d in CHAIN_DECIMALS.items()}


class DevnetWallet:
    """Faucets and a user's wallet against the devnet's URLs."""

    def __init__(self, substrate_http_url: str, horizon_url: str, pix_url: str) -> None:
        self._rpc_url = substrate_http_url
        self._horizon_url = horizon_url
        self._pix_url = pix_url.rstrip("/")

    def _rpc(self, method: str, *params: object) -> object:
        answer = httpx.post(
            self._rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
            timeout=10,
        ).json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def mint(self, address: str, currency: str, amount: Decimal) -> None:
        """The Pendulum faucet (dev_mint): `amount` arrives in the next block."""
        self._rpc("dev_mint", address, currency, f"{amount:f}")

    def balance(self, address: str, currency: str) -> Decimal:
        """A free Pendulum balance, read over JSON-RPC storage queries."""
        client = SubstrateInterface(url=self._rpc_url.replace("http", "ws", 1), ss58_format=56)
        try:
            if currency == "PEN":
                free = client.query("System", "Account", [address]).value["data"]["free"]
            else:
                free = client.query("Tokens", "Accounts", [address, currency]).value["free"]
        finally:
            client.close()
        return Decimal(int(free)).scaleb(-DECIMALS[currency])

    def wait_balance(
        self, address: str, currency: str, at_least: Decimal, timeout_s: float = 20
    ) -> None:
        """Block until `address` holds `at_least` of `currency`."""
        deadline = time.monotonic() + timeout_s
        while self.balance(address, currency) < at_least:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} never held {at_least} {currency}")
            time.sleep(0.2)

    def transfer(self, sender: Keypair, dest: str, currency: str, amount: Decimal) -> str:
        """The user's wallet sends tokens (a signed Tokens.transfer); returns the extrinsic hash."""
        client = SubstrateInterface(url=self._rpc_url.replace("http", "ws", 1), ss58_format=56)
        try:
            call = client.compose_call(
                "Tokens",
                "transfer",
                {
                    "dest": dest,
                    "currency_id": currency,
                    "amount": int(amount.scaleb(DECIMALS[currency])),
                },
            )
            extrinsic = client.create_signed_extrinsic(call, sender)
            receipt = client.submit_extrinsic(extrinsic, wait_for_inclusion=True)
            if not receipt.is_success:
                raise RuntimeError(f"transfer failed: {receipt.error_message}")
            return str(receipt.extrinsic_hash)
        finally:
            client.close()

    def assethub_balance(self, address: str, currency: str) -> Decimal:
        """What an AssetHub account received over XCM."""
        return Decimal(str(self._rpc("dev_assethubBalance", address, currency)))

    def stellar_balance(self, account: str, asset: str = "native") -> Decimal:
        """A Stellar balance ("native" or "CODE:ISSUER"); 0 when the account does not exist."""
        server = Server(self._horizon_url)
        try:
            data = server.accounts().account_id(account).call()
        except Exception:
            return Decimal(0)
        for b in data["balances"]:
            key = (
                "native"
                if b["asset_type"] == "native"
                else f"{b['asset_code']}:{b['asset_issuer']}"
            )
            if key == asset:
                return Decimal(b["balance"])
        return Decimal(0)

    def pay_pix(self, deposit_id: str) -> None:
        """The bank reports the PIX payment (the partner then mints BRLA)."""
        response = httpx.post(f"{self._pix_url}/dev/pix/{deposit_id}/pay", timeout=10)
        response.raise_for_status()
