"""Fiat partners over HTTP: the SEP-24 anchor (off-ramp payouts) and the PIX partner (on-ramp).

Every call has a timeout. Failures are classified for the processor: timeouts, connection
errors, 5xx and 429 are recoverable; other 4xx are not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from ramp_service.chains.errors import RecoverableError, UnrecoverableError


@dataclass(frozen=True)
class AnchorWithdrawal:
    """Where and with which memo to pay the anchor, and the withdrawal's state."""

    id: str
    account: str
    memo: str
    status: str
    stellar_transaction_id: str


@dataclass(frozen=True)
class PixDeposit:
    """A PIX deposit and its state (PENDING, PAID, MINTED, MINT_FAILED)."""

    id: str
    amount: Decimal
    copy_paste: str
    status: str


async def _call(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise RecoverableError("PARTNER_TIMEOUT", f"{method} {url}: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise RecoverableError(
            "PARTNER_UNREACHABLE", f"{method} {url}: {type(exc).__name__}"
        ) from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise RecoverableError(
            "PARTNER_UNAVAILABLE", f"{method} {url}: HTTP {response.status_code}"
        )
    if response.status_code >= 400:
        raise UnrecoverableError(
            "PARTNER_REJECTED", f"{method} {url}: HTTP {response.status_code} {response.text[:200]}"
        )
    body: dict[str, Any] = response.json()
    return body


class _PartnerHttp:
    """One pooled HTTP client per partner, made on first use (creating an httpx client loads
    the CA bundle: tens of milliseconds, a third of a register's CPU when done per call)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        # A client's connections belong to the loop that opened them.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._client, self._loop = httpx.AsyncClient(timeout=self._timeout), loop
        return self._client

    async def close(self) -> None:
        """Close the pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class AnchorClient(_PartnerHttp):
    """The SEP-24 anchor."""

    async def start_withdrawal(
        self, asset_code: str, amount: Decimal, destination: str
    ) -> AnchorWithdrawal:
        """Open a withdrawal; the answer names the account and memo to pay."""
        body = await _call(
            self._http(),
            "POST",
            f"{self._base_url}/sep24/transactions/withdraw/interactive",
            json={"asset_code": asset_code, "amount": f"{amount:f}", "dest": destination},
        )
        return _withdrawal(body["transaction"])

    async def withdrawal(self, withdrawal_id: str) -> AnchorWithdrawal:
        """The withdrawal's current state."""
        body = await _call(
            self._http(), "GET", f"{self._base_url}/sep24/transaction", params={"id": withdrawal_id}
        )
        return _withdrawal(body["transaction"])


def _withdrawal(tx: dict[str, Any]) -> AnchorWithdrawal:
    return AnchorWithdrawal(
        str(tx["id"]),
        str(tx["withdraw_anchor_account"]),
        str(tx["withdraw_memo"]),
        str(tx["status"]),
        str(tx.get("stellar_transaction_id") or ""),
    )


class PixClient(_PartnerHttp):
    """The PIX partner (BRLA)."""

    async def create_deposit(self, amount: Decimal, tax_id: str, destination: str) -> PixDeposit:
        """A PIX deposit for `amount` BRL that mints BRLA to `destination` once paid."""
        body = await _call(
            self._http(),
            "POST",
            f"{self._base_url}/v1/pix/deposits",
            json={"amount": f"{amount:.2f}", "tax_id": tax_id, "destination": destination},
        )
        return _deposit(body)

    async def deposit(self, deposit_id: str) -> PixDeposit:
        """The deposit's current state."""
        body = await _call(self._http(), "GET", f"{self._base_url}/v1/pix/deposits/{deposit_id}")
        return _deposit(body)


def _deposit(body: dict[str, Any]) -> PixDeposit:
    return PixDeposit(
        str(body["id"]),
        Decimal(str(body["amount"])),
        str(body["pix_copy_paste"]),
        str(body["status"]),
    )
