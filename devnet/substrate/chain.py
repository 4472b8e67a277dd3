"""The devnet chain: accounts, tokens, pools, a transaction pool and blocks.

Extrinsics are checked as a node checks them when they enter the pool: they must decode, be
signed (sr25519 or ed25519) over the exact signing payload (call, era, nonce, tip, spec and
transaction version, genesis hash, era block hash; blake2-256 hashed when over 256 bytes), carry
the account's next nonce (a stale nonce is "outdated"; a future one waits in the pool until the
gap fills) and be able to pay the fee. Blocks apply them in order; a failed call still pays its
fee and uses its nonce, and emits ExtrinsicFailed, as on Substrate.

Refusals carry the author RPC's codes (substrate's `client/rpc-api/src/author/error.rs`): 1010
"Invalid Transaction" with the reason in `data`; 1012 "Transaction is temporarily banned" for an
extrinsic the pool banned (one just included, or one it found invalid: a node bans both for a
while, 30 minutes by default; here for `ban_blocks` blocks); 1013 "Transaction Already Imported"
for one already in the pool; 1014 "Priority is too low" for another extrinsic of a signer and
nonce already in the pool (every devnet extrinsic has the same priority, so none replaces another).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from scalecodec.base import ScaleBytes
from substrateinterface import Keypair, KeypairType
from substrateinterface.utils.ss58 import ss58_decode
from xxhash import xxh64

from devnet.substrate.metadata import CURRENCIES, build_metadata, runtime_config

SPEC_VERSION = 1
TX_VERSION = 1
DECIMALS = {"Native": 12, "USDC": 6, "EURC": 12, "ARST": 12, "BRLA": 18}
FEE = 10**10  # 0.01 PEN per extrinsic
NABLA_ROUTER = bytes.fromhex("6d6f646c6e61626c61" + "00" * 23)  # "modlnabla" pallet account
PRICING_FILE = Path(__file__).resolve().parents[2] / "quote_service" / "pricing.json"
StellarPayout = Callable[[str, str, Decimal], Awaitable[None]]


class PoolRejection(Exception):
    """Refused at pool entry, with the author RPC's error code, message and data."""

    code = 0

    def __init__(self, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class InvalidTransaction(PoolRejection):
    """1010 "Invalid Transaction": the runtime's validity check failed (reason in `data`)."""

    code = 1010

    def __init__(self, data: str) -> None:
        super().__init__("Invalid Transaction", data)


class TemporarilyBanned(PoolRejection):
    """1012: the pool banned this extrinsic (just included, or found invalid)."""

    code = 1012

    def __init__(self) -> None:
        super().__init__("Transaction is temporarily banned")


class AlreadyImported(PoolRejection):
    """1013: this very extrinsic is in the pool already."""

    code = 1013

    def __init__(self, tx_hash: bytes) -> None:
        super().__init__("Transaction Already Imported", "0x" + tx_hash.hex())


class TooLowPriority(PoolRejection):
    """1014: another extrinsic with the same signer and nonce is in the pool."""

    code = 1014

    def __init__(self, old: int, new: int) -> None:
        super().__init__(
            f"Priority is too low: ({old} vs {new})",
            "The transaction has too low priority to replace another transaction already in "
            "the pool.",
        )


class CallFailed(Exception):
    """The call failed at dispatch (fee and nonce are still taken)."""

    def __init__(self, pallet: int, error: int) -> None:
        super().__init__(f"module {pallet} error {error}")
        self.pallet = pallet
        self.error = error


def blake2(data: bytes, size: int = 32) -> bytes:
    """BLAKE2b with the given digest size."""
    return hashlib.blake2b(data, digest_size=size).digest()


def twox(data: bytes, bits: int) -> bytes:
    """Substrate's xxHash (64 or 128 bit), little-endian."""
    return b"".join(
        xxh64(data, seed=i).intdigest().to_bytes(8, "little") for i in range(bits // 64)
    )


def to_units(amount: Decimal, currency: str) -> int:
    """Decimal amount → integer units of the currency."""
    return int(amount.scaleb(DECIMALS[currency]))


def from_units(units: int, currency: str) -> Decimal:
    """Integer units → Decimal amount."""
    return Decimal(units).scaleb(-DECIMALS[currency])


@dataclass
class Pool:
    """A constant-product pool in integer units."""

    token_in: str
    token_out: str
    reserve_in: int
    reserve_out: int
    fee: Decimal


@dataclass
class Block:
    """A produced block."""

    number: int
    hash: bytes
    parent: bytes
    extrinsics: list[str]
    events: bytes


@dataclass
class PendingExtrinsic:
    """An extrinsic that passed pool checks."""

    data: bytes
    hash: bytes
    signer: bytes
    nonce: int
    call: dict[str, Any]
    watchers: list[Callable[[dict[str, Any]], Awaitable[None]]] = field(default_factory=list)


class Chain:
    """State, pool and block production of the devnet."""

    def __init__(self, stellar_payout: StellarPayout | None = None, ban_blocks: int = 150) -> None:
        self.metadata_bytes, self.registry = build_metadata()
        self.config = runtime_config()
        self.config.ss58_format = 56
        self.metadata = self.config.create_scale_object(
            "MetadataVersioned", data=ScaleBytes(self.metadata_bytes)
        )
        self.metadata.decode()
        self.config.add_portable_registry(self.metadata)
        self.genesis = blake2(b"pendulum-pay-devnet-genesis")
        self.blocks: list[Block] = [
            Block(0, self.genesis, b"\0" * 32, [], self._encode("Vec<EventRecord>", []))
        ]
        self.native: dict[bytes, int] = {}
        self.nonces: dict[bytes, int] = {}
        self.tokens: dict[tuple[bytes, str], int] = {}
        self.allowances: dict[tuple[bytes, bytes, str], int] = {}
        self.assethub: dict[tuple[bytes, str], int] = {}
        self.pools = self._load_pools()
        self.ready: list[PendingExtrinsic] = []
        self.future: list[PendingExtrinsic] = []
        # Extrinsic hash → the last block number of its ban (included or found invalid).
        self.banned: dict[bytes, int] = {}
        self.ban_blocks = ban_blocks
        self.mints: list[tuple[bytes, str, int]] = []
        self.paused = False
        self.stellar_payout = stellar_payout
        self.payouts: list[tuple[str, str, Decimal]] = []

    # --- encoding helpers -----------------------------------------------------------------

    def _obj(self, name: str, data: bytes | None = None) -> Any:
        type_string = f"scale_info::{self.registry.ids[name]}"
        if data is None:
            return self.config.create_scale_object(type_string)
        return self.config.create_scale_object(type_string, data=ScaleBytes(data))

    def _encode(self, name: str, value: Any) -> bytes:
        return bytes(self._obj(name).encode(value).data)

    @staticmethod
    def account_id(address: str) -> bytes:
        """SS58 or 0x-hex account → 32 bytes."""
        return (
            bytes.fromhex(address[2:])
            if address.startswith("0x")
            else bytes.fromhex(ss58_decode(address))
        )

    def _load_pools(self) -> dict[tuple[str, str], Pool]:
        raw = json.loads(PRICING_FILE.read_text())["pools"]
        pools = {}
        for p in raw:
            a, b = p["token_a"], p["token_b"]
            fee = Decimal(p.get("swap_fee", "0"))
            ra, rb = to_units(Decimal(p["reserve_a"]), a), to_units(Decimal(p["reserve_b"]), b)
            pools[(a, b)] = Pool(a, b, ra, rb, fee)
            pools[(b, a)] = Pool(b, a, rb, ra, fee)
        return pools

    # --- reads -----------------------------------------------------------------------------

    @property
    def head(self) -> Block:
        """The latest block."""
        return self.blocks[-1]

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        """A block by hash."""
        return next((b for b in self.blocks if b.hash == block_hash), None)

    def next_nonce(self, who: bytes) -> int:
        """The account's nonce counting its ready extrinsics (system_accountNextIndex)."""
        return self.nonces.get(who, 0) + sum(1 for p in self.ready if p.signer == who)

    def storage(self, key: bytes, block: Block | None = None) -> bytes | None:
        """The value at a storage key (events at `block`, everything else latest)."""
        system, account, events, number = (
            twox(b"System", 128),
            twox(b"Account", 128),
            twox(b"Events", 128),
            twox(b"Number", 128),
        )
        if key == system + events:
            return (block or self.head).events
        if key == system + number:
            return (block or self.head).number.to_bytes(4, "little")
        if key.startswith(system + account) and len(key) == 32 + 16 + 32:
            who = key[-32:]
            if who not in self.native and who not in self.nonces:
                return None
            return self._encode(
                "AccountInfo",
                {
                    "nonce": self.nonces.get(who, 0),
                    "consumers": 0,
                    "providers": 1,
                    "sufficients": 0,
                    "data": {
                        "free": self.native.get(who, 0),
                        "reserved": 0,
                        "frozen": 0,
                        "flags": 0,
                    },
                },
            )
        if key.startswith(twox(b"Tokens", 128) + twox(b"Accounts", 128)):
            rest = key[32:]
            who, currency_index = rest[16:48], rest[56]
            currency = CURRENCIES[currency_index]
            units = self.tokens.get((who, currency))
            if units is None:
                return None
            return self._encode("TokenAccountData", {"free": units, "reserved": 0, "frozen": 0})
        return None

    # --- pool entry ------------------------------------------------------------------------

    def submit(self, hex_data: str) -> PendingExtrinsic:
        """Check an extrinsic as a node's pool does; raise a PoolRejection when it fails. Like
        a node, the pool bans an extrinsic it found invalid (not one it could not decode)."""
        data = bytes.fromhex(hex_data[2:] if hex_data.startswith("0x") else hex_data)
        tx_hash = blake2(data)
        if self.banned.get(tx_hash, -1) >= self.head.number:
            raise TemporarilyBanned()
        if any(p.hash == tx_hash for p in (*self.ready, *self.future)):
            raise AlreadyImported(tx_hash)
        try:
            extrinsic = self.config.create_scale_object(
                "Extrinsic", data=ScaleBytes(data), metadata=self.metadata
            )
            value = extrinsic.decode()
        except Exception as exc:
            raise InvalidTransaction(f"Could not decode: {exc}") from None
        try:
            signer, nonce = self._validate(extrinsic, value)
        except InvalidTransaction:
            self._ban(tx_hash)
            raise
        if any(p.signer == signer and p.nonce == nonce for p in (*self.ready, *self.future)):
            raise TooLowPriority(0, 0)
        pending = PendingExtrinsic(data, tx_hash, signer, nonce, value["call"])
        if nonce == self.next_nonce(signer):
            self.ready.append(pending)
            self._promote(signer)
        else:
            self.future.append(pending)
        return pending

    def _ban(self, tx_hash: bytes) -> None:
        self.banned[tx_hash] = self.head.number + self.ban_blocks

    def _validate(self, extrinsic: Any, value: dict[str, Any]) -> tuple[bytes, int]:
        """The runtime's validity check: the signer and nonce, or InvalidTransaction."""
        if not value.get("signature"):
            raise InvalidTransaction("Unsigned transactions are not accepted")
        signer = self.account_id(str(value["address"]))
        nonce = int(value["nonce"])
        if nonce < self.nonces.get(signer, 0):
            raise InvalidTransaction("Transaction is outdated")
        self._verify_signature(extrinsic, signer)
        if self.native.get(signer, 0) < FEE:
            raise InvalidTransaction("Inability to pay some fees (e.g. account balance too low)")
        return signer, nonce

    def _promote(self, signer: bytes) -> None:
        """Move future extrinsics whose nonce gap has filled into the ready queue."""
        moved = True
        while moved:
            moved = False
            for pending in list(self.future):
                if pending.signer == signer and pending.nonce == self.next_nonce(signer):
                    self.future.remove(pending)
                    self.ready.append(pending)
                    moved = True

    def _verify_signature(self, extrinsic: Any, signer: bytes) -> None:
        parts = extrinsic.value_object
        used = {
            name: bytes(parts[name].get_used_bytes()) for name in ("call", "era", "nonce", "tip")
        }
        extra = used["era"] + used["nonce"] + used["tip"]
        era_hash = self.genesis
        if used["era"] != b"\0":
            era = self.config.create_scale_object("Era", data=ScaleBytes(used["era"]))
            era.decode()
            # Checked as the runtime checks it, for the block to be built on the head (its
            # number is the head's plus one): past its era, the birth that number gives is not
            # the block the era was signed at (and may not exist yet).
            birth = era.birth(self.head.number + 1)
            if birth >= len(self.blocks):
                raise InvalidTransaction("Transaction has an ancient birth block")
            era_hash = self.blocks[birth].hash
        additional = (
            SPEC_VERSION.to_bytes(4, "little")
            + TX_VERSION.to_bytes(4, "little")
            + self.genesis
            + era_hash
        )
        payload = used["call"] + extra + additional
        if len(payload) > 256:
            payload = blake2(payload)
        signature = extrinsic.value["signature"]
        kind, sig_hex = (
            next(iter(signature.items())) if isinstance(signature, dict) else ("Sr25519", signature)
        )
        crypto = {"Sr25519": KeypairType.SR25519, "Ed25519": KeypairType.ED25519}.get(kind)
        if crypto is None:
            raise InvalidTransaction("Transaction has a bad signature")
        keypair = Keypair(public_key=signer, crypto_type=crypto, ss58_format=56)
        try:
            valid = keypair.verify(payload, bytes.fromhex(str(sig_hex).removeprefix("0x")))
        except Exception:
            valid = False
        if not valid:
            raise InvalidTransaction("Transaction has a bad signature")

    # --- block production -------------------------------------------------------------------

    async def produce_block(self, force: bool = False) -> Block | None:
        """Apply the ready extrinsics and queued mints into a new block (while blocks are
        paused, only when `force`d)."""
        if self.paused and not force:
            return None
        applied, records = [], []
        for index, pending in enumerate(list(self.ready)):
            self.ready.remove(pending)
            applied.append(pending)
            records.extend(await self._apply(index, pending))
        for who, currency, units in self.mints:
            self._credit(who, currency, units)
            event = (
                {"Balances": {"Minted": {"who": "0x" + who.hex(), "amount": units}}}
                if currency == "Native"
                else {
                    "Tokens": {
                        "Deposited": {
                            "currency_id": currency,
                            "who": "0x" + who.hex(),
                            "amount": units,
                        }
                    }
                }
            )
            records.append({"phase": "Finalization", "event": event, "topics": []})
        self.mints.clear()
        parent = self.head
        number = parent.number + 1
        block_hash = blake2(
            parent.hash + number.to_bytes(4, "little") + b"".join(p.hash for p in applied)
        )
        block = Block(
            number,
            block_hash,
            parent.hash,
            ["0x" + p.data.hex() for p in applied],
            self._encode("Vec<EventRecord>", records),
        )
        self.blocks.append(block)
        for pending in applied:
            self._ban(pending.hash)  # a node bans what it included: a replay is "banned"
        for pending in applied:
            for watcher in pending.watchers:
                await watcher({"inBlock": "0x" + block_hash.hex()})
                await watcher({"finalized": "0x" + block_hash.hex()})
        return block

    async def _apply(self, index: int, pending: PendingExtrinsic) -> list[dict[str, Any]]:
        who = pending.signer
        self.native[who] = self.native.get(who, 0) - FEE
        self.nonces[who] = self.nonces.get(who, 0) + 1
        info = {
            "weight": {"ref_time": 1_000_000, "proof_size": 0},
            "class": "Normal",
            "pays_fee": "Yes",
        }
        phase = {"ApplyExtrinsic": index}
        try:
            events = await self._dispatch(who, pending.call)
        except CallFailed as exc:
            error = {
                "Module": {
                    "index": exc.pallet,
                    "error": "0x" + exc.error.to_bytes(4, "little").hex(),
                }
            }
            return [
                {
                    "phase": phase,
                    "event": {
                        "System": {
                            "ExtrinsicFailed": {"dispatch_error": error, "dispatch_info": info}
                        }
                    },
                    "topics": [],
                }
            ]
        return [{"phase": phase, "event": e, "topics": []} for e in events] + [
            {
                "phase": phase,
                "event": {"System": {"ExtrinsicSuccess": {"dispatch_info": info}}},
                "topics": [],
            }
        ]

    def _debit(self, who: bytes, currency: str, units: int, pallet: int) -> None:
        if currency == "Native":
            if self.native.get(who, 0) < units:
                raise CallFailed(pallet, 2)  # InsufficientBalance
            self.native[who] -= units
        else:
            if self.tokens.get((who, currency), 0) < units:
                raise CallFailed(pallet, 2)
            self.tokens[(who, currency)] -= units

    def _credit(self, who: bytes, currency: str, units: int) -> None:
        if currency == "Native":
            self.native[who] = self.native.get(who, 0) + units
        else:
            self.tokens[(who, currency)] = self.tokens.get((who, currency), 0) + units

    async def _dispatch(self, who: bytes, call: dict[str, Any]) -> list[dict[str, Any]]:
        module, function, args = (
            call["call_module"],
            call["call_function"],
            {a["name"]: a["value"] for a in call["call_args"]},
        )
        hexed = "0x" + who.hex()
        if module == "System":
            return []
        if module == "Balances":
            dest = self.account_id(_address(args["dest"]))
            self._debit(who, "Native", int(args["value"]), 10)
            self._credit(dest, "Native", int(args["value"]))
            return [
                {
                    "Balances": {
                        "Transfer": {
                            "from": hexed,
                            "to": "0x" + dest.hex(),
                            "amount": int(args["value"]),
                        }
                    }
                }
            ]
        if module == "Tokens":
            dest = self.account_id(_address(args["dest"]))
            currency, amount = _currency(args["currency_id"]), int(args["amount"])
            self._debit(who, currency, amount, 11)
            self._credit(dest, currency, amount)
            return [
                {
                    "Tokens": {
                        "Transfer": {
                            "currency_id": currency,
                            "from": hexed,
                            "to": "0x" + dest.hex(),
                            "amount": amount,
                        }
                    }
                }
            ]
        if module == "Nabla" and function == "approve":
            spender = self.account_id(args["spender"])
            currency = _currency(args["currency"])
            self.allowances[(who, spender, currency)] = int(args["amount"])
            return [
                {
                    "Nabla": {
                        "Approval": {
                            "owner": hexed,
                            "spender": "0x" + spender.hex(),
                            "currency": currency,
                            "amount": int(args["amount"]),
                        }
                    }
                }
            ]
        if module == "Nabla":
            return self._swap(who, args)
        if module == "Spacewalk":
            currency, amount = _currency(args["asset"]), int(args["amount"])
            self._debit(who, currency, amount, 21)
            from stellar_sdk import StrKey

            destination = StrKey.encode_ed25519_public_key(
                bytes.fromhex(str(args["stellar_address"]).removeprefix("0x"))
            )
            value = from_units(amount, currency)
            self.payouts.append((destination, currency, value))
            if self.stellar_payout is not None:
                await self.stellar_payout(destination, currency, value)
            return [
                {
                    "Spacewalk": {
                        "RedeemExecuted": {
                            "redeemer": hexed,
                            "amount": amount,
                            "asset": currency,
                            "stellar_address": args["stellar_address"],
                        }
                    }
                }
            ]
        if module == "XTokens":
            currency, amount = _currency(args["currency_id"]), int(args["amount"])
            dest = self.account_id(args["dest"])
            self._debit(who, currency, amount, 22)
            self.assethub[(dest, currency)] = self.assethub.get((dest, currency), 0) + amount
            return [
                {
                    "XTokens": {
                        "TransferredToAssetHub": {
                            "sender": hexed,
                            "currency_id": currency,
                            "amount": amount,
                            "dest": "0x" + dest.hex(),
                        }
                    }
                }
            ]
        raise CallFailed(0, 0)

    def _swap(self, who: bytes, args: dict[str, Any]) -> list[dict[str, Any]]:
        path = [_currency(c) for c in args["path"]]
        amount_in, minimum = int(args["amount_in"]), int(args["amount_out_min"])
        if len(path) != 2 or (path[0], path[1]) not in self.pools:
            raise CallFailed(20, 0)  # NoPool
        if int(args["deadline"]) < self.head.number:
            raise CallFailed(20, 1)  # DeadlinePassed
        key = (who, NABLA_ROUTER, path[0])
        if self.allowances.get(key, 0) < amount_in:
            raise CallFailed(20, 2)  # InsufficientAllowance
        out = self.amount_out(path[0], path[1], amount_in)
        if out < minimum:
            raise CallFailed(20, 3)  # BelowMinimum
        self._debit(who, path[0], amount_in, 20)
        self.allowances[key] -= amount_in
        to = self.account_id(args["to"])
        self._credit(to, path[1], out)
        return [
            {
                "Nabla": {
                    "Swap": {
                        "sender": "0x" + who.hex(),
                        "amount_in": amount_in,
                        "amount_out": out,
                        "to": "0x" + to.hex(),
                    }
                }
            }
        ]

    def amount_out(self, token_in: str, token_out: str, amount_in: int) -> int:
        """What a swap of `amount_in` units yields now (Nabla prices against oracle-backed
        reserves: a swap does not move them; `set_pool` does, the way an oracle update would)."""
        pool = self.pools[(token_in, token_out)]
        effective = Decimal(amount_in) * (1 - pool.fee)
        return int(Decimal(pool.reserve_out) * effective / (Decimal(pool.reserve_in) + effective))

    def set_pool(
        self, token_in: str, token_out: str, reserve_in: Decimal, reserve_out: Decimal
    ) -> None:
        """Move a pool's reserves (both directions), as an oracle price update would."""
        pool = self.pools[(token_in, token_out)]
        pool.reserve_in, pool.reserve_out = (
            to_units(reserve_in, token_in),
            to_units(reserve_out, token_out),
        )
        mirror = self.pools[(token_out, token_in)]
        mirror.reserve_in, mirror.reserve_out = pool.reserve_out, pool.reserve_in

    def endow(self, address: str, currency: str, amount: Decimal) -> None:
        """A genesis balance (no event, no block)."""
        currency = "Native" if currency == "PEN" else currency
        self._credit(self.account_id(address), currency, to_units(amount, currency))

    def mint(self, address: str, currency: str, amount: Decimal) -> None:
        """Queue a faucet mint for the next block."""
        if currency == "PEN":
            currency = "Native"
        if currency not in DECIMALS:
            raise ValueError(f"unknown currency {currency}")
        self.mints.append((self.account_id(address), currency, to_units(amount, currency)))


def _address(value: Any) -> str:
    """MultiAddress value (`{"Id": ...}` or a plain account) → account string."""
    return str(value["Id"]) if isinstance(value, dict) else str(value)


def _currency(value: Any) -> str:
    return str(value) if not isinstance(value, dict) else next(iter(value))
