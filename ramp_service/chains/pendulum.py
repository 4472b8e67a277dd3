"""The Pendulum adapter: calls, signing payloads, verification and submission (substrate-interface).

substrate-interface is synchronous (a WebSocket client), so network work runs in a thread with a
timeout; one client per call keeps threads from sharing a socket. Failures are classified for the
processor: unreachable/timeouts and the pool's "already imported" (1013), "temporarily banned"
(1012) and "priority too low" (1014) are recoverable; invalid transactions (1010) and failed
dispatches are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import queue
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import sr25519
from scalecodec.base import ScaleBytes
from substrateinterface import Keypair, KeypairType, SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException
from substrateinterface.utils.hasher import blake2_128_concat, xxh128
from substrateinterface.utils.ss58 import ss58_decode
from websocket import WebSocketException, WebSocketTimeoutException

from ramp_service.chains.errors import RecoverableError, UnrecoverableError
from service_kit.errors import FieldViolation, InvalidInput

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_RUNTIME_INIT_LOCK = threading.Lock()
RUNTIME_RECHECK_S = 60.0
RUNTIME_RETRY_S = (
    5.0  # after a failed recheck, the loaded runtime is used this long before the next try
)
# A client idle longer than this gets a new WebSocket before its next call. Nodes and proxies
# drop idle connections (the devnet's node after 45 s: a ping every 30 s that substrate-
# interface, reading only while it waits for an answer, never answers), and the next call on
# such a socket failed with a broken pipe: after a quiet minute every pooled client failed one
# register, and the metadata client's runtime recheck failed every one of them (seen in the
# bench). A new socket costs a millisecond or two to a node on loopback or the LAN; to a remote
# wss:// node, a TLS handshake.
IDLE_RECONNECT_S = 10.0
# What a dropped or refused connection raises through substrate-interface and websocket-client.
CONNECTION_ERRORS = (ConnectionError, OSError, WebSocketException)
log = logging.getLogger("pendulum")
SS58_FORMAT = 56
SYSTEM_ACCOUNT_PREFIX = xxh128(b"System") + xxh128(b"Account")
DECIMALS = {"PEN": 12, "USDC": 6, "EURC": 12, "ARST": 12, "BRLA": 18}
NABLA_ROUTER = "0x6d6f646c6e61626c61" + "00" * 23


@dataclass(frozen=True)
class IssuedCall:
    """A call issued for an ephemeral to sign, with everything needed to check the answer."""

    call_hex: str
    signer: str
    nonce: int
    signing_payload_hex: str
    # Mortality: None for immortal, else {"period": blocks, "current": block number at issue}.
    era: dict[str, int] | None = None


@dataclass(frozen=True)
class Inclusion:
    """An extrinsic found in a block."""

    extrinsic_hash: str
    block_hash: str
    success: bool
    error: str


@dataclass(frozen=True)
class Lookup:
    """What a search for an extrinsic saw: its inclusion, if found, and the signer's applied
    nonce read once, *before* any block was searched (None when searched by hash alone).

    Decide with this one reading: an extrinsic included after it lies in the blocks searched
    after it, so "not found" with a nonce already used proves the nonce went elsewhere, and a
    nonce still unused proves nothing was applied. A second, later reading is a race: the
    extrinsic can land between the two and look like someone else's."""

    inclusion: Inclusion | None
    applied_nonce: int | None


def units(amount: Decimal, currency: str) -> int:
    """Decimal amount → chain units."""
    return int(amount.scaleb(DECIMALS[currency]))


def invalid_presigned(reason: str, description: str) -> InvalidInput:
    """A presigned extrinsic that does not match what was issued."""
    return InvalidInput(reason, description, [FieldViolation("presigned_txs", description)])


def _serialized(method: F) -> F:
    """Run `method` holding the metadata client's lock."""

    @functools.wraps(method)
    def wrapper(self: PendulumChain, *args: Any, **kwargs: Any) -> Any:
        with self._offline_lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _sr25519_valid(signer: Keypair, payload: bytes, signature: bytes) -> bool:
    """Whether `signature` is `signer`'s sr25519 signature of exactly `payload`, as the chain
    checks it. Not `Keypair.verify`, which also accepts a signature of `<Bytes>payload</Bytes>`
    (what a wallet's signRaw makes): the chain refuses that one, after the ramp started. The
    library raises ValueError for bytes that are no sr25519 signature at all (an Ed25519 one,
    whose last byte lacks schnorrkel's marker; zeros; an ECDSA signature's 65 bytes): those are
    bad signatures like any other, not an error of ours."""
    try:
        return bool(sr25519.verify(bytes(signature), bytes(payload), signer.public_key))
    except (ValueError, TypeError):
        return False


class PendulumChain:
    """Builds, verifies and submits Pendulum extrinsics."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._offline: SubstrateInterface | None = None
        # The metadata client is shared and substrate-interface is not thread-safe.
        self._offline_lock = threading.RLock()
        # Connected, initialized clients for network work, one per thread at a time, each with
        # when it was last used (monotonic).
        self._idle: queue.SimpleQueue[tuple[SubstrateInterface, float]] = queue.SimpleQueue()
        # Whether our byte layout of signed extrinsics matches scalecodec's (learned once).
        self._layout_ok: bool | None = None
        # Likewise for immortal signing payloads; the genesis hash they include.
        self._payload_ok: bool | None = None
        self._genesis: bytes | None = None
        self._checked_at = 0.0

    def _client(self) -> SubstrateInterface:
        # A connect or a read waits at most the adapter's timeout (websocket-client waits
        # forever by default: a node dropping packets would hold the metadata lock for minutes).
        return SubstrateInterface(
            url=self.url, ss58_format=SS58_FORMAT, ws_options={"timeout": self._timeout_s}
        )

    def _initialized_client(self) -> SubstrateInterface:
        """A connected client with its runtime loaded. scalecodec's type registries are not
        safe to build from two threads at once (seen: "Decoder class for Compact<u32> not
        found" under concurrent registers), so runtime loading is serialized process-wide."""
        client = self._client()
        with _RUNTIME_INIT_LOCK:
            client.init_runtime()
        return client

    def _metadata_client(self) -> SubstrateInterface:
        """A client kept for metadata-only work (composing, encoding, verifying). Its runtime
        version is re-checked at most once a minute (a runtime upgrade changes call indices),
        not on every call (that is three round trips each)."""
        now = time.monotonic()
        if self._offline is not None:
            if now - self._checked_at > RUNTIME_RECHECK_S:
                self._recheck_runtime(self._offline, now)  # may drop a half-updated client
            elif _stale(self._offline):
                # Mostly offline work, but a genesis hash or block number is fetched now and
                # then, over a socket the node may have dropped long ago.
                with contextlib.suppress(*CONNECTION_ERRORS):  # no node: offline work goes on
                    _reconnect(self._offline)
        if self._offline is None:
            self._offline = self._initialized_client()
            self._checked_at, self._genesis = now, None
        return self._offline

    def _recheck_runtime(self, client: SubstrateInterface, now: float) -> None:
        """Reload the runtime version over a new socket (the kept one has sat idle since the last
        check). A node that cannot be reached leaves the loaded runtime in use, and the check is
        tried again RUNTIME_RETRY_S later: composing and verifying need no node, and an upgrade
        is picked up once the node answers."""
        loaded = (client.runtime_version, client.transaction_version)
        try:
            _reconnect(client)
            with _RUNTIME_INIT_LOCK:
                client.init_runtime()
        except (*CONNECTION_ERRORS, SubstrateRequestException) as exc:
            log.warning(
                "runtime recheck failed; using the loaded runtime",
                extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
            )
            if (client.runtime_version, client.transaction_version) != loaded:
                # init_runtime sets the versions before it fetches the metadata: a failure in
                # between leaves a new version over old call indices. Start from a new client.
                _drop(client)
                self._offline = None
            self._checked_at = now - RUNTIME_RECHECK_S + RUNTIME_RETRY_S
            return
        self._checked_at, self._genesis = now, None

    def _compose(self, module: str, function: str, params: dict[str, Any]) -> Any:
        client = self._metadata_client()
        # At the runtime already loaded: compose_call would otherwise re-fetch the head,
        # its header and the runtime version.
        return client.compose_call(module, function, params, block_hash=client.block_hash)

    def _immortal_payload(self, call_hex: str, nonce: int) -> str:
        """The signing payload of an immortal extrinsic, built from bytes: call, era, nonce,
        tip, spec and transaction versions, genesis hash twice; blake2-256 above 256 bytes."""
        client = self._metadata_client()
        if self._genesis is None:
            self._genesis = bytes.fromhex(str(client.get_block_hash(0))[2:])
        payload = (
            bytes.fromhex(call_hex[2:])
            + b"\x00"
            + _compact(nonce)
            + _compact(0)
            + int(client.runtime_version).to_bytes(4, "little")
            + int(client.transaction_version).to_bytes(4, "little")
            + self._genesis
            + self._genesis
        )
        if len(payload) > 256:
            payload = hashlib.blake2b(payload, digest_size=32).digest()
        return "0x" + payload.hex()

    def warm_up(self, clients: int) -> None:
        """Load the runtime once for the metadata client and `clients` pooled clients now, so
        the first calls after a start do not each wait for a metadata decode (they are
        serialized process-wide: a cold burst of registers would queue behind one another)."""
        with self._offline_lock:
            self._metadata_client()
        # Each with when it last used its socket: loading a runtime takes a while, and the
        # first client has sat idle through the others' loading.
        ready = [(self._initialized_client(), time.monotonic()) for _ in range(clients)]
        for client in ready:
            self._idle.put(client)

    def close(self) -> None:
        """Close every connection, all at once: a websocket close waits up to 3 s for the
        node's close frame, and a node that is itself shutting down sends none (five pooled
        clients closed one by one held a service's shutdown for 15 s)."""
        clients: list[SubstrateInterface] = []
        with self._offline_lock:
            if self._offline is not None:
                clients.append(self._offline)
                self._offline = None
        while True:
            try:
                clients.append(self._idle.get_nowait()[0])
            except queue.Empty:
                break
        if clients:
            with ThreadPoolExecutor(max_workers=len(clients)) as pool:
                list(pool.map(lambda client: client.close(), clients))

    async def _run(self, work: Callable[[SubstrateInterface], T]) -> T:
        def job() -> T:
            try:
                client, last_used = self._idle.get_nowait()
            except queue.Empty:
                client, last_used = self._initialized_client(), time.monotonic()
            healthy = False
            try:
                if time.monotonic() - last_used > IDLE_RECONNECT_S or _stale(client):
                    _reconnect(client)  # the node may have dropped the idle socket
                result = work(client)
                healthy = True
                return result
            except SubstrateRequestException:
                healthy = True  # an answer, not a broken connection
                raise
            finally:
                if healthy:
                    self._idle.put((client, time.monotonic()))
                else:
                    _drop(client)

        try:
            return await asyncio.wait_for(asyncio.to_thread(job), self._timeout_s)
        except TimeoutError as exc:
            raise RecoverableError("PENDULUM_TIMEOUT", f"no answer in {self._timeout_s}s") from exc
        except CONNECTION_ERRORS as exc:
            raise _network_error(exc) from exc
        except SubstrateRequestException as exc:
            raise _classified(exc) from exc

    async def off_loop(self, work: Callable[[], T]) -> T:
        """Run metadata work (composing, issuing, signing) in a thread: it holds the metadata
        lock and now and then fetches from the node (a genesis hash, a block number, a runtime
        recheck). A lost connection is PENDULUM_UNREACHABLE, as for every network call."""
        try:
            return await asyncio.to_thread(work)
        except CONNECTION_ERRORS as exc:
            raise _network_error(exc) from exc

    # --- calls ---------------------------------------------------------------------------

    @_serialized
    def token_transfer(self, dest: str, currency: str, amount: Decimal) -> Any:
        """Tokens.transfer (or Balances for PEN)."""
        if currency == "PEN":
            return self._compose(
                "Balances", "transfer_keep_alive", {"dest": dest, "value": units(amount, "PEN")}
            )
        return self._compose(
            "Tokens",
            "transfer",
            {"dest": dest, "currency_id": currency, "amount": units(amount, currency)},
        )

    @_serialized
    def swap_approve(self, currency: str, amount: Decimal) -> Any:
        """Allow the Nabla router to take `amount`."""
        return self._compose(
            "Nabla",
            "approve",
            {"spender": NABLA_ROUTER, "currency": currency, "amount": units(amount, currency)},
        )

    @_serialized
    def swap(
        self,
        currency_in: str,
        currency_out: str,
        amount_in: Decimal,
        min_out: Decimal,
        to: str,
        deadline_block: int,
    ) -> Any:
        """Swap exact `amount_in`, refusing less than `min_out` (the presigned hard minimum)."""
        return self._compose(
            "Nabla",
            "swap_exact_tokens_for_tokens",
            {
                "amount_in": units(amount_in, currency_in),
                "amount_out_min": units(min_out, currency_out),
                "path": [currency_in, currency_out],
                "to": to,
                "deadline": deadline_block,
            },
        )

    @_serialized
    def bridge_redeem(self, currency: str, amount: Decimal, stellar_public_key_hex: str) -> Any:
        """Spacewalk-style redeem of `amount` to a Stellar account."""
        return self._compose(
            "Spacewalk",
            "request_redeem",
            {
                "amount": units(amount, currency),
                "asset": currency,
                "stellar_address": stellar_public_key_hex,
            },
        )

    @_serialized
    def xcm_to_assethub(self, currency: str, amount: Decimal, dest: str) -> Any:
        """Send tokens to an AssetHub account."""
        return self._compose(
            "XTokens",
            "transfer_to_assethub",
            {"currency_id": currency, "amount": units(amount, currency), "dest": dest},
        )

    # --- presigning ----------------------------------------------------------------------

    @_serialized
    def issue(
        self, call: Any, signer: str, nonce: int, era_period: int | None = None
    ) -> IssuedCall:
        """The exact bytes a wallet signs for `call` by `signer` at `nonce`, immortal or valid
        for `era_period` blocks from now."""
        client = self._metadata_client()
        era = None
        if era_period is not None:
            era = {"period": era_period, "current": int(client.get_block_number(None))}
        elif self._payload_ok:
            payload_hex = self._immortal_payload(str(call.data), nonce)
            return IssuedCall(str(call.data), signer, nonce, payload_hex, None)
        payload = client.generate_signature_payload(
            call=call, era=dict(era) if era else "00", nonce=nonce
        )
        reference = "0x" + bytes(payload.data).hex()
        if era is None and self._payload_ok is None:
            # Trust the byte-built payload only once it matched substrate-interface's.
            self._payload_ok = self._immortal_payload(str(call.data), nonce) == reference
        return IssuedCall(str(call.data), signer, nonce, reference, era)

    @_serialized
    def _era_bytes(self, era: dict[str, int] | None) -> bytes:
        era_obj = self._metadata_client().runtime_config.create_scale_object("Era")
        return bytes(era_obj.encode(dict(era) if era else "00").data)

    def _layout(self, issued: IssuedCall) -> tuple[bytes, bytes]:
        """The signed extrinsic's bytes before and after the sr25519 signature: version,
        MultiAddress::Id of the signer, then era, nonce, zero tip and the issued call."""
        head = b"\x84\x00" + bytes.fromhex(ss58_decode(issued.signer))
        era = b"\x00" if issued.era is None else self._era_bytes(issued.era)
        tail = era + _compact(issued.nonce) + _compact(0) + bytes.fromhex(issued.call_hex[2:])
        return head, tail

    def _framed(self, issued: IssuedCall, signature: bytes) -> bytes:
        head, tail = self._layout(issued)
        body = head + b"\x01" + signature + tail
        return _compact(len(body)) + body

    def assemble(self, issued: IssuedCall, signature_hex: str) -> str:
        """The signed extrinsic from a detached sr25519 signature over the issued payload.

        Built from bytes; the first assembly is also built by scalecodec and the byte layout is
        only trusted from then on if both agree (else scalecodec builds every one)."""
        try:
            signature = bytes.fromhex(signature_hex.removeprefix("0x"))
        except ValueError:
            raise invalid_presigned("PRESIGNED_TX_MALFORMED", "the signature is not hex") from None
        if len(signature) != 64:
            raise invalid_presigned("PRESIGNED_TX_MALFORMED", "an sr25519 signature is 64 bytes")
        if self._layout_ok is None:
            reference = self._assemble_scale(issued, signature)
            self._layout_ok = reference == "0x" + self._framed(issued, signature).hex()
            return reference
        if self._layout_ok:
            return "0x" + self._framed(issued, signature).hex()
        return self._assemble_scale(issued, signature)

    def verify_presigned(self, issued: IssuedCall, signed_hex: str) -> str:
        """The signed extrinsic, checked against what was issued; raises InvalidInput.

        Fast path: the bytes must be exactly the issued extrinsic around a valid sr25519
        signature of the signer. Anything else is decoded to say what is wrong."""
        try:
            data = bytes.fromhex(signed_hex.removeprefix("0x"))
        except ValueError:
            data = b""
        head, _ = self._layout(issued)
        at = {0: 1, 1: 2, 2: 4}.get(data[0] & 3, 0) if data else 0
        signature = data[at + len(head) + 1 : at + len(head) + 65] if at else b""
        if self._layout_ok and len(signature) == 64 and data == self._framed(issued, signature):
            signer = Keypair(
                ss58_address=issued.signer,
                crypto_type=KeypairType.SR25519,
                ss58_format=SS58_FORMAT,
            )
            payload = bytes.fromhex(issued.signing_payload_hex.removeprefix("0x"))
            if _sr25519_valid(signer, payload, signature):
                return "0x" + data.hex()  # one spelling, whatever the client's hex looked like
        verified = self._verify_decoded(issued, signed_hex)
        if self._layout_ok is None and len(signature) == 64:
            self._layout_ok = data == self._framed(issued, signature)
        return verified

    @_serialized
    def _assemble_scale(self, issued: IssuedCall, signature: bytes) -> str:
        """The signed extrinsic built by scalecodec (the reference the byte layout is checked
        against)."""
        client = self._metadata_client()
        call = client.runtime_config.create_scale_object(
            "Call", data=ScaleBytes(issued.call_hex), metadata=client.metadata
        )
        call.decode()
        signer = Keypair(
            ss58_address=issued.signer, crypto_type=KeypairType.SR25519, ss58_format=SS58_FORMAT
        )
        extrinsic = client.create_signed_extrinsic(
            call,
            signer,
            era=dict(issued.era) if issued.era else None,
            nonce=issued.nonce,
            signature=signature,
        )
        return str(extrinsic.data)

    @_serialized
    def _verify_decoded(self, issued: IssuedCall, signed_hex: str) -> str:
        """Decode with scalecodec and name what differs (the slow path, for rejections)."""
        client = self._metadata_client()
        try:
            extrinsic = client.runtime_config.create_scale_object(
                "Extrinsic", data=ScaleBytes(signed_hex), metadata=client.metadata
            )
            value = extrinsic.decode()
        except Exception:
            raise invalid_presigned(
                "PRESIGNED_TX_MALFORMED", "not a signed Pendulum extrinsic"
            ) from None
        parts = extrinsic.value_object
        signer = Keypair(
            ss58_address=issued.signer, crypto_type=KeypairType.SR25519, ss58_format=SS58_FORMAT
        )
        if value.get("address") != issued.signer:
            raise invalid_presigned(
                "PRESIGNED_TX_WRONG_SIGNER", f"must be signed by {issued.signer}"
            )
        if int(value.get("nonce", -1)) != issued.nonce:
            raise invalid_presigned("PRESIGNED_TX_MISMATCH", f"nonce must be {issued.nonce}")
        if "0x" + bytes(parts["call"].get_used_bytes()).hex() != issued.call_hex or bytes(
            parts["era"].get_used_bytes()
        ) != self._era_bytes(issued.era):
            raise invalid_presigned("PRESIGNED_TX_MISMATCH", "the call differs from the one issued")
        signature = value["signature"]
        sig_hex = next(iter(signature.values())) if isinstance(signature, dict) else signature
        payload = bytes.fromhex(issued.signing_payload_hex.removeprefix("0x"))
        sig_bytes = bytes.fromhex(str(sig_hex).removeprefix("0x"))
        if not _sr25519_valid(signer, payload, sig_bytes):
            raise invalid_presigned(
                "PRESIGNED_TX_BAD_SIGNATURE", f"no valid signature of {issued.signer}"
            )
        # What decodes the same can still differ where the checks above do not look (a tip,
        # the signature's type byte, trailing bytes): the chain would refuse those, after
        # the ramp started. Only the issued extrinsic around this signature is accepted.
        reference = self._assemble_scale(issued, sig_bytes)
        if bytes.fromhex(reference.removeprefix("0x")) != bytes.fromhex(
            signed_hex.removeprefix("0x")
        ):
            raise invalid_presigned(
                "PRESIGNED_TX_MISMATCH",
                "differs from the issued extrinsic (tip, signature type or extra bytes)",
            )
        return reference

    # --- network -------------------------------------------------------------------------

    async def submit(self, signed_hex: str) -> Inclusion:
        """Submit and wait for inclusion."""

        def work(client: SubstrateInterface) -> Inclusion:
            extrinsic = client.runtime_config.create_scale_object(
                "Extrinsic", data=ScaleBytes(signed_hex), metadata=client.metadata
            )
            extrinsic.decode()
            receipt = client.submit_extrinsic(extrinsic, wait_for_inclusion=True)
            return Inclusion(
                receipt.extrinsic_hash,
                receipt.block_hash,
                receipt.is_success,
                str(receipt.error_message or ""),
            )

        return await self._run(work)

    async def find(
        self,
        extrinsic_hash: str,
        signer: str | None = None,
        nonce: int | None = None,
        recent_blocks: int = 200,
        since_block: int | None = None,
        match_slot: bool = True,
        until_block: int | None = None,
    ) -> Lookup:
        """The extrinsic by hash, or by (signer, nonce) when given and `match_slot`, in the
        blocks since `since_block` (the head when it was first submitted), else in the recent
        blocks. With a signer and nonce, the signer's applied nonce is read first (see
        `Lookup`); while it has not passed `nonce` the answer is "not found" at once (nothing
        used that nonce: the extrinsic is in no block), and the blocks are read oldest first,
        where an extrinsic sent at `since_block` lands; a mortal one lands nowhere after
        `until_block` (its era's end), which bounds the search however far the head has gone.
        The scan stops at this call's deadline (PENDULUM_TIMEOUT) instead of running on in its
        thread."""

        def work(client: SubstrateInterface) -> Lookup | _Overdue:
            deadline = time.monotonic() + self._timeout_s * 0.9
            applied = None
            if signer is not None and nonce is not None:
                stored = client.rpc_request("state_getStorage", [account_storage_key(signer)])
                if "error" in stored:
                    raise SubstrateRequestException(stored["error"])
                applied = _applied_nonce(stored["result"])
                if applied <= nonce:
                    return Lookup(None, applied)
            head = client.get_block_number(None)
            oldest = since_block if since_block is not None else head - recent_blocks
            newest = head if until_block is None else min(head, until_block)
            for number in range(max(oldest, 1), newest + 1):
                if time.monotonic() > deadline:
                    return OVERDUE
                block_hash = client.get_block_hash(number)
                block = client.get_block(block_hash)
                for extrinsic in block["extrinsics"]:
                    value = extrinsic.value
                    same_hash = (
                        extrinsic.extrinsic_hash
                        and "0x" + extrinsic.extrinsic_hash.hex() == extrinsic_hash
                    )
                    same_slot = (
                        match_slot
                        and signer is not None
                        and value.get("address") == signer
                        and value.get("nonce") == nonce
                    )
                    if same_hash or same_slot:
                        receipt = client.retrieve_extrinsic_by_hash(
                            block_hash, "0x" + extrinsic.extrinsic_hash.hex()
                        )
                        inclusion = Inclusion(
                            "0x" + extrinsic.extrinsic_hash.hex(),
                            block_hash,
                            receipt.is_success,
                            str(receipt.error_message or ""),
                        )
                        return Lookup(inclusion, applied)
            return Lookup(None, applied)

        found = await self._run(work)
        if isinstance(found, _Overdue):
            raise RecoverableError(
                "PENDULUM_TIMEOUT", f"searching blocks since {since_block} took too long"
            )
        return found

    async def head(self) -> int:
        """The latest block number."""
        return await self._run(lambda c: int(c.get_block_number(None)))

    async def finalized_head(self) -> int:
        """The latest finalized block's number: a mortal era born there cannot be reorganized
        away (born at the best block, a reorg would void the signature for good)."""
        return await self._run(lambda c: int(c.get_block_number(c.get_chain_finalised_head())))

    async def amount_out(self, currency_in: str, currency_out: str, amount_in: Decimal) -> Decimal:
        """What the Nabla router would give for `amount_in` now (its getAmountOut query)."""
        params = [currency_in, currency_out, units(amount_in, currency_in)]

        def work(client: SubstrateInterface) -> int:
            answer = client.rpc_request("nabla_getAmountOut", params)
            if "error" in answer:
                raise SubstrateRequestException(answer["error"])
            return int(answer["result"])

        return Decimal(await self._run(work)).scaleb(-DECIMALS[currency_out])

    @_serialized
    def sign_with(
        self, call: Any, keypair: Keypair, nonce: int, era: dict[str, int] | None = None
    ) -> str:
        """A server-signed extrinsic (funding account) at `nonce`: immortal, or mortal when
        `era` ({"period", "current"}) is given, valid only in the blocks from `current` to
        `current + period`."""
        client = self._metadata_client()
        return str(client.create_signed_extrinsic(call, keypair, era=era, nonce=nonce).data)

    async def nonce(self, address: str) -> int:
        """The account's next nonce."""
        return await self._run(lambda c: int(c.get_account_nonce(address) or 0))

    async def freshness(self, address: str) -> tuple[int, Decimal]:
        """The account's next nonce (its extrinsics waiting in the pool counted) and its free
        PEN, for register's freshness check: two RPCs on one client in one thread hop. The
        balance is read as raw storage at the best block and decoded by byte layout
        (`_free_units`): `query` would first fetch the chain head, its header and the runtime
        version, three more round trips per call."""
        key = account_storage_key(address)

        def work(client: SubstrateInterface) -> tuple[int, Decimal]:
            nonce = client.rpc_request("system_accountNextIndex", [address])
            stored = client.rpc_request("state_getStorage", [key])
            for answer in (nonce, stored):
                if "error" in answer:
                    raise SubstrateRequestException(answer["error"])
            free = _free_units(stored["result"])
            return int(nonce["result"]), Decimal(free).scaleb(-DECIMALS["PEN"])

        return await self._run(work)

    async def balance(self, address: str, currency: str) -> Decimal:
        """Free balance in `currency` (PEN or a Tokens currency)."""

        def work(client: SubstrateInterface) -> Decimal:
            if currency == "PEN":
                free = client.query("System", "Account", [address]).value["data"]["free"]
            else:
                free = client.query("Tokens", "Accounts", [address, currency]).value["free"]
            return Decimal(int(free)).scaleb(-DECIMALS[currency])

        return await self._run(work)


def account_storage_key(address: str) -> str:
    """The storage key of `address`'s System.Account entry (a Blake2_128Concat map)."""
    who = bytes.fromhex(ss58_decode(address))
    return "0x" + (SYSTEM_ACCOUNT_PREFIX + blake2_128_concat(who)).hex()


class _Overdue:
    """A block search that ran out of its call's time (its client is still sound)."""


OVERDUE = _Overdue()


def _applied_nonce(stored: str | None) -> int:
    """The nonce from a System.Account value (AccountInfo's first field, u32 little-endian):
    how many of the account's extrinsics are applied. No entry: none."""
    if stored is None:
        return 0
    return int.from_bytes(bytes.fromhex(stored.removeprefix("0x"))[:4], "little")


def _free_units(stored: str | None) -> int:
    """Free balance (planck) from a System.Account value: AccountInfo is nonce, consumers,
    providers and sufficients (u32 each), then AccountData, whose first field is `free` (u128,
    little-endian). No entry: nothing held."""
    if stored is None:
        return 0
    raw = bytes.fromhex(stored.removeprefix("0x"))
    return int.from_bytes(raw[16:32], "little")


def _network_error(exc: BaseException) -> RecoverableError:
    """A failed network call as the processor and register report it: the socket's own read
    timeout (the adapter's timeout, in the call's thread) is PENDULUM_TIMEOUT, as when the
    loop's deadline fires first (which of the two comes first is a race on a busy machine);
    a lost or refused connection is PENDULUM_UNREACHABLE."""
    if isinstance(exc, WebSocketTimeoutException | TimeoutError):
        return RecoverableError("PENDULUM_TIMEOUT", f"no answer in time: {str(exc)[:160]}")
    return RecoverableError("PENDULUM_UNREACHABLE", str(exc)[:200])


def _stale(client: SubstrateInterface) -> bool:
    """Whether an idle client's socket is closed or has something unasked for waiting (the
    node's close, an end of stream, or a ping it will drop us for not answering): one poll()
    with no wait. For TLS it sees the socket, not what the TLS layer has already read (an
    idle client has nothing there). A peer that vanished without a word is not seen here:
    IDLE_RECONNECT_S covers that for pooled clients."""
    sock = client.websocket.sock if client.websocket is not None else None
    if sock is None:
        return True
    try:
        poller = select.poll()  # not select(): it fails for descriptors above 1023
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed: no file descriptor
        return True


def _reconnect(client: SubstrateInterface) -> None:
    """A new WebSocket for `client`, keeping its loaded runtime; the old socket is closed at
    once (a closing handshake on a socket the node dropped would wait seconds for nothing)."""
    old = client.websocket
    client.connect_websocket()
    if old is not None:
        with contextlib.suppress(Exception):
            old.shutdown()


def _drop(client: SubstrateInterface) -> None:
    """Close a client whose connection failed, without a closing handshake."""
    if client.websocket is not None:
        with contextlib.suppress(Exception):
            client.websocket.shutdown()


def _compact(n: int) -> bytes:
    """SCALE compact encoding of a non-negative integer."""
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 2).to_bytes(4, "little")
    raw = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(raw) - 4) << 2) | 3]) + raw


def extrinsic_hash(signed_hex: str) -> str:
    """The extrinsic's hash as nodes and explorers name it (blake2-256 of its bytes)."""
    data = bytes.fromhex(signed_hex.removeprefix("0x"))
    return "0x" + hashlib.blake2b(data, digest_size=32).hexdigest()


# The author RPC's pool errors (substrate `client/rpc-api/src/author/error.rs`).
POOL_INVALID_TX = 1010
# Answers that say nothing is wrong with the extrinsic itself: it is in the pool already
# (1013), the pool banned it because it was just included or found invalid a moment ago (1012),
# or another extrinsic of the same signer and nonce is in the pool (1014). Only a look at the
# chain later (by hash, by signer and nonce) can tell what became of it.
IN_POOL = "PENDULUM_ALREADY_IMPORTED"
BANNED = "PENDULUM_TEMPORARILY_BANNED"
SLOT_TAKEN = "PENDULUM_PRIORITY_TOO_LOW"
POOL_ANSWERS = {1012: BANNED, 1013: IN_POOL, 1014: SLOT_TAKEN}
# The extrinsic's nonce is used already (1010 "Transaction is outdated").
OUTDATED = "PENDULUM_INVALID_TRANSACTION_IS_OUTDATED"
# Submit answers after which the next step is to reconcile, never to give up.
RECONCILE_LATER = frozenset({IN_POOL, BANNED, SLOT_TAKEN, OUTDATED})


def _classified(exc: SubstrateRequestException) -> RecoverableError | UnrecoverableError:
    detail = exc.args[0] if exc.args else {}
    code = detail.get("code") if isinstance(detail, dict) else None
    if code in POOL_ANSWERS:
        return RecoverableError(POOL_ANSWERS[code], str(detail)[:300])
    if isinstance(detail, dict) and code == POOL_INVALID_TX:
        reason = f"PENDULUM_INVALID_{str(detail.get('data', '')).upper().replace(' ', '_')}"
        return UnrecoverableError(reason[:64], str(detail))  # reason codes fit ramp.errors
    return RecoverableError("PENDULUM_RPC_ERROR", str(detail)[:300])
