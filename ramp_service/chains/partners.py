"""Fiat partners over HTTP: the SEP-24 anchor (off-ramp payouts) and the PIX partner (on-ramp).

Every call has a timeout. Failures are classified for the processor: timeouts, connection
errors, 5xx and 429 are recoverable; other 4xx are not.
"""

from __future__ import annotations

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


class AnchorClient:
    """The SEP-24 anchor."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s)

    async def start_withdrawal(
        self, asset_code: str, amount: Decimal, destination: str
    ) -> AnchorWithdrawal:
        """Open a withdrawal; the answer names the account and memo to pay."""
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            body = await _call(
                client,
                "POST",
                f"{self._base_url}/sep24/transactions/withdraw/interactive",
                json={"asset_code": asset_code, "amount": f"{amount:f}", "dest": destination},
            )
        return _withdrawal(body["transaction"])

    async def withdrawal(self, withdrawal_id: str) -> AnchorWithdrawal:
        """The withdrawal's current state."""
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            body = await _call(
                client, "GET", f"{self._base_url}/sep24/transaction", params={"id": withdrawal_id}
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


class PixClient:
    """The PIX partner (BRLA)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s)

    async def create_deposit(self, amount: Decimal, tax_id: str, destination: str) -> PixDeposit:
        """A PIX deposit for `amount` BRL that mints BRLA to `destination` once paid."""
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            body = await _call(
                client,
                "POST",
                f"{self._base_url}/v1/pix/deposits",
                json={"amount": f"{amount:.2f}", "tax_id": tax_id, "destination": destination},
            )
        return _deposit(body)

    async def deposit(self, deposit_id: str) -> PixDeposit:
        """The deposit's current state."""
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            body = await _call(client, "GET", f"{self._base_url}/v1/pix/deposits/{deposit_id}")
        return _deposit(body)


def _deposit(body: dict[str, Any]) -> PixDeposit:
    return PixDeposit(
        str(body["id"]),
        Decimal(str(body["amount"])),
        str(body["pix_copy_paste"]),
        str(body["status"]),
    )
