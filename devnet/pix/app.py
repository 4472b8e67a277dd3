"""The PIX partner stand-in.

`POST /v1/pix/deposits` {amount, tax_id, destination} issues a PIX deposit with a "copia e
cola" payload (EMV BR Code with its CRC16); `POST /dev/pix/{id}/pay` is the bank telling the
partner it was paid; the partner then mints BRLA to the Pendulum destination by calling the
Substrate devnet's JSON-RPC `dev_mint` [address, "BRLA", amount], retrying until it succeeds.
Status: PENDING → PAID → MINTED (MINT_FAILED while retrying).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import httpx
from aiohttp import web

from devnet.faults import install_faults
from ramp_service.domain.ramp import is_cpf_or_cnpj  # the same check digits a bank applies


@dataclass
class PixConfig:
    """Where to mint."""

    substrate_rpc_url: str
    mint_retry_s: float = 0.2


@dataclass
class Deposit:
    """One PIX deposit."""

    id: str
    amount: Decimal
    tax_id: str
    destination: str
    status: str = "PENDING"
    mint_error: str = ""

    def json(self) -> dict[str, object]:
        """The partner's deposit object."""
        return {
            "id": self.id,
            "amount": f"{self.amount:.2f}",
            "currency": "BRL",
            "tax_id": self.tax_id,
            "destination": self.destination,
            "status": self.status,
            "mint_error": self.mint_error,
            "pix_copy_paste": br_code(self.id, self.amount),
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


def br_code(deposit_id: str, amount: Decimal) -> str:
    """A static PIX "copia e cola" payload for the deposit (EMV MPM with CRC16)."""
    account = _tlv("00", "br.gov.bcb.pix") + _tlv("01", f"brla-devnet-{deposit_id[:8]}@pix.example")
    payload = (
        _tlv("00", "01")
        + _tlv("26", account)
        + _tlv("52", "0000")
        + _tlv("53", "986")
        + _tlv("54", f"{amount:.2f}")
        + _tlv("58", "BR")
        + _tlv("59", "BRLA DEVNET")
        + _tlv("60", "SAO PAULO")
        + _tlv("62", _tlv("05", deposit_id.replace("-", "")[:25]))
        + "6304"
    )
    return payload + f"{crc16_ccitt(payload.encode()):04X}"


DEPOSITS = web.AppKey("deposits", dict)
CONFIG = web.AppKey("pix_config", PixConfig)
TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("mint_tasks", set)


async def create_deposit(request: web.Request) -> web.Response:
    body = await request.json()
    try:
        amount = Decimal(str(body.get("amount", "")))
    except InvalidOperation:
        amount = Decimal(0)
    if amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        return web.json_response(
            {"error": "amount must be positive with at most 2 decimals"}, status=400
        )
    if not is_cpf_or_cnpj(str(body.get("tax_id", ""))):
        return web.json_response({"error": "tax_id must be a valid CPF or CNPJ"}, status=400)
    if not body.get("destination"):
        return web.json_response({"error": "destination is required"}, status=400)
    deposit = Deposit(str(uuid.uuid4()), amount, str(body["tax_id"]), str(body["destination"]))
    request.app[DEPOSITS][deposit.id] = deposit
    return web.json_response(deposit.json(), status=201)


async def get_deposit(request: web.Request) -> web.Response:
    deposit = request.app[DEPOSITS].get(request.match_info["deposit_id"])
    if deposit is None:
        return web.json_response({"error": "deposit not found"}, status=404)
    return web.json_response(deposit.json())


async def pay(request: web.Request) -> web.Response:
    """The bank reports the PIX payment; minting starts in the background."""
    deposit = request.app[DEPOSITS].get(request.match_info["deposit_id"])
    if deposit is None:
        return web.json_response({"error": "deposit not found"}, status=404)
    if deposit.status == "PENDING":
        deposit.status = "PAID"
        task = asyncio.ensure_future(_mint(request.app[CONFIG], deposit))
        request.app[TASKS].add(task)
        task.add_done_callback(request.app[TASKS].discard)
    return web.json_response(deposit.json())


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
    app[TASKS] = set()
    install_faults(app)
    app.cleanup_ctx.append(_cancel_mints)
    app.router.add_post("/v1/pix/deposits", create_deposit)
    app.router.add_get("/v1/pix/deposits/{deposit_id}", get_deposit)
    app.router.add_post("/dev/pix/{deposit_id}/pay", pay)
    return app
