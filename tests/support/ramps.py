"""Factories for ramps stored straight into schema `ramp` (engine tests start past register)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.db.models import RampErrorRow, RampRow
from ramp_service.db.repository import RampRepository
from ramp_service.domain.flows import CURRENT_FLOW, INITIAL, Network
from ramp_service.domain.ramp import (
    AdditionalData,
    IssuedTx,
    QuoteSnapshot,
    RampRecord,
    RampStatus,
    SigningAccount,
    StoredTx,
)


def sell_record(now: datetime) -> RampRecord:
    """A SELL ramp in `initial` whose every transaction is presigned (with dummy payloads)."""
    quote_id = uuid.uuid4()
    quote = QuoteSnapshot(
        quote_id,
        "SELL",
        "pendulum",
        "sepa",
        Decimal("100.000000"),
        "USDC",
        Decimal("90.00"),
        "EUR",
        Decimal("1.550000"),
        "CONSUMED",
        now,
    )
    accounts = (
        SigningAccount(Network.STELLAR, f"G{uuid.uuid4().hex}"),
        SigningAccount(Network.PENDULUM, f"5{uuid.uuid4().hex}"),
    )
    signer = {a.network: a.address for a in accounts}
    txs = tuple(
        StoredTx(
            IssuedTx(phase, network, signer[network], i, f"unsigned-{phase}"),
            f"signed-{phase}",
            "PRESIGNED",
        )
        for i, (phase, network) in enumerate(CURRENT_FLOW["SELL"].presigned_requirements())
    )
    return RampRecord(
        id=uuid.uuid4(),
        quote=quote,
        status=RampStatus.REGISTERED,
        current_phase=INITIAL,
        flow_version=CURRENT_FLOW["SELL"].version,
        accounts=accounts,
        additional_data=AdditionalData("5Wallet", "DE89370400440532013000"),
        txs=txs,
        partner_data={},
        history=(),
        last_error=None,
        start_deadline=now + timedelta(minutes=15),
        created_at=now,
        updated_at=now,
        request_hash="x",
    )


async def insert_running(sessions: async_sessionmaker[AsyncSession], now: datetime) -> uuid.UUID:
    """Store a SELL ramp and mark it RUNNING and due now, as StartRamp would."""
    record = sell_record(now)
    async with sessions.begin() as session:
        await RampRepository(session).add(record, "test")
        await session.execute(
            update(RampRow)
            .where(RampRow.id == record.id)
            .values(status="RUNNING", next_attempt_at=now, phase_started_at=now)
        )
    return record.id


async def insert_registered(sessions: async_sessionmaker[AsyncSession], record: RampRecord) -> None:
    """Store a ramp as RegisterRamp would (REGISTERED, phase initial)."""
    async with sessions.begin() as session:
        await RampRepository(session).add(record, "user")


def buy_record(now: datetime, pendulum: str, presigned: dict[str, tuple[int, str]]) -> RampRecord:
    """A BUY ramp of the ephemeral `pendulum` in `initial`; `presigned` gives the real (nonce,
    payload) of some phases' transactions, the others carry dummy payloads."""
    record = sell_record(now)
    quote = replace(
        record.quote,
        ramp_type="BUY",
        from_network="pix",
        to_network="assethub",
        input_currency="BRL",
        output_currency="USDC",
    )
    flow = CURRENT_FLOW["BUY"]
    txs = tuple(
        StoredTx(
            IssuedTx(phase, network, pendulum, presigned.get(phase, (i, ""))[0], f"u-{phase}"),
            presigned.get(phase, (i, f"signed-{phase}"))[1],
            "PRESIGNED",
        )
        for i, (phase, network) in enumerate(flow.presigned_requirements())
    )
    return replace(
        record,
        quote=quote,
        flow_version=flow.version,
        accounts=(SigningAccount(Network.PENDULUM, pendulum),),
        txs=txs,
    )


async def insert_at(
    sessions: async_sessionmaker[AsyncSession],
    record: RampRecord,
    phase: str,
    now: datetime,
    status: str = "RUNNING",
    cleanup_phase: str | None = None,
) -> uuid.UUID:
    """Store `record` and put it, due now, in `phase` (and cleanup phase) with `status`."""
    async with sessions.begin() as session:
        await RampRepository(session).add(record, "test")
        await session.execute(
            update(RampRow)
            .where(RampRow.id == record.id)
            .values(
                status=status,
                current_phase=phase,
                cleanup_phase=cleanup_phase,
                next_attempt_at=now,
                phase_started_at=now,
            )
        )
    return record.id


async def error_reasons(
    sessions: async_sessionmaker[AsyncSession], ramp_id: uuid.UUID
) -> list[str]:
    """The reasons of the errors recorded for `ramp_id`, oldest first."""
    async with sessions.begin() as session:
        found = await session.scalars(
            select(RampErrorRow.reason)
            .where(RampErrorRow.ramp_id == ramp_id)
            .order_by(RampErrorRow.id)
        )
        return list(found)
