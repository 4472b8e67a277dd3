"""The devnet's Stellar ledger: accounts, trustlines and transactions, with Stellar's checks.

A transaction is validated first (envelope for this network, fee, sequence, including the
CAP-21 `min_sequence_number` precondition, time bounds, the source account's signature); a
transaction that fails validation is rejected and changes nothing. A valid one consumes its
sequence number and fee, then applies all its operations atomically: if any operation fails,
none takes effect and the result is `tx_failed` with each operation's code, as on Stellar.
Signing is by each account's master key (weight 1, thresholds 0); multi-signer thresholds are
not modelled.
"""

from __future__ import annotations

import base64
import copy
import time
from dataclasses import dataclass, field
from decimal import Decimal

import stellar_sdk as sdk
from stellar_sdk import Asset, Keypair, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import BadSignatureError

BASE_FEE = 100
BASE_RESERVE = Decimal("0.5")
STROOP = Decimal("0.0000001")


def money(value: Decimal) -> str:
    """Stellar's 7-decimal amount format."""
    return f"{value.quantize(STROOP):f}"


@dataclass
class Trustline:
    """A holding of an issued asset."""

    balance: Decimal
    limit: Decimal


@dataclass
class AccountEntry:
    """One account."""

    account_id: str
    balance: Decimal
    sequence: int
    trustlines: dict[str, Trustline] = field(default_factory=dict)  # "CODE:ISSUER" → line
    last_modified_ledger: int = 0

    def min_balance(self) -> Decimal:
        """Base reserve for the account and each subentry."""
        return (2 + len(self.trustlines)) * BASE_RESERVE


class TransactionRejected(Exception):
    """Validation failed: nothing was applied, nothing was charged."""

    def __init__(self, code: str, fee: int = 0) -> None:
        super().__init__(code)
        self.code = code
        self.fee = fee


@dataclass
class Outcome:
    """A transaction that passed validation, applied (`successful`) or failed (`tx_failed`)."""

    hash: str
    ledger: int
    successful: bool
    envelope_xdr: str
    result_xdr: str
    operation_codes: list[str]
    record: dict[str, object]


def asset_key(asset: Asset) -> str:
    """`native` or `CODE:ISSUER`."""
    return "native" if asset.is_native() else f"{asset.code}:{asset.issuer}"


def result_xdr(fee: int, code: x.TransactionResultCode) -> str:
    """A TransactionResult XDR as Horizon reports it (operation results omitted)."""
    result = x.TransactionResult(
        fee_charged=x.Int64(fee),
        result=x.TransactionResultResult(
            code=code,
            results=[]
            if code in (x.TransactionResultCode.txSUCCESS, x.TransactionResultCode.txFAILED)
            else None,
        ),
        ext=x.TransactionResultExt(0),
    )
    return result.to_xdr()


class OperationFailed(Exception):
    """One operation failed; the whole transaction rolls back."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Ledger:
    """All accounts and transactions of the devnet."""

    def __init__(self, network_passphrase: str, start_ledger: int = 2) -> None:
        self.network_passphrase = network_passphrase
        self.sequence = start_ledger
        self.accounts: dict[str, AccountEntry] = {}
        self.transactions: dict[str, dict[str, object]] = {}
        self.payments: list[dict[str, object]] = []
        # Price table for path payments: (send asset key, dest asset key) → dest per send.
        self.prices: dict[tuple[str, str], Decimal] = {}

    def close_ledger(self) -> None:
        """Advance to the next ledger (the devnet closes ledgers on a timer)."""
        self.sequence += 1

    def create_root(self, keypair: Keypair, balance: Decimal) -> AccountEntry:
        """An account that exists from genesis (the friendbot's and the funding accounts)."""
        entry = AccountEntry(
            keypair.public_key, balance, self.sequence << 32, last_modified_ledger=self.sequence
        )
        self.accounts[keypair.public_key] = entry
        return entry

    def submit(self, envelope_xdr: str, now: float | None = None) -> Outcome:
        """Validate and apply one transaction envelope."""
        now = time.time() if now is None else now
        try:
            envelope = TransactionEnvelope.from_xdr(envelope_xdr, self.network_passphrase)
        except Exception as exc:
            raise TransactionRejected("tx_malformed") from exc
        tx = envelope.transaction
        tx_hash = envelope.hash_hex()
        if tx_hash in self.transactions:
            raise TransactionRejected("tx_bad_seq")  # a replay: its sequence number is used
        source = self.accounts.get(tx.source.account_id)
        if source is None:
            raise TransactionRejected("tx_no_source_account")
        if tx.fee < BASE_FEE * len(tx.operations):
            raise TransactionRejected("tx_insufficient_fee")
        min_sequence = tx.preconditions.min_sequence_number if tx.preconditions else None
        if min_sequence is not None:
            # CAP-21: valid while minSeqNum <= account sequence < tx sequence.
            if not (min_sequence <= source.sequence < tx.sequence):
                raise TransactionRejected("tx_bad_seq")
        elif tx.sequence != source.sequence + 1:
            raise TransactionRejected("tx_bad_seq")
        bounds = tx.preconditions.time_bounds if tx.preconditions else None
        if bounds and bounds.min_time and now < bounds.min_time:
            raise TransactionRejected("tx_too_early")
        if bounds and bounds.max_time and now > bounds.max_time:
            raise TransactionRejected("tx_too_late")
        signed_by = self._signers(envelope)
        if tx.source.account_id not in signed_by:
            raise TransactionRejected("tx_bad_auth")
        fee = Decimal(tx.fee) * STROOP
        if source.balance - fee < 0:
            raise TransactionRejected("tx_insufficient_balance")
        # Valid: the fee is charged and the sequence consumed whatever the operations do.
        source.balance -= fee
        source.sequence = tx.sequence
        staged = copy.deepcopy(self.accounts)
        codes: list[str] = []
        staged_payments: list[dict[str, object]] = []
        failed = False
        for op in tx.operations:
            op_source = op.source.account_id if op.source else tx.source.account_id
            try:
                if op_source not in signed_by:
                    raise OperationFailed("op_bad_auth")
                self._apply(staged, op, op_source, tx_hash, staged_payments)
                codes.append("op_success")
            except OperationFailed as exc:
                codes.append(exc.code)
                failed = True
        if not failed:
            self.accounts = staged
            self.payments.extend(staged_payments)
        code = x.TransactionResultCode.txFAILED if failed else x.TransactionResultCode.txSUCCESS
        record: dict[str, object] = {
            "id": tx_hash,
            "hash": tx_hash,
            "ledger": self.sequence,
            "successful": not failed,
            "source_account": tx.source.account_id,
            "source_account_sequence": str(tx.sequence),
            "fee_charged": str(tx.fee),
            "operation_count": len(tx.operations),
            "envelope_xdr": envelope_xdr,
            "result_xdr": result_xdr(tx.fee, code),
            "memo_type": _memo_type(tx.memo),
            "memo": _memo_text(tx.memo),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }
        self.transactions[tx_hash] = record
        return Outcome(
            tx_hash,
            self.sequence,
            not failed,
            envelope_xdr,
            str(record["result_xdr"]),
            codes,
            record,
        )

    def _signers(self, envelope: TransactionEnvelope) -> set[str]:
        """Accounts (existing or being created by this tx) with a valid master-key signature."""
        tx_hash = envelope.hash()
        candidates = {envelope.transaction.source.account_id}
        for op in envelope.transaction.operations:
            if op.source:
                candidates.add(op.source.account_id)
        signed: set[str] = set()
        for account_id in candidates:
            keypair = Keypair.from_public_key(account_id)
            for signature in envelope.signatures:
                if signature.signature_hint != keypair.signature_hint():
                    continue
                try:
                    keypair.verify(tx_hash, signature.signature)
                    signed.add(account_id)
                except BadSignatureError:
                    continue
        return signed

    def _apply(
        self,
        accounts: dict[str, AccountEntry],
        op: object,
        source_id: str,
        tx_hash: str,
        payments: list[dict[str, object]],
    ) -> None:
        source = accounts.get(source_id)
        if source is None:
            raise OperationFailed("op_no_source_account")
        source.last_modified_ledger = self.sequence
        if isinstance(op, sdk.CreateAccount):
            if op.destination in accounts:
                raise OperationFailed("op_already_exists")
            amount = Decimal(op.starting_balance)
            if amount < 2 * BASE_RESERVE:
                raise OperationFailed("op_low_reserve")
            self._debit_native(source, amount)
            accounts[op.destination] = AccountEntry(
                op.destination, amount, self.sequence << 32, last_modified_ledger=self.sequence
            )
        elif isinstance(op, sdk.Payment):
            self._pay(
                accounts,
                source,
                op.destination.account_id,
                op.asset,
                Decimal(op.amount),
                tx_hash,
                payments,
            )
        elif isinstance(op, sdk.PathPaymentStrictSend | sdk.PathPaymentStrictReceive):
            self._path_payment(accounts, source, op, tx_hash, payments)
        elif isinstance(op, sdk.ChangeTrust):
            self._change_trust(source, op)
        elif isinstance(op, sdk.BumpSequence):
            if op.bump_to > source.sequence:
                source.sequence = op.bump_to
        elif isinstance(op, sdk.AccountMerge):
            destination = accounts.get(op.destination.account_id)
            if destination is None:
                raise OperationFailed("op_no_account")
            if source.trustlines:
                raise OperationFailed("op_has_sub_entries")
            destination.balance += source.balance
            payments.append(
                self._payment_record(
                    source_id,
                    destination.account_id,
                    Asset.native(),
                    source.balance,
                    tx_hash,
                    "account_merge",
                )
            )
            del accounts[source_id]
        else:
            raise OperationFailed("op_not_supported")

    def _debit_native(self, account: AccountEntry, amount: Decimal) -> None:
        if account.balance - amount < account.min_balance():
            raise OperationFailed("op_underfunded")
        account.balance -= amount

    def _debit(self, account: AccountEntry, asset: Asset, amount: Decimal) -> None:
        """Take `amount` of `asset` from `account` (an issuer's own asset is unlimited)."""
        if amount <= 0:
            raise OperationFailed("op_malformed")
        if asset.is_native():
            self._debit_native(account, amount)
        elif account.account_id != asset.issuer:
            line = account.trustlines.get(asset_key(asset))
            if line is None:
                raise OperationFailed("op_src_no_trust")
            if line.balance < amount:
                raise OperationFailed("op_underfunded")
            line.balance -= amount

    def _credit(self, account: AccountEntry, asset: Asset, amount: Decimal) -> None:
        """Give `amount` of `asset` to `account` (paying an issuer burns it)."""
        if asset.is_native():
            account.balance += amount
        elif account.account_id != asset.issuer:
            line = account.trustlines.get(asset_key(asset))
            if line is None:
                raise OperationFailed("op_no_trust")
            if line.balance + amount > line.limit:
                raise OperationFailed("op_line_full")
            line.balance += amount

    def _pay(
        self,
        accounts: dict[str, AccountEntry],
        source: AccountEntry,
        destination_id: str,
        asset: Asset,
        amount: Decimal,
        tx_hash: str,
        payments: list[dict[str, object]],
    ) -> None:
        destination = accounts.get(destination_id)
        if destination is None:
            raise OperationFailed("op_no_destination")
        self._debit(source, asset, amount)
        self._credit(destination, asset, amount)
        payments.append(
            self._payment_record(
                source.account_id, destination_id, asset, amount, tx_hash, "payment"
            )
        )

    def _path_payment(
        self,
        accounts: dict[str, AccountEntry],
        source: AccountEntry,
        op: object,
        tx_hash: str,
        payments: list[dict[str, object]],
    ) -> None:
        """Convert at the devnet's fixed price table (the ledger itself is the market maker)."""
        send_asset, dest_asset = op.send_asset, op.dest_asset  # type: ignore[attr-defined]
        pair = (asset_key(send_asset), asset_key(dest_asset))
        price = Decimal(1) if pair[0] == pair[1] else self.prices.get(pair)
        if price is None:
            raise OperationFailed("op_too_few_offers")
        if isinstance(op, sdk.PathPaymentStrictSend):
            send = Decimal(op.send_amount)
            receive = (send * price).quantize(STROOP)
            if receive < Decimal(op.dest_min):
                raise OperationFailed("op_under_destmin")
        else:
            receive = Decimal(op.dest_amount)  # type: ignore[attr-defined]
            send = (receive / price).quantize(STROOP)
            if send > Decimal(op.send_max):  # type: ignore[attr-defined]
                raise OperationFailed("op_over_source_max")
        destination = accounts.get(op.destination.account_id)  # type: ignore[attr-defined]
        if destination is None:
            raise OperationFailed("op_no_destination")
        self._debit(source, send_asset, send)
        self._credit(destination, dest_asset, receive)
        payments.append(
            self._payment_record(
                source.account_id,
                destination.account_id,
                dest_asset,
                receive,
                tx_hash,
                type(op).__name__,
            )
        )

    def _change_trust(self, source: AccountEntry, op: object) -> None:
        asset = op.asset  # type: ignore[attr-defined]
        if not isinstance(asset, Asset) or asset.is_native() or asset.issuer == source.account_id:
            raise OperationFailed("op_malformed")
        key = asset_key(asset)
        limit = Decimal(op.limit) if op.limit is not None else Decimal("922337203685.4775807")  # type: ignore[attr-defined]
        line = source.trustlines.get(key)
        if limit == 0:
            if line is None:
                return
            if line.balance > 0:
                raise OperationFailed("op_invalid_limit")
            del source.trustlines[key]
            return
        if line is None:
            if source.balance < (3 + len(source.trustlines)) * BASE_RESERVE:
                raise OperationFailed("op_low_reserve")
            source.trustlines[key] = Trustline(Decimal(0), limit)
        elif limit < line.balance:
            raise OperationFailed("op_invalid_limit")
        else:
            line.limit = limit

    def _payment_record(
        self, source: str, destination: str, asset: Asset, amount: Decimal, tx_hash: str, kind: str
    ) -> dict[str, object]:
        record: dict[str, object] = {
            "id": f"{tx_hash}-{len(self.payments)}",
            "type": kind,
            "from": source,
            "to": destination,
            "amount": money(amount),
            "transaction_hash": tx_hash,
            "transaction_successful": True,
            "asset_type": "native" if asset.is_native() else asset.type,
        }
        if not asset.is_native():
            record["asset_code"], record["asset_issuer"] = asset.code, asset.issuer
        return record

    def account_json(self, account_id: str) -> dict[str, object] | None:
        """The account as Horizon's /accounts/{id} shows it."""
        entry = self.accounts.get(account_id)
        if entry is None:
            return None
        balances: list[dict[str, object]] = [
            {
                "asset_type": "credit_alphanum4"
                if len(key.split(":")[0]) <= 4
                else "credit_alphanum12",
                "asset_code": key.split(":")[0],
                "asset_issuer": key.split(":")[1],
                "balance": money(line.balance),
                "limit": money(line.limit),
            }
            for key, line in entry.trustlines.items()
        ]
        balances.append({"asset_type": "native", "balance": money(entry.balance)})
        return {
            "id": account_id,
            "account_id": account_id,
            "sequence": str(entry.sequence),
            "subentry_count": len(entry.trustlines),
            "last_modified_ledger": entry.last_modified_ledger,
            "thresholds": {"low_threshold": 0, "med_threshold": 0, "high_threshold": 0},
            "flags": {
                "auth_required": False,
                "auth_revocable": False,
                "auth_immutable": False,
                "auth_clawback_enabled": False,
            },
            "balances": balances,
            "signers": [{"weight": 1, "key": account_id, "type": "ed25519_public_key"}],
            "data": {},
            "num_sponsoring": 0,
            "num_sponsored": 0,
            "paging_token": account_id,
        }


def _memo_type(memo: object) -> str:
    name = type(memo).__name__
    return {
        "NoneMemo": "none",
        "TextMemo": "text",
        "IdMemo": "id",
        "HashMemo": "hash",
        "ReturnHashMemo": "return",
    }.get(name, "none")


def _memo_text(memo: object) -> str:
    value = (
        getattr(memo, "memo_text", None)
        or getattr(memo, "memo_id", None)
        or getattr(memo, "memo_hash", None)
    )
    if value is None:
        return ""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    return str(value)
