"""The anchor stand-in: interactive withdrawals (SEP-24 shape) settled from Horizon.

`POST /sep24/transactions/withdraw/interactive` opens a withdrawal and answers the Stellar
account and text memo to pay; a watcher polls the anchor account's payments on Horizon
(`/accounts/{id}/payments?join=transactions`) and, when a payment with that memo, asset and at
least the amount arrives, moves the withdrawal pending_user_transfer_start → pending_anchor →
completed (the fiat payout). `GET /sep24/transaction?id=` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import httpx
from aiohttp import web

from devnet.faults import install_faults


@dataclass
class AnchorConfig:
    """Where the anchor receives and how it watches."""

    horizon_url: str
    account: str  # the anchor's Stellar account (the EURC/ARST issuer)
    assets: tuple[str, ...] = ("EURC", "ARST")
    poll_interval_s: float = 0.2


@dataclass
class Withdrawal:
    """One SEP-24 withdrawal."""

    id: str
    asset_code: str
    amount: Decimal
    destination: str
    memo: str
    status: str = "pending_user_transfer_start"
    stellar_transaction_id: str = ""
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    completed_at: str = ""

    def json(self, account: str) -> dict[str, object]:
        """SEP-24 transaction object."""
        return {
            "id": self.id,
            "kind": "withdrawal",
            "status": self.status,
            "amount_in": f"{self.amount:f}",
            "amount_in_asset": self.asset_code,
            "amount_out": f"{self.amount:f}" if self.status == "completed" else "",
            "withdraw_anchor_account": account,
            "withdraw_memo": self.memo,
            "withdraw_memo_type": "text",
            "to": self.destination,
            "stellar_transaction_id": self.stellar_transaction_id,
            "started_at": self.started_at,
            "completed_at": self.completed_at or None,
        }


STATE_KEY = web.AppKey("withdrawals", dict)
CONFIG = web.AppKey("anchor_config", AnchorConfig)


async def start_withdrawal(request: web.Request) -> web.Response:
    body = await request.json()
    config = request.app[CONFIG]
    try:
        amount = Decimal(str(body.get("amount", "")))
    except InvalidOperation:
        amount = Decimal(0)
    if body.get("asset_code") not in config.assets or amount <= 0 or not body.get("dest"):
        return web.json_response(
            {"error": "asset_code, a positive amount and dest are required"}, status=400
        )
    withdrawal = Withdrawal(
        str(uuid.uuid4()), body["asset_code"], amount, str(body["dest"]), secrets.token_hex(8)
    )
    request.app[STATE_KEY][withdrawal.id] = withdrawal
    return web.json_response(
        {
            "type": "interactive_customer_info_needed",
            "id": withdrawal.id,
            "url": f"/sep24/interactive/{withdrawal.id}",
            "transaction": withdrawal.json(config.account),
        }
    )


async def transaction(request: web.Request) -> web.Response:
    withdrawal = request.app[STATE_KEY].get(request.query.get("id", ""))
    if withdrawal is None:
        return web.json_response({"error": "transaction not found"}, status=404)
    return web.json_response({"transaction": withdrawal.json(request.app[CONFIG].account)})


async def _watch(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    seen: set[str] = set()

    async def poll() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                await asyncio.sleep(config.poll_interval_s)
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    response = await client.get(
                        f"{config.horizon_url}/accounts/{config.account}/payments",
                        params={"join": "transactions", "limit": "200", "order": "desc"},
                    )
                    if response.status_code == 200:
                        settle(app, response.json()["_embedded"]["records"], seen)

    task = asyncio.ensure_future(poll())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def settle(app: web.Application, payments: list[dict[str, object]], seen: set[str]) -> None:
    """Complete withdrawals whose memo payment arrived."""
    config = app[CONFIG]
    by_memo = {w.memo: w for w in app[STATE_KEY].values() if w.status != "completed"}
    for payment in payments:
        tx = payment.get("transaction")
        memo = str(tx.get("memo", "")) if isinstance(tx, dict) else ""
        if payment["id"] in seen or payment.get("to") != config.account or memo not in by_memo:
            continue
        seen.add(str(payment["id"]))
        withdrawal = by_memo[memo]
        if (
            payment.get("asset_code") == withdrawal.asset_code
            and Decimal(str(payment["amount"])) >= withdrawal.amount
        ):
            withdrawal.stellar_transaction_id = str(payment["transaction_hash"])
            withdrawal.status = "completed"  # the fiat payout to `destination`
            withdrawal.completed_at = datetime.now(UTC).isoformat()


def create_app(config: AnchorConfig) -> web.Application:
    """The anchor for `config`."""
    app = web.Application()
    app[CONFIG] = config
    app[STATE_KEY] = {}
    install_faults(app)
    app.cleanup_ctx.append(_watch)
    app.router.add_post("/sep24/transactions/withdraw/interactive", start_withdrawal)
    app.router.add_get("/sep24/transaction", transaction)
    return app
