"""The Stellar adapter: build, verify, submit and look up transactions with stellar-sdk.

Ephemeral accounts get a *known* starting sequence without the funding account's sequence in
any presigned transaction: the funding account creates the ephemeral in a server-signed
transaction (built when it runs, from the funding account's live sequence), and the
ephemeral's first presigned transaction carries the CAP-21 `min_sequence_number` precondition,
which makes it valid at a chosen sequence `S` whatever sequence the new account starts with
and bumps the account to `S`. Its later transactions use `S + 1`, `S + 2`. Presigning a
transaction whose source is the shared funding account would tie every ramp to that account's
sequence at register time, and any other funding transaction would invalidate it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from stellar_sdk import (
    Account,
    Asset,
    Keypair,
    ServerAsync,
    TransactionBuilder,
    TransactionEnvelope,
)
from stellar_sdk.call_builder.call_builder_async import BaseCallBuilder
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import (
    BadRequestError,
    BadResponseError,
    BadSignatureError,
    ConnectionError,
    NotFoundError,
    SdkError,
)

from ramp_service.chains import stellar_bytes
from ramp_service.chains.errors import RecoverableError, UnrecoverableError
from ramp_service.chains.pooled import LoopPooled
from service_kit.errors import FieldViolation, InvalidInput

# Sequence the ephemeral jumps to with its first presigned transaction (far above any
# ledger<<32 starting sequence for the foreseeable life of the network).
EPHEMERAL_START_SEQUENCE = 1 << 62
BASE_FEE = 100
RETRYABLE_TX_CODES = frozenset({"tx_too_early", "tx_insufficient_fee"})


@dataclass(frozen=True)
class SubmitResult:
    """A transaction the network accepted (or already had)."""

    hash: str
    ledger: int
    successful: bool


@dataclass(frozen=True)
class AccountState:
    """What a reader needs of an account."""

    sequence: int
    balances: dict[str, Decimal]  # "native" or "CODE:ISSUER" → balance


def invalid_presigned(reason: str, description: str) -> InvalidInput:
    """A presigned transaction that does not match what was issued."""
    return InvalidInput(reason, description, [FieldViolation("presigned_txs", description)])


class StellarChain:
    """Builds, verifies and submits Stellar transactions for one network."""

    def __init__(self, horizon_url: str, network_passphrase: str, timeout_s: float = 10.0) -> None:
        self.horizon_url = horizon_url
        self.network_passphrase = network_passphrase
        self._network_id = hashlib.sha256(network_passphrase.encode()).digest()
        self._timeout_s = timeout_s
        # One Horizon client (and its connections) per loop: a client per call opened a TCP
        # connection per call, a third of register's freshness check's CPU (py-spy).
        self._horizon = LoopPooled(self._new_server, ServerAsync.close)

    # --- building (no I/O) ---------------------------------------------------------------

    def _builder(self, source: Account, valid_until: int) -> TransactionBuilder:
        builder = TransactionBuilder(source, self.network_passphrase, base_fee=BASE_FEE)
        builder.add_time_bounds(0, valid_until)
        return builder

    def build_create_ephemeral(
        self, funding: Account, ephemeral: str, starting_xlm: Decimal, valid_until: int
    ) -> str:
        """Server-signed: the funding account creates the ephemeral (unsigned XDR)."""
        builder = self._builder(funding, valid_until)
        builder.append_create_account_op(ephemeral, f"{starting_xlm:f}")
        return builder.build().to_xdr()

    def build_ephemeral_setup(self, ephemeral: str, assets: list[Asset], valid_until: int) -> str:
        """Presigned: trustlines, valid at any starting sequence; bumps to the known start."""
        builder = self._builder(Account(ephemeral, EPHEMERAL_START_SEQUENCE - 1), valid_until)
        builder.set_min_sequence_number(0)
        for asset in assets:
            builder.append_change_trust_op(asset)
        return builder.build().to_xdr()

    def build_payment(
        self,
        ephemeral: str,
        offset: int,
        destination: str,
        asset: Asset,
        amount: Decimal,
        memo: str,
        valid_until: int,
    ) -> str:
        """Presigned: a payment with a text memo at sequence start + `offset`."""
        builder = self._builder(
            Account(ephemeral, EPHEMERAL_START_SEQUENCE + offset - 1), valid_until
        )
        builder.append_payment_op(destination, asset, f"{amount:f}")
        if memo:
            builder.add_text_memo(memo)
        return builder.build().to_xdr()

    def build_merge(
        self, ephemeral: str, offset: int, destination: str, assets: list[Asset], valid_until: int
    ) -> str:
        """Presigned: remove trustlines and merge the ephemeral into `destination`."""
        builder = self._builder(
            Account(ephemeral, EPHEMERAL_START_SEQUENCE + offset - 1), valid_until
        )
        for asset in assets:
            builder.append_change_trust_op(asset, limit="0")
        builder.append_account_merge_op(destination)
        return builder.build().to_xdr()

    def sequence_of(self, envelope_xdr: str) -> int:
        """The sequence number a transaction envelope uses."""
        raw = stellar_bytes.decode(envelope_xdr)
        if raw is not None and (sequence := stellar_bytes.sequence(raw)) is not None:
            return sequence
        return int(
            TransactionEnvelope.from_xdr(envelope_xdr, self.network_passphrase).transaction.sequence
        )

    def sign(self, envelope_xdr: str, keypair: Keypair) -> str:
        """Add `keypair`'s signature (server-side funding transactions)."""
        envelope = TransactionEnvelope.from_xdr(envelope_xdr, self.network_passphrase)
        envelope.sign(keypair)
        return envelope.to_xdr()

    def tx_hash(self, envelope_xdr: str) -> str:
        """The transaction hash (hex) on this network."""
        return TransactionEnvelope.from_xdr(envelope_xdr, self.network_passphrase).hash_hex()

    # --- verifying (no I/O) --------------------------------------------------------------

    def verify_presigned(self, issued_xdr: str, signed_xdr: str, signer: str) -> str:
        """The signed envelope, checked against what was issued; raises InvalidInput.

        The transaction must be byte-for-byte the one issued (amount, destination, memo,
        sequence, time bounds, fee) and carry a valid signature of `signer` for this network.
        Other signatures are dropped. The well-formed case is read by byte layout
        (`stellar_bytes`); anything else is judged by stellar-sdk, as it answers the same.
        """
        fast = stellar_bytes.verified(self._network_id, issued_xdr, signed_xdr, signer)
        if fast is not None:
            return fast
        return self.verify_presigned_sdk(issued_xdr, signed_xdr, signer)

    def verify_presigned_sdk(self, issued_xdr: str, signed_xdr: str, signer: str) -> str:
        """`verify_presigned` by stellar-sdk alone (every envelope parsed into objects)."""
        try:
            signed = TransactionEnvelope.from_xdr(signed_xdr, self.network_passphrase)
        except Exception:
            raise invalid_presigned(
                "PRESIGNED_TX_MALFORMED", "not a base64 Stellar transaction envelope"
            ) from None
        issued = TransactionEnvelope.from_xdr(issued_xdr, self.network_passphrase)
        if (
            signed.transaction.to_xdr_object().to_xdr()
            != issued.transaction.to_xdr_object().to_xdr()
        ):
            raise invalid_presigned(
                "PRESIGNED_TX_MISMATCH", "the transaction differs from the one issued"
            )
        keypair = Keypair.from_public_key(signer)
        tx_hash = signed.hash()
        for signature in signed.signatures:
            if signature.signature_hint != keypair.signature_hint():
                continue
            try:
                keypair.verify(tx_hash, signature.signature)
            except BadSignatureError:
                continue
            issued.signatures = [signature]
            return issued.to_xdr()
        raise invalid_presigned(
            "PRESIGNED_TX_BAD_SIGNATURE", f"no valid signature of {signer} for this network"
        )

    # --- network -------------------------------------------------------------------------

    def _new_server(self) -> ServerAsync:
        client = AiohttpClient(
            request_timeout=self._timeout_s, post_timeout=self._timeout_s, backoff_factor=None
        )
        return ServerAsync(self.horizon_url, client=client)

    def _server(self) -> ServerAsync:
        return self._horizon.get()

    async def close(self) -> None:
        """Close the pooled connections."""
        await self._horizon.close()

    async def account(self, account_id: str) -> AccountState | None:
        """Sequence and balances, or None when the account does not exist."""
        data = await self._record(self._server().accounts().account_id(account_id))
        if data is None:
            return None
        balances = {
            (
                "native"
                if b["asset_type"] == "native"
                else f"{b['asset_code']}:{b['asset_issuer']}"
            ): Decimal(b["balance"])
            for b in data["balances"]
        }
        return AccountState(int(data["sequence"]), balances)

    async def find(self, tx_hash: str) -> SubmitResult | None:
        """The transaction with this hash, if the network has it (applied or failed)."""
        record = await self._record(self._server().transactions().transaction(tx_hash))
        if record is None:
            return None
        return SubmitResult(record["hash"], int(record["ledger"]), bool(record["successful"]))

    @staticmethod
    async def _record(request: BaseCallBuilder) -> dict[str, Any] | None:
        """One Horizon record, or None when Horizon has none (404)."""
        try:
            record: dict[str, Any] = await request.call()
        except NotFoundError:
            return None
        except SdkError as exc:
            raise _recoverable(exc) from exc
        return record

    async def submit(self, envelope_xdr: str) -> SubmitResult:
        """Submit a signed envelope; classify failures for the processor."""
        server = self._server()
        try:
            record = await server.submit_transaction(envelope_xdr, skip_memo_required_check=True)
        except BadRequestError as exc:
            raise _classified(exc) from exc
        except SdkError as exc:
            raise _recoverable(exc) from exc
        return SubmitResult(record["hash"], int(record["ledger"]), bool(record["successful"]))


def _recoverable(exc: SdkError) -> RecoverableError:
    if isinstance(exc, ConnectionError):
        return RecoverableError("HORIZON_UNREACHABLE", str(exc)[:300])
    if isinstance(exc, BadResponseError) and getattr(exc, "status", 0) == 429:
        return RecoverableError("HORIZON_RATE_LIMITED", "rate limited")
    return RecoverableError("HORIZON_ERROR", f"{type(exc).__name__}: {str(exc)[:300]}")


def _classified(exc: BadRequestError) -> RecoverableError | UnrecoverableError:
    codes = (exc.extras or {}).get("result_codes", {})
    tx_code = str(codes.get("transaction", "tx_unknown"))
    detail = f"{tx_code} {codes.get('operations', '')}".strip()
    if tx_code in RETRYABLE_TX_CODES:
        return RecoverableError(tx_code.upper(), detail)
    return UnrecoverableError(tx_code.upper(), detail)
