"""Housekeeping SQL of schema `quote`, run by the cleanup job in bounded batches.

Each function does one batch in the caller's transaction and returns how many rows it touched,
so the job can commit, pause and go on without holding long locks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, text

EXPIRE_BATCH = text(
    """
    UPDATE quote.quote_tickets SET status = 'EXPIRED'
    WHERE id IN (
        SELECT id FROM quote.quote_tickets
        WHERE status = 'PENDING' AND expires_at <= :now
        LIMIT :batch FOR UPDATE SKIP LOCKED
    )
    """
)

EXPIRED_CANDIDATES = text(
    """
    SELECT id FROM quote.quote_tickets
    WHERE status = 'EXPIRED' AND expires_at < :cutoff AND NOT (id = ANY(:skip))
    ORDER BY expires_at LIMIT :batch
    """
)

DELETE_IDS = text("DELETE FROM quote.quote_tickets WHERE id = ANY(:ids) AND status = 'EXPIRED'")


def expire_pending(conn: Connection, now: datetime, batch: int) -> int:
    """Mark up to `batch` pending quotes past their expiry as EXPIRED."""
    return conn.execute(EXPIRE_BATCH, {"now": now, "batch": batch}).rowcount


def delete_expired(
    conn: Connection,
    cutoff: datetime,
    batch: int,
    referenced: Callable[[list[uuid.UUID]], set[uuid.UUID]],
    kept: set[uuid.UUID],
) -> tuple[int, int]:
    """Delete up to `batch` quotes that expired before `cutoff`, except those a ramp references.

    `kept` collects the referenced ids so later batches skip them. Returns (examined, deleted).
    """
    ids = list(
        conn.scalars(EXPIRED_CANDIDATES, {"cutoff": cutoff, "batch": batch, "skip": list(kept)})
    )
    if not ids:
        return 0, 0
    still_used = referenced(ids)
    kept |= still_used
    deletable = [i for i in ids if i not in still_used]
    deleted = conn.execute(DELETE_IDS, {"ids": deletable}).rowcount if deletable else 0
    return len(ids), deleted
