"""The PIX partner stand-in.

`POST /v1/pix/deposits` {amount, tax_id, destination, txid?, expires_at?} issues a PIX charge
with a "copia e cola" payload (EMV BR Code with its CRC16). As in PIX itself, the receiver
chooses the charge's `txid` (26 to 35 letters and digits): a create with a txid already used
and the same body answers the existing charge (200, so a retried create makes no second
charge), with another body 409 {"error": "txid_conflict"}; `GET /v1/pix/txid/{txid}` reads the
charge by its txid. `expires_at` (RFC 3339, UTC) ends the charge: a PENDING charge past it
reads EXPIRED and can no longer be paid. `POST /v1/pix/deposits/{id}/cancel` withdraws a
PENDING charge (CANCELLED; again: the same answer; an EXPIRED one stays EXPIRED); a charge
already paid answers 409 {"error": "deposit_paid"}.

`POST /dev/pix/{id}/pay` is the bank telling the partner it was paid (409
{"error": "deposit_expired"} or {"error": "deposit_cancelled"} once the charge is over); the
partner then mints BRLA to the Pendulum destination by calling the Substrate devnet's JSON-RPC
`dev_mint` [address, "BRLA", amount], retrying until it succeeds. `POST /dev/clock`
{"advance_s": N} moves the partner's clock forward (expiry without waiting for it).
Status: PENDING → PAID → MINTED (MINT_FAILED while retrying); PENDING → EXPIRED or CANCELLED.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import httpx
from aiohttp import web

from devnet.faults import install_faults
from ramp_service.domain.ramp import is_cpf_or_cnpj  # the same check digits a bank applies

TXID = re.compile(r"[A-Za-z0-9]{26,35}")  # what PIX allows a receiver-chosen txid to be
PAID_STATES = frozenset({"PAID", "MINTED", "MINT_FAILED"})


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass
class PixConfig:
    """Where to mint, and the partner's clock (tests share theirs with it)."""

    substrate_rpc_url: str
    mint_retry_s: float = 0.2
    clock: Callable[[], datetime] = utc_now


@dataclass
class Deposit:
    """One PIX charge."""

    id: str
    txid: str
    amount: Decimal
    tax_id: str
    destination: str
    expires_at: datetime | None = None
    status: str = "PENDING"
    mint_error: str = ""

    def terms(self) -> tuple[object, ...]:
        """What a create with the same txid must repeat to get this charge back."""
        return (self.amount, self.tax_id, self.destination, self.expires_at)

    def settle(self, now: datetime) -> None:
        """A PENDING charge past its expiry is over: it reads EXPIRED from then on."""
        if self.status == "PENDING" and self.expires_at is not None and now >= self.expires_at:
            self.status = "EXPIRED"

    def json(self) -> dict[str, object]:
        """The partner's deposit object."""
        return {
            "id": self.id,
            "txid": self.txid,
            "amount": f"{self.amount:.2f}",
            "currency": "BRL",
            "tax_id": self.tax_id,
            "destination": self.destination,
            "expires_at": self.expires_at.isoformat().replace("+00:00", "Z")
            if self.expires_at
            else None,
            "status": self.status,
            "mint_error": self.mint_error,
            "pix_copy_paste": br_code(self.txid, self.amount),
        }


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, as the EMV BR Code uses."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def br_code(txid: str, amount: Decimal) -> str:
    """A static PIX "copia e cola" payload for the charge (EMV MPM with CRC16)."""
    account = _tlv("00", "br.gov.bcb.pix") + _tlv("01", f"brla-devnet-{txid[:8]}@pix.example")
    payload = (
        _tlv("00", "01")
        + _tlv("26", account)
        + _tlv("52", "0000")
        + _tlv("53", "986")
        + _tlv("54", f"{amount:.2f}")
        + _tlv("58", "BR")
        + _tlv("59", "BRLA DEVNET")
        + _tlv("60", "SAO PAULO")
        + _tlv("62", _tlv("05", txid.replace("-", "")[:25]))
        + "6304"
    )
    return payload + f"{crc16_ccitt(payload.encode()):04X}"


DEPOSITS = web.AppKey("deposits", dict)
BY_TXID = web.AppKey("deposits_by_txid", dict)
CONFIG = web.AppKey("pix_config", PixConfig)
CLOCK_OFFSET = web.AppKey("clock_offset", list)
TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("mint_tasks", set)


def _error(error: str, status: int) -> web.Response:
    return web.json_response({"error": error}, status=status)


def _now(app: web.Application) -> datetime:
    return app[CONFIG].clock() + app[CLOCK_OFFSET][0]


def _found(request: web.Request, deposit: Deposit | None) -> Deposit | None:
    """The charge as it stands now (expired once its time is up)."""
    if deposit is not None:
        deposit.settle(_now(request.app))
    return deposit


def _expiry(value: object) -> datetime | None:
    """`expires_at` of a create: an RFC 3339 time in UTC, or absent (never expires)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("expires_at must be an RFC 3339 time") from None
    if parsed.utcoffset() != timedelta(0):
        raise ValueError("expires_at must be in UTC")
    return parsed


async def create_deposit(request: web.Request) -> web.Response:
    body = await request.json()
    try:
        amount = Decimal(str(body.get("amount", "")))
    except InvalidOperation:
        amount = Decimal(0)
    if amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        return _error("amount must be positive with at most 2 decimals", 400)
    if not is_cpf_or_cnpj(str(body.get("tax_id", ""))):
        return _error("tax_id must be a valid CPF or CNPJ", 400)
    if not body.get("destination"):
        return _error("destination is required", 400)
    txid = str(body.get("txid") or uuid.uuid4().hex)
    if not TXID.fullmatch(txid):
        return _error("txid must be 26 to 35 letters or digits", 400)
    try:
        expires_at = _expiry(body.get("expires_at"))
    except ValueError as exc:
        return _error(str(exc), 400)
    deposit = Deposit(
        str(uuid.uuid4()), txid, amount, str(body["tax_id"]), str(body["destination"]), expires_at
    )
    existing = _found(request, request.app[BY_TXID].get(txid))
    if existing is not None:
        if existing.terms() != deposit.terms():
            return _error("txid_conflict", 409)
        return web.json_response(existing.json())
    deposit.settle(_now(request.app))
    request.app[DEPOSITS][deposit.id] = request.app[BY_TXID][txid] = deposit
    return web.json_response(deposit.json(), status=201)


async def get_deposit(request: web.Request) -> web.Response:
    deposit = _found(request, request.app[DEPOSITS].get(request.match_info["deposit_id"]))
    if deposit is None:
        return _error("deposit not found", 404)
    return web.json_response(deposit.json())


async def get_by_txid(request: web.Request) -> web.Response:
    deposit = _found(request, request.app[BY_TXID].get(request.match_info["txid"]))
    if deposit is None:
        return _error("deposit not found", 404)
    return web.json_response(deposit.json())


async def cancel(request: web.Request) -> web.Response:
    """Withdraw a charge nobody paid: it can no longer be paid."""
    deposit = _found(request, request.app[DEPOSITS].get(request.match_info["deposit_id"]))
    if deposit is None:
        return _error("deposit not found", 404)
    if deposit.status in PAID_STATES:
        return _error("deposit_paid", 409)
    if deposit.status == "PENDING":
        deposit.status = "CANCELLED"
    return web.json_response(deposit.json())


async def pay(request: web.Request) -> web.Response:
    """The bank reports the PIX payment; minting starts in the background."""
    deposit = _found(request, request.app[DEPOSITS].get(request.match_info["deposit_id"]))
    if deposit is None:
        return _error("deposit not found", 404)
    if deposit.status in ("EXPIRED", "CANCELLED"):
        return _error(f"deposit_{deposit.status.lower()}", 409)
    if deposit.status == "PENDING":
        deposit.status = "PAID"
        task = asyncio.ensure_future(_mint(request.app[CONFIG], deposit))
        request.app[TASKS].add(task)
        task.add_done_callback(request.app[TASKS].discard)
    return web.json_response(deposit.json())


async def advance_clock(request: web.Request) -> web.Response:
    """Move the partner's clock forward by `advance_s` seconds."""
    body = await request.json()
    request.app[CLOCK_OFFSET][0] += timedelta(seconds=float(body.get("advance_s", 0)))
    return web.json_response({"now": _now(request.app).isoformat()})


async def _mint(config: PixConfig, deposit: Deposit) -> None:
    """Call dev_mint until the chain accepts it."""
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "dev_mint",
        "params": [deposit.destination, "BRLA", f"{deposit.amount:f}"],
    }
    async with httpx.AsyncClient(timeout=5) as client:
        while deposit.status != "MINTED":
            try:
                response = await client.post(config.substrate_rpc_url, json=request)
                answer = response.json()
                if response.status_code == 200 and "error" not in answer:
                    deposit.status, deposit.mint_error = "MINTED", ""
                    return
                deposit.status, deposit.mint_error = (
                    "MINT_FAILED",
                    str(answer.get("error", response.status_code)),
                )
            except (httpx.HTTPError, ValueError) as exc:
                deposit.status, deposit.mint_error = "MINT_FAILED", type(exc).__name__
            await asyncio.sleep(config.mint_retry_s)


async def _cancel_mints(app: web.Application) -> AsyncIterator[None]:
    yield
    tasks: set[asyncio.Task[None]] = app[TASKS]
    for task in list(tasks):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(config: PixConfig) -> web.Application:
    """The PIX partner for `config`."""
    app = web.Application()
    app[CONFIG] = config
    app[DEPOSITS] = {}
    app[BY_TXID] = {}
    app[CLOCK_OFFSET] = [timedelta(0)]
    app[TASKS] = set()
    install_faults(app)
    app.cleanup_ctx.append(_cancel_mints)
    app.router.add_post("/v1/pix/deposits", create_deposit)
    app.router.add_get("/v1/pix/deposits/{deposit_id}", get_deposit)
    app.router.add_post("/v1/pix/deposits/{deposit_id}/cancel", cancel)
    app.router.add_get("/v1/pix/txid/{txid}", get_by_txid)
    app.router.add_post("/dev/pix/{deposit_id}/pay", pay)
    app.router.add_post("/dev/clock", advance_clock)
    return app
