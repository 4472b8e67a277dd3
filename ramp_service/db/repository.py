"""Ramp persistence. Repositories add, query and flush; the service layer commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ramp_service.db.models import (
    PhaseEventRow,
    RampErrorRow,
    RampRow,
    RampTransactionRow,
)
from ramp_service.domain.flows import INITIAL, Network
from ramp_service.domain.ramp import (
    AdditionalData,
    IssuedTx,
    PhaseEntry,
    QuoteSnapshot,
    RampRecord,
    RampStatus,
    RecordedError,
    SigningAccount,
    StoredTx,
)
from service_kit.db import driver_cursor

CURRENCY_DECIMALS = {"USDC": 6, "EUR": 2, "ARS": 2, "BRL": 2}


def _money(value: Decimal, currency: str) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-CURRENCY_DECIMALS.get(currency, 6)))


class RampRepository:
    """Reads and writes ramps inside the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, record: RampRecord, actor: str) -> None:
        """Insert a new ramp with its accounts, issued transactions and first phase event."""
        await insert_ramp(await driver_cursor(self._session), record, actor)

    async def append_event(
        self,
        ramp_id: uuid.UUID,
        from_phase: str | None,
        to_phase: str,
        status: str,
        actor: str,
        at: datetime,
        note: str = "",
    ) -> None:
        """Append to the phase history."""
        self._session.add(
            PhaseEventRow(
                ramp_id=ramp_id,
                from_phase=from_phase,
                to_phase=to_phase,
                status=status,
                actor=actor,
                note=note,
                created_at=at,
            )
        )
        await self._session.flush()

    async def lock(self, ramp_id: uuid.UUID) -> RampRow | None:
        """The ramp row, locked for the rest of the transaction."""
        return await self._session.scalar(
            select(RampRow).where(RampRow.id == ramp_id).with_for_update()
        )

    async def store_presigned(
        self, ramp_id: uuid.UUID, phase: str, network: str, payload: str, at: datetime
    ) -> None:
        """Record (or replace) the presigned payload of an issued transaction."""
        await self._session.execute(
            update(RampTransactionRow)
            .where(
                RampTransactionRow.ramp_id == ramp_id,
                RampTransactionRow.phase == phase,
                RampTransactionRow.network == network,
            )
            .values(presigned_payload=payload, status="PRESIGNED", updated_at=at)
        )

    async def get(self, ramp_id: uuid.UUID) -> RampRecord | None:
        """Everything a reader sees of one ramp, in one round trip (in the caller's transaction)."""
        return await _fetch_record(await driver_cursor(self._session, dict_row), ramp_id)

    async def errors(self, ramp_id: uuid.UUID, limit: int = 100) -> list[RecordedError]:
        """The ramp's newest errors first."""
        rows = await self._session.scalars(
            select(RampErrorRow)
            .where(RampErrorRow.ramp_id == ramp_id)
            .order_by(RampErrorRow.id.desc())
            .limit(limit)
        )
        return [_error(r) for r in rows]

    async def exists(self, ramp_id: uuid.UUID) -> bool:
        """Whether the ramp exists."""
        return bool(await self._session.scalar(select(func.count()).where(RampRow.id == ramp_id)))

    async def page_by_wallet(
        self, wallet: str, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[RampRecord]:
        """Up to `limit` ramps of `wallet`, newest first, strictly after the keyset `after`."""
        where = "r.wallet_address = :wallet"
        params: dict[str, object] = {"wallet": wallet, "limit": limit}
        if after is not None:
            where += " AND (r.created_at, r.id) < (:created, :rid)"
            params["created"], params["rid"] = after
        sql = RECORD_SQL.format(
            where=where, tail="ORDER BY r.created_at DESC, r.id DESC LIMIT :limit"
        )
        rows = await self._session.execute(text(sql), params)
        return [_record(row) for row in rows.mappings()]


# One statement per read: the ramp and, aggregated as JSON, its accounts, transactions, phase
# history and newest error (GetRamp is what every frontend polls).
RECORD_SQL = """
SELECT r.*,
  (SELECT coalesce(json_agg(json_build_object('network', a.network, 'address', a.address)
                            ORDER BY a.network), '[]')
     FROM ramp.signing_accounts a WHERE a.ramp_id = r.id) AS accounts_json,
  (SELECT coalesce(json_agg(json_build_object(
            'phase', t.phase, 'network', t.network, 'signer', t.signer, 'nonce', t.nonce,
            'unsigned', t.unsigned_payload, 'meta', t.meta, 'presigned', t.presigned_payload,
            'status', t.status) ORDER BY t.network, t.nonce), '[]')
     FROM ramp.transactions t WHERE t.ramp_id = r.id) AS txs_json,
  (SELECT coalesce(json_agg(json_build_object('phase', e.to_phase, 'at', e.created_at)
                            ORDER BY e.id), '[]')
     FROM ramp.phase_events e WHERE e.ramp_id = r.id) AS events_json,
  (SELECT json_build_object('phase', x.phase, 'reason', x.reason, 'message', x.message,
                            'recoverable', x.recoverable, 'at', x.created_at)
     FROM ramp.errors x WHERE x.ramp_id = r.id ORDER BY x.id DESC LIMIT 1) AS last_error_json
FROM ramp.ramps r WHERE {where} {tail}
"""


# RegisterRamp's write, one statement: the ramp, its signing accounts, its issued transactions
# and its first phase event. A quote (unique quote_id) or an ephemeral address
# (uq_signing_accounts_address) another ramp took fails the whole statement with a unique
# violation naming the constraint.
INSERT_RAMP_SQL = """
WITH ramp AS (
    INSERT INTO ramp.ramps (
        id, ramp_type, corridor, flow_version, quote_id, input_amount, input_currency,
        output_amount, output_currency, fee_total, wallet_address, destination, tax_id, status,
        current_phase, partner_data, request_hash, start_deadline, generation, attempts,
        created_at, updated_at)
    VALUES (
        %(id)s, %(ramp_type)s, %(corridor)s, %(flow_version)s, %(quote_id)s, %(input_amount)s,
        %(input_currency)s, %(output_amount)s, %(output_currency)s, %(fee_total)s,
        %(wallet_address)s, %(destination)s, %(tax_id)s, %(status)s, %(phase)s,
        %(partner_data)s::jsonb, %(request_hash)s, %(start_deadline)s, 0, 0, %(created_at)s,
        %(updated_at)s)
    RETURNING id
), accounts AS (
    INSERT INTO ramp.signing_accounts (ramp_id, network, address)
    SELECT ramp.id, a.network, a.address
    FROM ramp, jsonb_to_recordset(%(accounts)s::jsonb) AS a(network text, address text)
), txs AS (
    INSERT INTO ramp.transactions (
        ramp_id, phase, network, signer, nonce, unsigned_payload, meta, presigned_payload,
        status, updated_at)
    SELECT ramp.id, t.phase, t.network, t.signer, t.nonce, t.unsigned, t.meta, t.presigned,
           t.status, %(created_at)s
    FROM ramp, jsonb_to_recordset(%(txs)s::jsonb) AS t(
        phase text, network text, signer text, nonce bigint, unsigned text, meta jsonb,
        presigned text, status text)
)
INSERT INTO ramp.phase_events (ramp_id, from_phase, to_phase, status, actor, note, created_at)
SELECT ramp.id, NULL, %(phase)s, %(status)s, %(actor)s, '', %(created_at)s FROM ramp
"""


async def insert_ramp(cursor: AsyncCursor[Any], record: RampRecord, actor: str) -> None:
    """Store a new ramp (RegisterRamp's write): one prepared statement in `cursor`'s
    transaction, or its own on an autocommit connection."""
    q = record.quote
    await cursor.execute(
        INSERT_RAMP_SQL,
        {
            "id": record.id,
            "ramp_type": q.ramp_type,
            "corridor": q.corridor,
            "flow_version": record.flow_version,
            "quote_id": q.id,
            "input_amount": q.input_amount,
            "input_currency": q.input_currency,
            "output_amount": q.output_amount,
            "output_currency": q.output_currency,
            "fee_total": q.fee_total,
            "wallet_address": record.additional_data.wallet_address,
            "destination": record.additional_data.destination,
            "tax_id": record.additional_data.tax_id,
            "status": record.status.value,
            "phase": record.current_phase,
            "partner_data": json.dumps(record.partner_data),
            "request_hash": record.request_hash,
            "start_deadline": record.start_deadline,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "actor": actor,
            "accounts": json.dumps(
                [{"network": a.network.value, "address": a.address} for a in record.accounts]
            ),
            "txs": json.dumps(
                [
                    {
                        "phase": t.issued.phase,
                        "network": t.issued.network.value,
                        "signer": t.issued.signer,
                        "nonce": t.issued.nonce,
                        "unsigned": t.issued.tx_data,
                        "meta": t.issued.meta,
                        "presigned": t.presigned_payload,
                        "status": t.status,
                    }
                    for t in record.txs
                ]
            ),
        },
        prepare=True,
    )


# Before RegisterRamp touches chains or partners: the ramp that already holds the quote, and
# which of the new ephemeral addresses some ramp already uses. One prepared statement.
REGISTER_CONFLICTS_SQL = """
SELECT (SELECT id FROM ramp.ramps WHERE quote_id = %(quote_id)s) AS holder,
       ARRAY(SELECT ARRAY[a.network, a.address]::text[] FROM ramp.signing_accounts AS a
             JOIN unnest(%(networks)s::text[], %(addresses)s::text[]) AS n(network, address)
               ON a.network = n.network AND a.address = n.address) AS in_use
"""


async def register_conflicts(
    conn: AsyncConnection[Any], quote_id: uuid.UUID, accounts: Sequence[SigningAccount]
) -> tuple[uuid.UUID | None, set[tuple[str, str]]]:
    """The ramp holding `quote_id`, if any, and the (network, address) pairs among `accounts`
    that some ramp already uses."""
    cursor = await conn.execute(
        REGISTER_CONFLICTS_SQL,
        {
            "quote_id": quote_id,
            "networks": [a.network.value for a in accounts],
            "addresses": [a.address for a in accounts],
        },
        prepare=True,
    )
    row = await cursor.fetchone()
    assert row is not None  # a select without FROM returns one row
    return row[0], {(network, address) for network, address in row[1]}


# StartRamp's write, one statement (atomic on an autocommit connection): the ramp moves from
# REGISTERED to RUNNING only while its start deadline lies ahead, with the facts of the payment
# opened for it (a BUY's PIX charge) added to its partner data, and only if it did, its presigned
# payloads are stored and its "started" event appended. Under READ COMMITTED a concurrent start
# waits for the row and then finds it RUNNING: exactly one start wins.
START_SQL = """
WITH won AS (
    UPDATE ramp.ramps
    SET status = 'RUNNING', next_attempt_at = %(now)s, phase_started_at = %(now)s,
        updated_at = %(now)s, wallet_address = %(wallet_address)s,
        destination = %(destination)s, tax_id = %(tax_id)s,
        partner_data = partner_data || %(payment)s::jsonb
    WHERE id = %(id)s AND status = 'REGISTERED' AND start_deadline > %(now)s
    RETURNING id
), signed AS (
    UPDATE ramp.transactions AS t
    SET presigned_payload = p.payload, status = 'PRESIGNED', updated_at = %(now)s
    FROM won, jsonb_to_recordset(%(payloads)s::jsonb) AS p(phase text, network text, payload text)
    WHERE t.ramp_id = won.id AND t.phase = p.phase AND t.network = p.network
), started AS (
    INSERT INTO ramp.phase_events (ramp_id, from_phase, to_phase, status, actor, note, created_at)
    SELECT id, %(initial)s, %(initial)s, 'RUNNING', %(actor)s, 'started', %(now)s FROM won
)
SELECT count(*) AS won FROM won
"""


async def start_ramp(
    conn: AsyncConnection[Any],
    ramp_id: uuid.UUID,
    payloads: Mapping[tuple[str, str], str],
    data: AdditionalData,
    payment: Mapping[str, str],
    actor: str,
    now: datetime,
) -> bool:
    """Store `payloads` and the `payment` opened for the ramp (added to its partner data) and
    hand the ramp to the processor, if it is still REGISTERED and its start deadline lies after
    `now`; whether this call did."""
    cursor = await conn.execute(
        START_SQL,
        {
            "id": ramp_id,
            "now": now,
            "wallet_address": data.wallet_address,
            "destination": data.destination,
            "tax_id": data.tax_id,
            "payment": json.dumps(dict(payment)),
            "payloads": json.dumps(
                [{"phase": ph, "network": n, "payload": p} for (ph, n), p in payloads.items()]
            ),
            "initial": INITIAL,
            "actor": actor,
        },
        prepare=True,
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


GET_RECORD_SQL = RECORD_SQL.format(where="r.id = %(id)s", tail="")
GET_RECORDS_SQL = RECORD_SQL.format(where="r.id = ANY(%(ids)s::uuid[])", tail="")

# A value that changes whenever anything a reader sees of the ramp changes, whichever statement
# changed it: the ramp row's version (`xmin`, the transaction that wrote the row as it is now:
# every UPDATE writes a new one), its newest phase event and error (append-only, serial ids), and
# each transaction row's version. Equal versions mean the same content (a later writer is a later
# transaction; one that wrote earlier has committed and writes no more), so a poll can answer
# from what it rendered before after this cheap read, instead of aggregating everything again.
# `updated_at` beside `xmin`: transaction ids are 32 bits and a restored or failed-over database
# reuses them, a microsecond timestamp with them does not repeat. Fixed slots (concat renders
# NULL as nothing, in its place, between its own separators).
VERSION_EXPR = """concat(r.xmin, ':', r.updated_at, ':',
  (SELECT max(e.id) FROM ramp.phase_events e WHERE e.ramp_id = r.id), ':',
  (SELECT max(x.id) FROM ramp.errors x WHERE x.ramp_id = r.id), ':',
  (SELECT string_agg(t.xmin::text, ',' ORDER BY t.phase, t.network)
     FROM ramp.transactions t WHERE t.ramp_id = r.id))"""
GET_VERSION_SQL = f"SELECT {VERSION_EXPR} AS version FROM ramp.ramps r WHERE r.id = %(id)s"
# The record and its version from one snapshot (one statement).
GET_VERSIONED_RECORD_SQL = GET_RECORD_SQL.replace(
    "SELECT r.*,", f"SELECT r.*, {VERSION_EXPR} AS version,", 1
)
assert GET_VERSIONED_RECORD_SQL != GET_RECORD_SQL, "RECORD_SQL no longer starts as expected"


async def fetch_record(conn: AsyncConnection[Any], ramp_id: uuid.UUID) -> RampRecord | None:
    """Everything a reader sees of one ramp: one prepared statement (every status poll)."""
    return await _fetch_record(conn.cursor(row_factory=dict_row), ramp_id)


async def fetch_version(conn: AsyncConnection[Any], ramp_id: uuid.UUID) -> str | None:
    """The ramp's version (see VERSION_EXPR), or None when there is no such ramp."""
    cursor = conn.cursor()
    await cursor.execute(GET_VERSION_SQL, {"id": ramp_id}, prepare=True)
    row = await cursor.fetchone()
    return str(row[0]) if row else None


async def fetch_versioned_record(
    conn: AsyncConnection[Any], ramp_id: uuid.UUID
) -> tuple[RampRecord, str] | None:
    """The ramp as `fetch_record` reads it, with its version as of the same read."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(GET_VERSIONED_RECORD_SQL, {"id": ramp_id}, prepare=True)
    row = await cursor.fetchone()
    return (_record(row), str(row["version"])) if row else None


async def fetch_records(
    conn: AsyncConnection[Any], ramp_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, RampRecord]:
    """The records of `ramp_ids` that exist, by id: one prepared statement."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(GET_RECORDS_SQL, {"ids": list(ramp_ids)}, prepare=True)
    return {row["id"]: _record(row) for row in await cursor.fetchall()}


async def _fetch_record(cursor: AsyncCursor[Any], ramp_id: uuid.UUID) -> RampRecord | None:
    await cursor.execute(GET_RECORD_SQL, {"id": ramp_id}, prepare=True)
    row = await cursor.fetchone()
    return _record(row) if row else None


def _record(row: Mapping[Any, Any]) -> RampRecord:
    """A RampRecord from one RECORD_SQL row."""
    events = row["events_json"]
    history = tuple(
        PhaseEntry(e["phase"], datetime.fromisoformat(e["at"]))
        for i, e in enumerate(events)
        if i == 0 or e["phase"] != events[i - 1]["phase"]
    )
    error = row["last_error_json"]
    corridor = row["corridor"].split(":")
    return RampRecord(
        id=row["id"],
        quote=QuoteSnapshot(
            id=row["quote_id"],
            ramp_type=row["ramp_type"],
            from_network=corridor[1],
            to_network=corridor[2],
            input_amount=_money(row["input_amount"], row["input_currency"]),
            input_currency=row["input_currency"],
            output_amount=_money(row["output_amount"], row["output_currency"]),
            output_currency=row["output_currency"],
            fee_total=_money(row["fee_total"], row["input_currency"]),
            status="CONSUMED",
            expires_at=row["start_deadline"],
        ),
        status=RampStatus(row["status"]),
        current_phase=row["current_phase"],
        flow_version=row["flow_version"],
        accounts=tuple(
            SigningAccount(Network(a["network"]), a["address"]) for a in row["accounts_json"]
        ),
        additional_data=AdditionalData(row["wallet_address"], row["destination"], row["tax_id"]),
        txs=tuple(
            StoredTx(
                IssuedTx(
                    t["phase"],
                    Network(t["network"]),
                    t["signer"],
                    int(t["nonce"]),
                    t["unsigned"],
                    dict(t["meta"]),
                ),
                t["presigned"],
                t["status"],
            )
            for t in row["txs_json"]
        ),
        partner_data=dict(row["partner_data"]),
        history=history,
        last_error=RecordedError(
            error["phase"],
            error["reason"],
            error["message"],
            error["recoverable"],
            datetime.fromisoformat(error["at"]),
        )
        if error
        else None,
        start_deadline=row["start_deadline"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        request_hash=row["request_hash"],
    )


def _error(row: RampErrorRow) -> RecordedError:
    return RecordedError(row.phase, row.reason, row.message, row.recoverable, row.created_at)
