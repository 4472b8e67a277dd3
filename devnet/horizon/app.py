"""Horizon's HTTP API over the devnet ledger, so `stellar_sdk.Server` works against it.

Endpoints: `/`, `/accounts/{id}`, `/accounts/{id}/transactions`, `/accounts/{id}/payments`
(with `join=transactions`), `POST /transactions`, `/transactions/{hash}`, `/ledgers`,
`/fee_stats`, `/friendbot?addr=`, and the fault knobs of `devnet.faults`. Errors carry
Horizon's problem JSON (type, title, status, extras.result_codes, extras.result_xdr).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import web
from stellar_sdk import Keypair
from stellar_sdk import xdr as x

from devnet.faults import install_faults
from devnet.horizon.ledger import (
    AccountEntry,
    Ledger,
    TransactionRejected,
    money,
    result_xdr,
)

DEVNET_PASSPHRASE = "Pendulum Pay Devnet ; November 2026"
LEDGER_KEY = web.AppKey("ledger", Ledger)
CONFIG_KEY = web.AppKey("horizon_config", object)
PROBLEM = "https://stellar.org/horizon-errors/"

TX_CODES = {
    "tx_bad_seq": x.TransactionResultCode.txBAD_SEQ,
    "tx_bad_auth": x.TransactionResultCode.txBAD_AUTH,
    "tx_insufficient_fee": x.TransactionResultCode.txINSUFFICIENT_FEE,
    "tx_insufficient_balance": x.TransactionResultCode.txINSUFFICIENT_BALANCE,
    "tx_no_source_account": x.TransactionResultCode.txNO_ACCOUNT,
    "tx_too_early": x.TransactionResultCode.txTOO_EARLY,
    "tx_too_late": x.TransactionResultCode.txTOO_LATE,
    "tx_malformed": x.TransactionResultCode.txMALFORMED,
}


@dataclass
class HorizonConfig:
    """What the devnet starts with."""

    network_passphrase: str = DEVNET_PASSPHRASE
    ledger_close_s: float = 1.0
    friendbot: Keypair = field(default_factory=Keypair.random)
    friendbot_amount: Decimal = Decimal(10000)
    # Extra accounts that exist from genesis: public key → XLM balance.
    genesis: dict[str, Decimal] = field(default_factory=dict)
    # Path payment prices: ((send "CODE:ISSUER"|"native", dest ...) → dest per send).
    prices: dict[tuple[str, str], Decimal] = field(default_factory=dict)


def problem(
    status: int, kind: str, title: str, detail: str, extras: dict[str, object] | None = None
) -> web.Response:
    """Horizon's problem+json error."""
    body: dict[str, object] = {
        "type": PROBLEM + kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if extras is not None:
        body["extras"] = extras
    return web.json_response(body, status=status, content_type="application/problem+json")


def _ledger(request: web.Request) -> Ledger:
    return request.app[LEDGER_KEY]


def _page(request: web.Request, records: list[dict[str, object]]) -> web.Response:
    order = request.query.get("order", "asc")
    limit = min(int(request.query.get("limit", "10")), 200)
    items = list(reversed(records)) if order == "desc" else records
    cursor = request.query.get("cursor")
    if cursor:
        ids = [str(r.get("id")) for r in items]
        items = items[ids.index(cursor) + 1 :] if cursor in ids else []
    page = items[:limit]
    for record in page:
        record.setdefault("paging_token", record.get("id"))
    return web.json_response({"_links": {}, "_embedded": {"records": page}})


async def root(request: web.Request) -> web.Response:
    ledger = _ledger(request)
    return web.json_response(
        {
            "horizon_version": "devnet",
            "core_version": "devnet",
            "history_latest_ledger": ledger.sequence,
            "core_latest_ledger": ledger.sequence,
            "network_passphrase": ledger.network_passphrase,
            "current_protocol_version": 22,
        }
    )


async def account(request: web.Request) -> web.Response:
    body = _ledger(request).account_json(request.match_info["account_id"])
    if body is None:
        return problem(
            404, "not_found", "Resource Missing", "The resource at the url requested was not found."
        )
    return web.json_response(body)


async def account_transactions(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    records = [
        dict(t)
        for t in _ledger(request).transactions.values()
        if t["source_account"] == account_id or account_id in str(t["envelope_xdr"])
    ]
    return _page(request, records)


async def account_payments(request: web.Request) -> web.Response:
    ledger = _ledger(request)
    account_id = request.match_info["account_id"]
    records = [dict(p) for p in ledger.payments if account_id in (p["from"], p["to"])]
    if request.query.get("join") == "transactions":
        for record in records:
            record["transaction"] = ledger.transactions[str(record["transaction_hash"])]
    return _page(request, records)


async def submit(request: web.Request) -> web.Response:
    form = await request.post()
    envelope = str(form.get("tx", ""))
    ledger = _ledger(request)
    try:
        outcome = ledger.submit(envelope)
    except TransactionRejected as exc:
        code = TX_CODES.get(exc.code, x.TransactionResultCode.txMALFORMED)
        return problem(
            400,
            "transaction_failed",
            "Transaction Failed",
            "The transaction failed when submitted to the stellar network.",
            {
                "envelope_xdr": envelope,
                "result_xdr": result_xdr(exc.fee, code),
                "result_codes": {"transaction": exc.code},
            },
        )
    if not outcome.successful:
        return problem(
            400,
            "transaction_failed",
            "Transaction Failed",
            "The transaction failed when submitted to the stellar network.",
            {
                "envelope_xdr": envelope,
                "result_xdr": outcome.result_xdr,
                "hash": outcome.hash,
                "result_codes": {"transaction": "tx_failed", "operations": outcome.operation_codes},
            },
        )
    return web.json_response(outcome.record)


async def transaction(request: web.Request) -> web.Response:
    record = _ledger(request).transactions.get(request.match_info["tx_hash"])
    if record is None:
        return problem(
            404, "not_found", "Resource Missing", "The resource at the url requested was not found."
        )
    return web.json_response(record)


async def ledgers(request: web.Request) -> web.Response:
    ledger = _ledger(request)
    return _page(
        request,
        [
            {
                "id": str(ledger.sequence),
                "sequence": ledger.sequence,
                "base_fee_in_stroops": 100,
                "base_reserve_in_stroops": 5000000,
            }
        ],
    )


async def fee_stats(request: web.Request) -> web.Response:
    ledger = _ledger(request)
    stats = {k: "100" for k in ("min", "mode", "p10", "p50", "p90", "p95", "p99", "max")}
    return web.json_response(
        {
            "last_ledger": str(ledger.sequence),
            "last_ledger_base_fee": "100",
            "ledger_capacity_usage": "0.01",
            "fee_charged": stats,
            "max_fee": stats,
        }
    )


async def friendbot(request: web.Request) -> web.Response:
    """Create and fund a new account, the way testnet's friendbot does."""
    ledger = _ledger(request)
    address = request.query.get("addr", "")
    try:
        Keypair.from_public_key(address)
    except Exception:
        return problem(400, "bad_request", "Bad Request", "addr must be a Stellar public key")
    if address in ledger.accounts:
        return problem(
            400,
            "transaction_failed",
            "Transaction Failed",
            "account already funded",
            {"result_codes": {"transaction": "tx_failed", "operations": ["op_already_exists"]}},
        )
    config: HorizonConfig = request.app[CONFIG_KEY]  # type: ignore[assignment]
    from stellar_sdk import Account, TransactionBuilder

    bot = ledger.accounts[config.friendbot.public_key]
    tx = (
        TransactionBuilder(
            Account(bot.account_id, bot.sequence), ledger.network_passphrase, base_fee=100
        )
        .append_create_account_op(address, money(config.friendbot_amount))
        .set_timeout(60)
        .build()
    )
    tx.sign(config.friendbot)
    outcome = ledger.submit(tx.to_xdr())
    return web.json_response(outcome.record)


async def _close_ledgers(app: web.Application) -> AsyncIterator[None]:
    config: HorizonConfig = app[CONFIG_KEY]  # type: ignore[assignment]

    async def tick() -> None:
        while True:
            await asyncio.sleep(config.ledger_close_s)
            app[LEDGER_KEY].close_ledger()

    task = asyncio.ensure_future(tick())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: HorizonConfig | None = None) -> web.Application:
    """The Horizon stand-in for `config` (defaults: devnet passphrase, 1 s ledgers)."""
    config = config or HorizonConfig()
    ledger = Ledger(config.network_passphrase)
    ledger.create_root(config.friendbot, Decimal("100000000000"))
    for public_key, balance in config.genesis.items():
        ledger.accounts[public_key] = AccountEntry(public_key, balance, ledger.sequence << 32)
    ledger.prices.update(config.prices)
    app = web.Application()
    app[LEDGER_KEY] = ledger
    app[CONFIG_KEY] = config
    install_faults(app)
    app.cleanup_ctx.append(_close_ledgers)
    app.router.add_get("/", root)
    app.router.add_get("/accounts/{account_id}", account)
    app.router.add_get("/accounts/{account_id}/transactions", account_transactions)
    app.router.add_get("/accounts/{account_id}/payments", account_payments)
    app.router.add_post("/transactions", submit)
    app.router.add_get("/transactions/{tx_hash}", transaction)
    app.router.add_get("/ledgers", ledgers)
    app.router.add_get("/fee_stats", fee_stats)
    app.router.add_get("/friendbot", friendbot)
    return app
