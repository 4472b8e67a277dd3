"""Idempotency keys (IETF httpapi Idempotency-Key draft, Stripe-style), kept in PostgreSQL.

The first request with a key claims it (one atomic INSERT ... ON CONFLICT DO NOTHING), runs,
and stores its response; a retry with the same key and the same request replays that response
byte for byte. The same key with a different request is IDEMPOTENCY_KEY_REUSED; a retry while
the first is still running is IDEMPOTENCY_REQUEST_IN_PROGRESS. A failed request releases its
key, so a retry runs again (every use case is safe to re-run). A claim whose holder died is
taken over once its lock expires. Keys are scoped to the RPC and live `ttl` (24 h by default).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.db.models import IdempotencyKeyRow
from ramp_service.domain.errors import IdempotencyInProgress, IdempotencyKeyReused
from service_kit.errors import InvalidInput

M = TypeVar("M", bound=Message)
log = logging.getLogger("idempotency")
MAX_KEY_LENGTH = 255


def request_fingerprint(request: Message) -> str:
    """SHA-256 of the request's deterministic serialization."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


class IdempotencyStore:
    """Runs mutating use cases at most once per (rpc, key)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
        ttl: timedelta = timedelta(hours=24),
        lock_for: timedelta = timedelta(seconds=30),
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._ttl = ttl
        self._lock_for = lock_for

    async def run(
        self,
        rpc: str,
        key: str | None,
        request: Message,
        response_type: type[M],
        execute: Callable[[], Awaitable[M]],
    ) -> M:
        """`execute()` once for this key; replay its stored response to identical retries."""
        if not key:
            return await execute()
        if len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidInput(
                "INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be 1-255 printable characters"
            )
        fingerprint = request_fingerprint(request)
        claim = uuid.uuid4()
        replay = await self._claim(rpc, key, fingerprint, claim)
        if replay is not None:
            return response_type.FromString(replay)
        try:
            response = await execute()
        except BaseException:
            await self._release(rpc, key, claim)
            raise
        if not await self._complete(rpc, key, claim, response.SerializeToString()):
            # We ran past the lock and a retry took the key over: its response is the one
            # stored. Ours is as true (every use case is safe to re-run), so the caller gets it.
            log.warning("idempotency claim lost before completion", extra={"rpc": rpc})
        return response

    async def _claim(self, rpc: str, key: str, fingerprint: str, claim: uuid.UUID) -> bytes | None:
        """Claim the key (None) or return the stored response; raise when neither is possible."""
        now = self._clock()
        async with self._sessions.begin() as session:
            claimed = await session.scalar(
                insert(IdempotencyKeyRow)
                .values(
                    rpc=rpc,
                    key=key,
                    request_hash=fingerprint,
                    state="IN_PROGRESS",
                    created_at=now,
                    locked_until=now + self._lock_for,
                    claim=claim,
                )
                .on_conflict_do_nothing()
                .returning(IdempotencyKeyRow.key)
            )
            if claimed is not None:
                return None
            row = await session.scalar(
                select(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.rpc == rpc, IdempotencyKeyRow.key == key
                )
            )
            if row is None:  # released between our statements: let the caller retry
                raise IdempotencyInProgress()
            expired = row.created_at <= now - self._ttl
            if not expired and row.request_hash != fingerprint:
                raise IdempotencyKeyReused()
            if not expired and row.state == "COMPLETED":
                assert row.response is not None
                return row.response
            if not expired and row.locked_until > now:
                raise IdempotencyInProgress()
            # An expired key, or a claim whose holder died: take it over, if nobody beat us.
            taken = await session.execute(
                update(IdempotencyKeyRow)
                .where(
                    IdempotencyKeyRow.rpc == rpc,
                    IdempotencyKeyRow.key == key,
                    IdempotencyKeyRow.locked_until == row.locked_until,
                    IdempotencyKeyRow.state == row.state,
                )
                .values(
                    request_hash=fingerprint,
                    state="IN_PROGRESS",
                    response=None,
                    grpc_code=None,
                    created_at=now,
                    locked_until=now + self._lock_for,
                    claim=claim,
                )
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise IdempotencyInProgress()
            return None

    async def _complete(self, rpc: str, key: str, claim: uuid.UUID, response: bytes) -> bool:
        """Store the response under our own claim; False when the key is no longer ours."""
        async with self._sessions.begin() as session:
            done = await session.execute(
                update(IdempotencyKeyRow)
                .where(
                    IdempotencyKeyRow.rpc == rpc,
                    IdempotencyKeyRow.key == key,
                    IdempotencyKeyRow.claim == claim,
                    IdempotencyKeyRow.state == "IN_PROGRESS",
                )
                .values(state="COMPLETED", response=response, grpc_code=0)
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    async def _release(self, rpc: str, key: str, claim: uuid.UUID) -> None:
        """Give up our claim (a failed request), never another request's."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.rpc == rpc,
                    IdempotencyKeyRow.key == key,
                    IdempotencyKeyRow.claim == claim,
                    IdempotencyKeyRow.state == "IN_PROGRESS",
                )
            )
