"""Factories for ramps stored straight into schema `ramp` (engine tests start past register)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ramp_service.db.models import RampRow
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
