"""A small Python client that does what the Pendulum Pay frontend does, over the REST gateway.

    client = RampClient("http://127.0.0.1:8080")
    quote = client.create_quote("SELL", "pendulum", "sepa", "100", "USDC", "EUR")
    keys = Ephemerals.new("SELL")
    ramp = client.register(quote["id"], keys, wallet_address=..., destination="DE89...")
    client.start(ramp["id"], keys.sign(ramp["unsignedTxs"], passphrase))
    final = client.wait(ramp["id"], on_change=print)

Ephemeral keys live only in the client; the server receives public keys and presigned
transactions. Stellar transactions are signed as XDR envelopes, Pendulum ones by signing the
issued payload bytes with sr25519 (the way browser wallet extensions sign), so no chain metadata
is needed here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from stellar_sdk import Keypair as StellarKeypair
from stellar_sdk import TransactionEnvelope
from substrateinterface import Keypair as SubstrateKeypair

PENDULUM_SS58_FORMAT = 56
TERMINAL_STATUSES = frozenset({"COMPLETE", "FAILED", "TIMED_OUT", "MANUAL_REVIEW", "CANCELLED"})


class RampApiError(Exception):
    """A non-2xx answer, with the stable reason code the server gave."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass
class Ephemerals:
    """The throwaway keys of one ramp."""

    pendulum: SubstrateKeypair
    stellar: StellarKeypair | None = None

    @classmethod
    def new(cls, ramp_type: str) -> Ephemerals:
        """Fresh keys: a Pendulum key for every ramp, a Stellar key for SELL."""
        pendulum = SubstrateKeypair.create_from_mnemonic(
            SubstrateKeypair.generate_mnemonic(), ss58_format=PENDULUM_SS58_FORMAT
        )
        return cls(pendulum, StellarKeypair.random() if ramp_type == "SELL" else None)

    def signing_accounts(self) -> list[dict[str, str]]:
        """The register request's `signingAccounts`."""
        accounts = [{"network": "pendulum", "address": self.pendulum.ss58_address}]
        if self.stellar is not None:
            accounts.insert(0, {"network": "stellar", "address": self.stellar.public_key})
        return accounts

    def sign(self, unsigned_txs: list[dict[str, Any]], passphrase: str) -> list[dict[str, Any]]:
        """Presign every issued transaction."""
        signed = []
        for tx in unsigned_txs:
            presigned = {k: tx[k] for k in ("phase", "network", "signer", "nonce")}
            if tx["network"] == "stellar":
                if self.stellar is None:
                    raise ValueError("a Stellar transaction was issued but there is no key")
                envelope = TransactionEnvelope.from_xdr(tx["txData"], passphrase)
                envelope.sign(self.stellar)
                presigned["txData"] = envelope.to_xdr()
            else:
                payload = bytes.fromhex(tx["txData"].removeprefix("0x"))
                presigned["signature"] = "0x" + self.pendulum.sign(payload).hex()
            signed.append(presigned)
        return signed


class RampClient:
    """The public REST API."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RampClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        response = self._http.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            try:
                answer = response.json()
            except ValueError:
                answer = {"message": response.text[:200]}
            reason = next(
                (d["reason"] for d in answer.get("details", []) if "reason" in d), "UNKNOWN"
            )
            raise RampApiError(response.status_code, reason, str(answer.get("message", "")))
        result: dict[str, Any] = response.json()
        return result

    def create_quote(
        self,
        ramp_type: str,
        from_network: str,
        to_network: str,
        input_amount: str,
        input_currency: str,
        output_currency: str,
    ) -> dict[str, Any]:
        """POST /v1/ramp/quotes."""
        return self._call(
            "POST",
            "/v1/ramp/quotes",
            {
                "rampType": ramp_type,
                "from": from_network,
                "to": to_network,
                "inputAmount": input_amount,
                "inputCurrency": input_currency,
                "outputCurrency": output_currency,
            },
        )

    def register(
        self,
        quote_id: str,
        keys: Ephemerals,
        *,
        wallet_address: str,
        destination: str,
        tax_id: str = "",
    ) -> dict[str, Any]:
        """POST /v1/ramp/register (idempotent per quote)."""
        data = {"walletAddress": wallet_address, "destination": destination}
        if tax_id:
            data["taxId"] = tax_id
        return self._call(
            "POST",
            "/v1/ramp/register",
            {
                "quoteId": quote_id,
                "signingAccounts": keys.signing_accounts(),
                "additionalData": data,
            },
            key=f"register-{quote_id}",
        )

    def start(
        self, ramp_id: str, presigned: list[dict[str, Any]], key: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/ramp/start; the idempotency key makes a retried start safe. A BUY's answer
        carries the PIX charge to pay (`depositInstructions`: `pixCopyPaste`, payable until
        `pixExpiresAt`); register's has none. A 503 stored nothing: start again (every start
        of a ramp gets the same charge)."""
        return self._call(
            "POST",
            "/v1/ramp/start",
            {"rampId": ramp_id, "presignedTxs": presigned},
            key=key or f"start-{ramp_id}-{uuid.uuid4().hex[:8]}",
        )

    def get(self, ramp_id: str) -> dict[str, Any]:
        """GET /v1/ramp/{id}."""
        return self._call("GET", f"/v1/ramp/{ramp_id}")

    def errors(self, ramp_id: str) -> list[dict[str, Any]]:
        """GET /v1/ramp/{id}/errors."""
        return list(self._call("GET", f"/v1/ramp/{ramp_id}/errors").get("errors", []))

    def wait(
        self,
        ramp_id: str,
        *,
        timeout_s: float = 300,
        interval_s: float = 0.5,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the ramp is terminal (COMPLETE also waits for nothing else); calls
        `on_change` whenever status or phase changes."""
        deadline = time.monotonic() + timeout_s
        seen: tuple[str, str] | None = None
        while True:
            ramp = self.get(ramp_id)
            now = (ramp.get("status", ""), ramp.get("currentPhase", ""))
            if now != seen:
                seen = now
                if on_change is not None:
                    on_change(ramp)
            if ramp.get("status") in TERMINAL_STATUSES:
                return ramp
            if time.monotonic() > deadline:
                raise TimeoutError(f"ramp {ramp_id} still {now} after {timeout_s}s")
            time.sleep(interval_s)
