"""Substrate JSON-RPC over HTTP (POST) and WebSocket on one port, for the devnet chain.

Implements what substrate-interface uses (chain_*, state_*, system_*, author_submitExtrinsic,
author_submitAndWatchExtrinsic with author_extrinsicUpdate notifications), plus dev methods:
`dev_mint [address, currency, amount]`, `dev_pauseBlocks`, `dev_resumeBlocks`,
`dev_assethubBalance [address, currency]`, `dev_setPool [token_in, token_out, reserve_in,
reserve_out]` (an oracle price move), and `nabla_getAmountOut [token_in, token_out, units]`
(the router's quote, as Nabla's `getAmountOut` contract query answers it), and
`dev_blockAfter [method, first_param?]`: after the node next answers `method` (with that first
parameter, when given), it seals one block, even while blocks are paused, before it sends that
answer, so the block lands between a client's read and its next call (a race, made certain).
Pool rejections answer with the author RPC's codes, as a node does (see `chain.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import WSMsgType, web

from devnet.faults import install_faults
from devnet.substrate.chain import (
    SPEC_VERSION,
    TX_VERSION,
    Chain,
    PoolRejection,
    StellarPayout,
    from_units,
)

CHAIN_KEY = web.AppKey("chain", Chain)
CONFIG_KEY = web.AppKey("substrate_config", object)
# Armed `dev_blockAfter` triggers: (method, first parameter or None).
BLOCK_AFTER_KEY = web.AppKey("block_after", list)


@dataclass
class SubstrateConfig:
    """Block time and the Stellar side of the bridge."""

    block_time_s: float = 0.5
    stellar_payout: StellarPayout | None = None
    # Balances at genesis: address → {currency: amount} (the platform's funding account).
    endowed: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    # A WebSocket ping every this many seconds; a client that has not answered within half of
    # it is disconnected. An idle synchronous client (substrate-interface reads only while it
    # waits for an answer) is thus dropped after 1.5x this, as nodes and proxies drop idle ones.
    ws_heartbeat_s: float = 30.0
    # How many blocks the pool keeps an included or invalid extrinsic banned (a node: 30 min).
    ban_blocks: int = 150


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _header(chain: Chain, number: int) -> dict[str, Any]:
    block = chain.blocks[number]
    return {
        "parentHash": _hex(block.parent),
        "number": hex(block.number),
        "stateRoot": _hex(b"\1" * 32),
        "extrinsicsRoot": _hex(b"\2" * 32),
        "digest": {"logs": []},
    }


def _block_number(chain: Chain, block_hash: str | None) -> int:
    if not block_hash:
        return chain.head.number
    block = chain.block_by_hash(bytes.fromhex(block_hash.removeprefix("0x")))
    if block is None:
        raise RpcError(4003, f"Block {block_hash} not found")
    return block.number


async def handle(
    app: web.Application, method: str, params: list[Any], subscribe: Any = None
) -> Any:
    """Answer one JSON-RPC call."""
    chain = app[CHAIN_KEY]
    if method == "rpc_methods":
        return {"methods": sorted(HANDLED)}
    if method == "system_name":
        return "pendulum-pay-devnet"
    if method == "system_version":
        return "1.0.0"
    if method == "system_chain":
        return "Pendulum Devnet"
    if method == "system_properties":
        return {"ss58Format": 56, "tokenDecimals": 12, "tokenSymbol": "PEN"}
    if method in ("chain_getHead", "chain_getFinalizedHead", "chain_getFinalisedHead"):
        return _hex(chain.head.hash)
    if method == "chain_getBlockHash":
        number = params[0] if params else None
        if number is None:
            return _hex(chain.head.hash)
        number = int(number, 16) if isinstance(number, str) else int(number)
        return _hex(chain.blocks[number].hash) if number < len(chain.blocks) else None
    if method == "chain_getHeader":
        return _header(chain, _block_number(chain, params[0] if params else None))
    if method == "chain_getBlock":
        number = _block_number(chain, params[0] if params else None)
        return {
            "block": {
                "header": _header(chain, number),
                "extrinsics": chain.blocks[number].extrinsics,
            },
            "justifications": None,
        }
    if method in ("state_getRuntimeVersion", "chain_getRuntimeVersion"):
        return {
            "specName": "pendulum",
            "implName": "pendulum-pay-devnet",
            "authoringVersion": 1,
            "specVersion": SPEC_VERSION,
            "implVersion": 1,
            "transactionVersion": TX_VERSION,
            "stateVersion": 1,
            "apis": [],
        }
    if method == "state_getMetadata":
        return _hex(chain.metadata_bytes)
    if method in ("state_getStorage", "state_getStorageAt"):
        block = chain.blocks[_block_number(chain, params[1] if len(params) > 1 else None)]
        value = chain.storage(bytes.fromhex(params[0].removeprefix("0x")), block)
        return _hex(value) if value is not None else None
    if method == "state_queryStorageAt":
        block = chain.blocks[_block_number(chain, params[1] if len(params) > 1 else None)]
        changes = []
        for key in params[0]:
            value = chain.storage(bytes.fromhex(key.removeprefix("0x")), block)
            changes.append([key, _hex(value) if value is not None else None])
        return [{"block": _hex(block.hash), "changes": changes}]
    if method == "system_accountNextIndex":
        return chain.next_nonce(chain.account_id(params[0]))
    if method == "author_submitExtrinsic":
        return _hex(_submit(chain, params[0]).hash)
    if method == "author_submitAndWatchExtrinsic":
        if subscribe is None:
            raise RpcError(-32601, "Subscriptions need a WebSocket connection")
        pending = _submit(chain, params[0])
        subscription = uuid.uuid4().hex
        pending.watchers.append(lambda result: subscribe(subscription, result))
        return subscription
    if method == "author_unwatchExtrinsic":
        return True
    if method == "dev_mint":
        try:
            chain.mint(params[0], params[1], Decimal(str(params[2])))
        except (ValueError, InvalidOperation, IndexError) as exc:
            raise RpcError(-32602, f"dev_mint: {exc}") from None
        return True
    if method == "nabla_getAmountOut":
        try:
            return str(chain.amount_out(str(params[0]), str(params[1]), int(params[2])))
        except (KeyError, ValueError, IndexError) as exc:
            raise RpcError(-32602, f"nabla_getAmountOut: no pool or bad amount ({exc})") from None
    if method == "dev_setPool":
        try:
            chain.set_pool(
                str(params[0]), str(params[1]), Decimal(str(params[2])), Decimal(str(params[3]))
            )
        except (KeyError, ValueError, InvalidOperation, IndexError) as exc:
            raise RpcError(-32602, f"dev_setPool: {exc}") from None
        return True
    if method == "dev_blockAfter":
        app[BLOCK_AFTER_KEY].append((str(params[0]), params[1] if len(params) > 1 else None))
        return True
    if method == "dev_pauseBlocks":
        chain.paused = True
        return True
    if method == "dev_resumeBlocks":
        chain.paused = False
        return True
    if method == "dev_assethubBalance":
        who = chain.account_id(params[0])
        return str(from_units(chain.assethub.get((who, params[1]), 0), params[1]))
    raise RpcError(-32601, f"Method not found: {method}")


HANDLED = {
    "rpc_methods",
    "system_name",
    "system_version",
    "system_chain",
    "system_properties",
    "chain_getHead",
    "chain_getFinalizedHead",
    "chain_getBlockHash",
    "chain_getHeader",
    "chain_getBlock",
    "state_getRuntimeVersion",
    "chain_getRuntimeVersion",
    "state_getMetadata",
    "state_getStorage",
    "state_getStorageAt",
    "state_queryStorageAt",
    "system_accountNextIndex",
    "author_submitExtrinsic",
    "author_submitAndWatchExtrinsic",
    "author_unwatchExtrinsic",
    "dev_mint",
    "nabla_getAmountOut",
    "dev_setPool",
    "dev_blockAfter",
    "dev_pauseBlocks",
    "dev_resumeBlocks",
    "dev_assethubBalance",
}


def _submit(chain: Chain, data: str) -> Any:
    try:
        return chain.submit(data)
    except PoolRejection as exc:
        raise RpcError(exc.code, exc.message, exc.data) from None


async def _block_after(app: web.Application, method: str, params: list[Any]) -> None:
    """Seal one block now if a `dev_blockAfter` trigger matches this call (then disarm it)."""
    for armed in app[BLOCK_AFTER_KEY]:
        if armed[0] == method and (armed[1] is None or (params and params[0] == armed[1])):
            app[BLOCK_AFTER_KEY].remove(armed)
            await app[CHAIN_KEY].produce_block(force=True)
            return


async def _answer(
    app: web.Application, request: dict[str, Any], subscribe: Any = None
) -> dict[str, Any]:
    try:
        method, params = request.get("method", ""), request.get("params") or []
        result = await handle(app, method, params, subscribe)
        await _block_after(app, method, params)
        return {"jsonrpc": "2.0", "id": request.get("id"), "result": result}
    except Exception as exc:  # a node answers every request, even one it cannot serve
        if not isinstance(exc, RpcError):
            exc = RpcError(-32603, "Internal error", f"{type(exc).__name__}: {exc}")
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            error["data"] = exc.data
        return {"jsonrpc": "2.0", "id": request.get("id"), "error": error}


async def rpc(request: web.Request) -> web.StreamResponse:
    """HTTP POST JSON-RPC, or a WebSocket upgrade on GET."""
    if request.method == "GET":
        return await websocket(request)
    return web.json_response(await _answer(request.app, await request.json()))


async def websocket(request: web.Request) -> web.WebSocketResponse:
    config: SubstrateConfig = request.app[CONFIG_KEY]  # type: ignore[assignment]
    ws = web.WebSocketResponse(heartbeat=config.ws_heartbeat_s)
    await ws.prepare(request)

    async def subscribe(subscription: str, result: dict[str, Any]) -> None:
        if not ws.closed:
            await ws.send_str(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "method": "author_extrinsicUpdate",
                        "params": {"subscription": subscription, "result": result},
                    }
                )
            )

    async for message in ws:
        if message.type != WSMsgType.TEXT:
            continue
        await ws.send_str(
            json.dumps(await _answer(request.app, json.loads(message.data), subscribe))
        )
    return ws


async def _produce_blocks(app: web.Application) -> AsyncIterator[None]:
    config: SubstrateConfig = app[CONFIG_KEY]  # type: ignore[assignment]

    async def loop() -> None:
        while True:
            await asyncio.sleep(config.block_time_s)
            await app[CHAIN_KEY].produce_block()

    task = asyncio.ensure_future(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: SubstrateConfig | None = None) -> web.Application:
    """The Substrate stand-in."""
    config = config or SubstrateConfig()
    app = web.Application()
    chain = Chain(config.stellar_payout, config.ban_blocks)
    for address, balances in config.endowed.items():
        for currency, amount in balances.items():
            chain.endow(address, currency, amount)
    app[CHAIN_KEY] = chain
    app[CONFIG_KEY] = config
    app[BLOCK_AFTER_KEY] = []
    install_faults(app)
    app.cleanup_ctx.append(_produce_blocks)
    app.router.add_route("*", "/", rpc)
    return app
