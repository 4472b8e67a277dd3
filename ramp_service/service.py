"""Ramp use cases: register, update, start, read. Each opens its own short transactions.

No transaction is held open across a call to another service, a chain or a partner.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.db.repository import (
    RampRepository,
    fetch_record,
    fetch_version,
    fetch_versioned_record,
    insert_ramp,
    register_conflicts,
    start_ramp,
)
from ramp_service.domain.errors import (
    ChainUnavailable,
    EphemeralNotFresh,
    InvalidRampRequest,
    QuoteUnusable,
    RampAlreadyStarted,
    RampNotFound,
    RampNotInitial,
    StartDeadlinePassed,
    invalid,
)
from ramp_service.domain.flows import (
    CURRENT_FLOW,
    FOLLOW_UP_PHASES,
    INITIAL,
    TIMED_OUT,
    Network,
)
from ramp_service.domain.presigned import check_complete, match_presigned
from ramp_service.domain.ramp import (
    AdditionalData,
    PresignedTx,
    RampRecord,
    RampStatus,
    RecordedError,
    StoredTx,
    check_additional_data,
    parse_ramp_id,
    parse_signing_accounts,
    ramp_id_for_quote,
    updated_data,
)
from ramp_service.ports import QuoteClient, RegistrationChains, RegistrationPlan
from service_kit.db import DirectPool
from service_kit.errors import FieldViolation, PreconditionFailed

Clock = Callable[[], datetime]
USER = "user"
log = logging.getLogger("ramps")
T = TypeVar("T")


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class RegisterCommand:
    """A register request, parsed from the wire."""

    quote_id: str
    accounts: list[tuple[str, str]]
    additional_data: AdditionalData

    def fingerprint(self) -> str:
        """Stable hash of what the client asked for (to recognise a repeated register): the
        quote id in its one spelling, as the ramp's id is derived from it (a retry that spells
        it in capitals is the same register)."""
        try:
            quote_id = str(uuid.UUID(self.quote_id))
        except ValueError:
            quote_id = self.quote_id
        body = json.dumps(
            [quote_id, sorted(self.accounts), vars(self.additional_data)], sort_keys=True
        )
        return hashlib.sha256(body.encode()).hexdigest()


class RampService:
    """The ramp lifecycle up to RUNNING, and reads."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        direct: DirectPool,
        quotes: QuoteClient,
        chains: RegistrationChains,
        start_window: timedelta = timedelta(minutes=15),
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        # Single-statement reads need no transaction and no ORM: see DirectPool.
        self._direct = direct
        self._quotes = quotes
        self._chains = chains
        self._start_window = start_window
        self._clock = clock

    async def register(self, command: RegisterCommand) -> RampRecord:
        """Consume the quote, build the transactions to presign and store the ramp."""
        try:
            quote_id = uuid.UUID(command.quote_id)
        except ValueError:
            raise invalid("INVALID_QUOTE_ID", "quote_id", "must be a UUID") from None
        quote = await self._quotes.get_quote(quote_id)
        accounts = parse_signing_accounts(quote.ramp_type, command.accounts)
        self._check_addresses(command)
        check_additional_data(quote, command.additional_data)
        if not self._chains.is_valid_destination(
            quote.to_network, command.additional_data.destination
        ):
            raise InvalidRampRequest(
                [
                    FieldViolation(
                        "additional_data.destination", f"not a valid {quote.to_network} address"
                    )
                ]
            )
        ramp_id = ramp_id_for_quote(quote.id)
        async with self._direct.connection() as conn:
            holder, in_use = await register_conflicts(conn, quote.id, list(accounts.values()))
        if holder is not None:
            return await self._existing_registration(ramp_id, command)
        if quote.status == "EXPIRED" or self._clock() >= quote.expires_at:
            # Fail before touching chains or partners; consume_quote re-checks atomically.
            raise QuoteUnusable("QUOTE_EXPIRED", f"quote {quote.id} is expired")
        # CONSUMED with no ramp holding it: an earlier attempt consumed it for this very ramp
        # id (derived from the quote) and stopped before storing the ramp (a partner timed
        # out, the process died). consume_quote answers that ramp id again until the quote's
        # expiry, so the retry finishes the registration; a quote consumed for another ramp
        # is refused there. (A consumed quote reads CONSUMED past expiry: hence the clock above.)
        for network, address in sorted(in_use):
            raise EphemeralNotFresh(network, address, "already used by another ramp")
        for account in accounts.values():
            if why := await self._chains.why_not_fresh(account):
                raise EphemeralNotFresh(account.network.value, account.address, why)
        quote = await self._quotes.consume_quote(quote.id, ramp_id)
        flow = CURRENT_FLOW[quote.ramp_type]
        prepared = await self._chains.prepare(
            RegistrationPlan(ramp_id, quote, flow, accounts, command.additional_data)
        )
        now = self._clock()
        record = RampRecord(
            id=ramp_id,
            quote=quote,
            status=RampStatus.REGISTERED,
            current_phase=INITIAL,
            flow_version=flow.version,
            accounts=tuple(accounts.values()),
            additional_data=command.additional_data,
            txs=tuple(StoredTx(tx, None, "ISSUED") for tx in prepared.txs),
            partner_data=prepared.partner_data,
            history=(),
            last_error=None,
            start_deadline=now + self._start_window,
            created_at=now,
            updated_at=now,
            request_hash=command.fingerprint(),
        )
        try:
            async with self._direct.connection() as conn:
                await insert_ramp(conn.cursor(), record, USER)
        except psycopg.errors.UniqueViolation as exc:
            # A concurrent register won the quote or an ephemeral; answer as if it came first.
            if exc.diag.constraint_name == "uq_signing_accounts_address":
                raise EphemeralNotFresh(
                    "signing_accounts", "", "already used by another ramp"
                ) from None
            return await self._existing_registration(ramp_id, command)
        return await self.get(str(ramp_id))

    async def _existing_registration(
        self, ramp_id: uuid.UUID, command: RegisterCommand
    ) -> RampRecord:
        existing = await self.get(str(ramp_id))
        if existing.request_hash != command.fingerprint():
            raise PreconditionFailed("QUOTE_CONSUMED", "the quote was already used by another ramp")
        return existing

    def _check_addresses(self, command: RegisterCommand) -> None:
        violations = [
            FieldViolation(f"signing_accounts[{i}].address", f"not a valid {network} address")
            for i, (network, address) in enumerate(command.accounts)
            if not self._chains.is_valid_address(Network(network), address)
        ]
        if violations:
            raise InvalidRampRequest(violations)

    async def update(
        self, ramp_id: str, presigned: list[PresignedTx], data: AdditionalData
    ) -> RampRecord:
        """Add presigned transactions or data while the ramp is registered and in `initial`."""
        record = await self.get(ramp_id)
        if record.status is not RampStatus.REGISTERED:
            raise RampNotInitial(ramp_id, record.status.value)
        payloads = await self._verified(record, presigned)
        merged = updated_data(record, data)
        async with self._sessions.begin() as session:
            repo = RampRepository(session)
            row = await repo.lock(record.id)
            assert row is not None
            if row.status != RampStatus.REGISTERED.value:
                raise RampNotInitial(ramp_id, row.status)
            now = self._clock()
            for (phase, network), payload in payloads.items():
                await repo.store_presigned(record.id, phase, network, payload, now)
            row.wallet_address, row.destination, row.tax_id = (
                merged.wallet_address,
                merged.destination,
                merged.tax_id,
            )
            row.updated_at = now
        return await self.get(ramp_id)

    async def start(
        self, ramp_id: str, presigned: list[PresignedTx], data: AdditionalData
    ) -> RampRecord:
        """Check the presigned set, open the payment (a BUY's PIX charge) and hand the ramp to
        the phase processor."""
        record = await self.get(ramp_id)
        payloads = await self._verified(record, presigned)
        if record.status is not RampStatus.REGISTERED:
            return self._repeated_start(record, payloads)
        merged = updated_data(record, data)
        now = self._clock()
        if now >= record.start_deadline:
            raise StartDeadlinePassed(ramp_id)
        check_complete(record.issued(), record.presigned_keys() | set(payloads))
        # Opened here, not at register, so a ramp that never starts has nothing to pay; and
        # before the write, holding nothing: a partner failure stores nothing and the client's
        # retry opens it again. The charge's txid derives from the ramp id, so retries and
        # concurrent starts all get the one charge, and the winning write stores it.
        payment = await self._chains.open_payment(record, now)
        async with self._direct.connection() as conn:
            won = await start_ramp(conn, record.id, payloads, merged, payment, USER, now)
        # Read after commit: the answer shows the ramp as every later reader will.
        if won:
            return await self.get(ramp_id)
        # Another start won the race, or the ramp will never run: an operator cancelled it,
        # or it was timed out, while this start talked to the partner.
        current = await self.get(ramp_id)
        if payment and ended_unrun(current):
            await self._withdraw_unshown(current, payment)
        return self._repeated_start(current, payloads)

    async def _withdraw_unshown(self, record: RampRecord, payment: dict[str, str]) -> None:
        """Cancel the charge a losing start opened for a ramp that will never run. Nobody was
        shown it (the start fails), so it is withdrawn now rather than left payable until its
        expiry; a partner that cannot be reached leaves it to expire."""
        opened = dataclasses.replace(record, partner_data={**record.partner_data, **payment})
        try:
            unpaid = await self._chains.withdraw_payment(opened)
        except ChainUnavailable:
            log.warning(
                "unshown charge left to expire",
                extra={"ramp_id": str(record.id), "expires_at": payment.get("pix_expires_at")},
            )
            return
        if not unpaid:  # paid with a code no answer carried: a person must return the money
            log.error("unshown charge paid", extra={"ramp_id": str(record.id)})

    def _repeated_start(
        self, record: RampRecord, payloads: dict[tuple[str, str], str]
    ) -> RampRecord:
        """A start on a started ramp: a no-op with the same transactions, else 409. A ramp that
        never ran (timed out or cancelled before its start) has no start to repeat."""
        if ended_unrun(record):
            if record.status is RampStatus.TIMED_OUT:
                raise StartDeadlinePassed(str(record.id))
            raise RampNotInitial(str(record.id), record.status.value)
        stored = {(t.issued.phase, t.issued.network.value): t.presigned_payload for t in record.txs}
        if all(stored.get(key) == payload for key, payload in payloads.items()):
            return record
        if record.status in (RampStatus.RUNNING, RampStatus.COMPLETE):
            raise RampAlreadyStarted(str(record.id))
        raise RampNotInitial(str(record.id), record.status.value)

    async def _verified(
        self, record: RampRecord, presigned: list[PresignedTx]
    ) -> dict[tuple[str, str], str]:
        """Signed payload per (phase, network) for each incoming transaction, all verified.

        Verification is CPU work and may load chain metadata: it runs off the event loop.
        """
        pairs = match_presigned(record.issued(), presigned)

        def verify() -> dict[tuple[str, str], str]:
            return {
                (issued.phase, issued.network.value): self._chains.verify_presigned(issued, tx)
                for issued, tx in pairs
            }

        return await asyncio.to_thread(verify) if pairs else {}

    async def get(self, ramp_id: str) -> RampRecord:
        """One ramp, as a reader sees it."""
        return await self._read(ramp_id, fetch_record)

    async def version(self, ramp_id: str) -> str:
        """A value that changes whenever anything `get` shows of the ramp changes: one cheap
        read, for polls that already hold the ramp as it was."""
        return await self._read(ramp_id, fetch_version)

    async def get_versioned(self, ramp_id: str) -> tuple[RampRecord, str]:
        """`get`, with the ramp's `version` as of the same read."""
        return await self._read(ramp_id, fetch_versioned_record)

    async def _read(
        self,
        ramp_id: str,
        fetch: Callable[[AsyncConnection[Any], uuid.UUID], Awaitable[T | None]],
    ) -> T:
        """One single-statement read of the ramp `ramp_id` (RampNotFound when there is none)."""
        rid = parse_ramp_id(ramp_id, "id")
        async with self._direct.connection() as conn:
            found = await fetch(conn, rid)
        if found is None:
            raise RampNotFound(ramp_id)
        return found

    async def errors(self, ramp_id: str) -> list[RecordedError]:
        """A ramp's errors, newest first."""
        rid = parse_ramp_id(ramp_id, "id")
        async with self._sessions.begin() as session:
            repo = RampRepository(session)
            if not await repo.exists(rid):
                raise RampNotFound(ramp_id)
            return await repo.errors(rid)

    async def list_by_wallet(
        self, wallet: str, page_size: int, page_token: str
    ) -> tuple[list[RampRecord], str]:
        """A page of a wallet's ramps, newest first, and the token for the next page."""
        if not wallet:
            raise invalid("INVALID_RAMP_REQUEST", "wallet_address", "required")
        if page_size < 0 or page_size > 100:
            raise invalid("INVALID_PAGE_SIZE", "page_size", "must be between 0 and 100")
        size = page_size or 20
        after = decode_page_token(page_token) if page_token else None
        async with self._sessions.begin() as session:
            records = await RampRepository(session).page_by_wallet(wallet, size + 1, after)
        more = len(records) > size
        records = records[:size]
        token = encode_page_token(records[-1].created_at, records[-1].id) if more else ""
        return records, token


def ended_unrun(record: RampRecord) -> bool:
    """The ramp ended before it ever ran: cancelled or timed out from `initial` (the watch that
    follows, a follow-up phase in its history, does not make it a ramp that ran)."""
    ran = {h.phase for h in record.history} - FOLLOW_UP_PHASES
    return record.status in (RampStatus.TIMED_OUT, RampStatus.CANCELLED) and ran <= {
        INITIAL,
        TIMED_OUT,
    }


def encode_page_token(created_at: datetime, ramp_id: uuid.UUID) -> str:
    """Opaque keyset cursor."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ramp_id}".encode()).decode()


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor made by `encode_page_token`."""
    try:
        created, rid = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(rid)
    except (ValueError, UnicodeDecodeError):
        raise invalid(
            "INVALID_PAGE_TOKEN", "page_token", "not a token this service issued"
        ) from None
