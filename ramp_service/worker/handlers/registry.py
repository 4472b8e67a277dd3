"""Wire the phase handlers to the adapters named by the worker's settings."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from ramp_service.adapters.registration import build_adapters
from ramp_service.worker.config import WorkerSettings
from ramp_service.worker.handlers.phases import Chains, FundingLock


def build_chains(settings: WorkerSettings, engine: AsyncEngine) -> Chains:
    """The adapters and funding keys the handlers use."""
    adapters = build_adapters(settings)
    if adapters.stellar_funding is None or adapters.pendulum_funding is None:
        raise SystemExit(
            "STELLAR_FUNDING_SECRET and PENDULUM_FUNDING_SEED must be set for the worker"
        )
    return Chains(
        stellar=adapters.stellar,
        pendulum=adapters.pendulum,
        anchor=adapters.anchor,
        pix=adapters.pix,
        stellar_funding=adapters.stellar_funding,
        pendulum_funding=adapters.pendulum_funding,
        funding_lock=FundingLock(engine),
        ephemeral_xlm=Decimal(settings.ephemeral_starting_xlm),
        ephemeral_pen=Decimal(settings.ephemeral_fee_pen),
        poll=timedelta(milliseconds=settings.worker_chain_poll_ms),
        swap_soft_margin=Decimal(settings.swap_soft_margin),
        late_deposit_watch=timedelta(seconds=settings.late_deposit_watch_s),
    )
