"""Fiat partners over HTTP: the SEP-24 anchor (off-ramp payouts) and the PIX partner (on-ramp).

Every call has a timeout. Failures are classified for the processor: timeouts, connection
errors, 5xx and 429 are recoverable; other 4xx are not (`PartnerRefusal`, with the partner's own
error code when it names one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ramp_service.chains.errors import RecoverableError, UnrecoverableError
from ramp_service.chains.pooled import LoopPooled


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
    """A PIX charge and its state: PENDING, then PAID → MINTED (MINT_FAILED while the partner
    retries its mint), or EXPIRED / CANCELLED when it was never paid."""

    id: str
    txid: str
    amount: Decimal
    tax_id: str
    destination: str
    expires_at: datetime | None
    copy_paste: str
    status: str

    @property
    def paid(self) -> bool:
        """Whether the user's money reached the partner."""
        return self.status in ("PAID", "MINTED", "MINT_FAILED")


class PartnerRefusal(UnrecoverableError):
    """A partner's 4xx (other than 429); `code` is its own error code, when it names one."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__("PARTNER_REJECTED", message)
        self.code = code


def _where(method: str, url: str) -> str:
    """The call as errors name it: method and path. Errors are stored with the ramp and shown
    by the public errors endpoint, so no host, credentials or query string."""
    return f"{method} {urlsplit(url).path}"


_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _refusal(text: str) -> str:
    """The partner's own error code, when its body names one plainly ({"error": "..."} or
    {"code": "..."}); never the body itself (it may echo personal data or internals)."""
    try:
        body = json.loads(text)
    except ValueError:
        return ""
    if isinstance(body, dict):
        for field in ("error", "code"):
            value = body.get(field)
            if isinstance(value, str) and _CODE.fullmatch(value):
                return value
    return ""


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> dict[str, Any]:
    where = _where(method, url)
    try:
        async with session.request(method, url, **kwargs) as response:
            status, text = response.status, await response.text()
    except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (some also ClientErrors)
        raise RecoverableError("PARTNER_TIMEOUT", f"{where}: {type(exc).__name__}") from exc
    except aiohttp.ClientError as exc:
        raise RecoverableError("PARTNER_UNREACHABLE", f"{where}: {type(exc).__name__}") from exc
    if status == 429 or status >= 500:
        raise RecoverableError("PARTNER_UNAVAILABLE", f"{where}: HTTP {status}")
    if status >= 400:
        code = _refusal(text)
        raise PartnerRefusal(f"{where}: HTTP {status}" + (f" ({code})" if code else ""), code)
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise RecoverableError("PARTNER_BAD_RESPONSE", f"{where}: not JSON") from exc
    if not isinstance(body, dict):
        raise RecoverableError("PARTNER_BAD_RESPONSE", f"{where}: not a JSON object")
    return body


class _PartnerHttp:
    """One pooled HTTP client per partner, made on first use in the running loop (its
    connections belong to that loop). aiohttp: httpx spent 12% of the ramp service's CPU under
    register load on one anchor call per register (py-spy); a client per call, earlier, loaded
    the CA bundle each time."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = LoopPooled(
            lambda: aiohttp.ClientSession(timeout=timeout), aiohttp.ClientSession.close
        )

    def _http(self) -> aiohttp.ClientSession:
        return self._session.get()

    async def close(self) -> None:
        """Close the pooled connections."""
        await self._session.close()


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
        return _withdrawal(body)

    async def withdrawal(self, withdrawal_id: str) -> AnchorWithdrawal:
        """The withdrawal's current state."""
        body = await _call(
            self._http(), "GET", f"{self._base_url}/sep24/transaction", params={"id": withdrawal_id}
        )
        return _withdrawal(body)


def _withdrawal(body: dict[str, Any]) -> AnchorWithdrawal:
    with _shape("anchor"):
        tx = body["transaction"]
        return AnchorWithdrawal(
            str(tx["id"]),
            str(tx["withdraw_anchor_account"]),
            str(tx["withdraw_memo"]),
            str(tx["status"]),
            str(tx.get("stellar_transaction_id") or ""),
        )


@contextmanager
def _shape(partner: str) -> Iterator[None]:
    """An answer missing a field or holding one of the wrong type (a partner's release changed
    it, say) is the partner's bad answer, retried like its other faults, not a bug of ours."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        raise RecoverableError(
            "PARTNER_BAD_RESPONSE", f"{partner}: an answer of an unexpected shape ({exc!r:.120})"
        ) from exc


class PixClient(_PartnerHttp):
    """The PIX partner (BRLA)."""

    async def create_deposit(
        self,
        txid: str,
        amount: Decimal,
        tax_id: str,
        destination: str,
        expires_at: datetime,
    ) -> PixDeposit:
        """The PIX charge `txid` for `amount` BRL, payable until `expires_at`, that mints BRLA
        to `destination` once paid. Idempotent per txid: a repeated create (a retry after a
        lost answer, a concurrent one) gets the charge the first one made, even when it asked
        for another expiry; a charge with other terms under this txid is refused."""
        try:
            body = await _call(
                self._http(),
                "POST",
                f"{self._base_url}/v1/pix/deposits",
                json={
                    "txid": txid,
                    "amount": f"{amount:.2f}",
                    "tax_id": tax_id,
                    "destination": destination,
                    "expires_at": expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                },
            )
        except PartnerRefusal as exc:
            if exc.code != "txid_conflict":
                raise
            existing = await self.deposit_by_txid(txid)
            if (existing.amount, existing.tax_id, existing.destination) != (
                amount,
                tax_id,
                destination,
            ):
                raise UnrecoverableError(
                    "PIX_TXID_CONFLICT", f"PIX charge {txid} exists with other terms"
                ) from None
            return existing
        return _deposit(body)

    async def deposit(self, deposit_id: str) -> PixDeposit:
        """The deposit's current state."""
        body = await _call(self._http(), "GET", f"{self._base_url}/v1/pix/deposits/{deposit_id}")
        return _deposit(body)

    async def deposit_by_txid(self, txid: str) -> PixDeposit:
        """The charge made with `txid`."""
        body = await _call(self._http(), "GET", f"{self._base_url}/v1/pix/txid/{txid}")
        return _deposit(body)

    async def cancel_deposit(self, deposit_id: str) -> PixDeposit:
        """Withdraw an unpaid charge; the charge's final state: CANCELLED (or EXPIRED, if its
        time ran out first), or a paid state when the payment came first (the partner refuses
        the cancel with `deposit_paid`: the charge is read and returned)."""
        try:
            body = await _call(
                self._http(), "POST", f"{self._base_url}/v1/pix/deposits/{deposit_id}/cancel"
            )
        except PartnerRefusal as exc:
            if exc.code != "deposit_paid":
                raise
            return await self.deposit(deposit_id)
        return _deposit(body)


def _deposit(body: dict[str, Any]) -> PixDeposit:
    with _shape("pix"):
        expires = body.get("expires_at")
        return PixDeposit(
            str(body["id"]),
            str(body.get("txid") or ""),
            Decimal(str(body["amount"])),
            str(body.get("tax_id") or ""),
            str(body.get("destination") or ""),
            datetime.fromisoformat(str(expires).replace("Z", "+00:00")) if expires else None,
            str(body["pix_copy_paste"]),
            str(body["status"]),
        )
