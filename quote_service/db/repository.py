"""Quote persistence. Repositories add, query and flush; the service layer commits."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, AsyncCursor, AsyncRawCursor
from psycopg.rows import namedtuple_row

from quote_service.db.models import QuoteRow
from quote_service.domain.corridors import DECIMALS
from quote_service.domain.pricing import Fees, quantum
from quote_service.domain.quote import QuoteStatus, QuoteTicket

GET_TICKET_SQL = "SELECT {} FROM quote.quote_tickets WHERE id = %s".format(
    ", ".join(column.name for column in QuoteRow.__table__.columns)
)


def _to_ticket(row: Any) -> QuoteTicket:
    def money(value: Decimal, currency: str) -> Decimal:
        # NUMERIC(38, 18) pads the scale; show amounts at their currency's decimals.
        return value.quantize(quantum(DECIMALS[currency]))

    fee_currency = row.fee_currency
    return QuoteTicket(
        id=row.id,
        ramp_type=row.ramp_type,
        from_network=row.from_network,
        to_network=row.to_network,
        input_amount=money(row.input_amount, row.input_currency),
        input_currency=row.input_currency,
        output_amount=money(row.output_amount, row.output_currency),
        output_currency=row.output_currency,
        rate=row.rate,
        fees=Fees(
            network=money(row.fee_network, fee_currency),
            platform=money(row.fee_platform, fee_currency),
            anchor=money(row.fee_anchor, fee_currency),
            partner_markup=money(row.fee_partner_markup, fee_currency),
            currency=fee_currency,
        ),
        partner_id=row.partner_id,
        status=QuoteStatus(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        consumed_by=row.consumed_by,
        consumed_at=row.consumed_at,
    )


_INSERT_COLUMNS = [
    c.name for c in QuoteRow.__table__.columns if c.name not in ("consumed_by", "consumed_at")
]


@functools.cache
def insert_tickets_sql(rows: int) -> str:
    """The INSERT of `rows` tickets, one prepared statement per row count on each connection.
    PostgreSQL's own `$n` placeholders (a raw cursor): psycopg parses and caches a `%s` query
    of at most 50 parameters only, and a batch of three tickets has 57; re-parsing each batch
    cost more client CPU than a whole row's insert."""
    width = len(_INSERT_COLUMNS)
    values = ", ".join(
        "({})".format(", ".join(f"${row * width + column + 1}" for column in range(width)))
        for row in range(rows)
    )
    return f"INSERT INTO quote.quote_tickets ({', '.join(_INSERT_COLUMNS)}) VALUES {values}"


def _ticket_values(ticket: QuoteTicket) -> dict[str, object]:
    return {
        "id": ticket.id,
        "ramp_type": ticket.ramp_type,
        "from_network": ticket.from_network,
        "to_network": ticket.to_network,
        "input_amount": ticket.input_amount,
        "input_currency": ticket.input_currency,
        "output_amount": ticket.output_amount,
        "output_currency": ticket.output_currency,
        "rate": ticket.rate,
        "fee_network": ticket.fees.network,
        "fee_platform": ticket.fees.platform,
        "fee_anchor": ticket.fees.anchor,
        "fee_partner_markup": ticket.fees.partner_markup,
        "fee_total": ticket.fees.total,
        "fee_currency": ticket.fees.currency,
        "partner_id": ticket.partner_id,
        "status": ticket.status.value,
        "created_at": ticket.created_at,
        "expires_at": ticket.expires_at,
    }


async def insert_tickets(conn: AsyncConnection[Any], tickets: Sequence[QuoteTicket]) -> None:
    """Store new tickets as one prepared multi-row INSERT: one transaction, durable when it
    returns on an autocommit connection (the hot path of CreateQuote, group-committed by the
    coalescer `quote_service.main` builds)."""
    params: list[object] = []
    for ticket in tickets:
        values = _ticket_values(ticket)
        params.extend(values[c] for c in _INSERT_COLUMNS)
    await AsyncRawCursor(conn).execute(insert_tickets_sql(len(tickets)), params, prepare=True)


async def fetch_ticket(conn: AsyncConnection[Any], quote_id: uuid.UUID) -> QuoteTicket | None:
    """The ticket with this id, or None: one prepared select (the hot path of GetQuote)."""
    return await _fetch_ticket(conn.cursor(row_factory=namedtuple_row), quote_id)


async def _fetch_ticket(cursor: AsyncCursor[Any], quote_id: uuid.UUID) -> QuoteTicket | None:
    await cursor.execute(GET_TICKET_SQL, (quote_id,), prepare=True)
    row = await cursor.fetchone()
    return _to_ticket(row) if row else None


CONSUME_TICKET_SQL = """
UPDATE quote.quote_tickets
SET status = 'CONSUMED', consumed_by = %(ramp_id)s, consumed_at = %(now)s
WHERE id = %(id)s AND status = 'PENDING' AND expires_at > %(now)s
RETURNING {}
""".format(", ".join(column.name for column in QuoteRow.__table__.columns))


async def consume_if_pending(
    conn: AsyncConnection[Any], quote_id: uuid.UUID, ramp_id: str, now: datetime
) -> QuoteTicket | None:
    """Atomically mark a pending, unexpired ticket consumed by `ramp_id`; None when it was not.
    One prepared statement: a concurrent consume waits for the row and then finds it taken."""
    cursor = conn.cursor(row_factory=namedtuple_row)
    await cursor.execute(
        CONSUME_TICKET_SQL, {"id": quote_id, "ramp_id": ramp_id, "now": now}, prepare=True
    )
    row = await cursor.fetchone()
    return _to_ticket(row) if row else None
