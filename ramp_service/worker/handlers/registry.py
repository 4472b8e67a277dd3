"""Wire the phase handlers to the adapters named by the worker's settings."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine
from stellar_sdk import Keypair as StellarKeypair
from substrateinterface import Keypair as SubstrateKeypair

from ramp_service.chains.partners import AnchorClient, PixClient
from ramp_service.chains.pendulum import SS58_FORMAT, PendulumChain
from ramp_service.chains.stellar import StellarChain
from ramp_service.worker.config import WorkerSettings
from ramp_service.worker.handlers import PhaseHandler
from ramp_service.worker.handlers.phases import Chains, FundingLock, build_phase_handlers


def build_chains(settings: WorkerSettings, engine: AsyncEngine) -> Chains:
    """The adapters and funding keys the handlers use."""
    stellar_secret = settings.stellar_funding_secret.get_secret_value()
    pendulum_seed = settings.pendulum_funding_seed.get_secret_value()
    if not stellar_secret or not pendulum_seed:
        raise SystemExit(
            "STELLAR_FUNDING_SECRET and PENDULUM_FUNDING_SEED must be set for the worker"
        )
    timeout = settings.chain_timeout_s
    return Chains(
        stellar=StellarChain(settings.horizon_url, settings.stellar_network_passphrase, timeout),
        pendulum=PendulumChain(settings.substrate_url, timeout),
        anchor=AnchorClient(settings.anchor_url, timeout),
        pix=PixClient(settings.pix_url, timeout),
        stellar_funding=StellarKeypair.from_secret(stellar_secret),
        pendulum_funding=SubstrateKeypair.create_from_uri(pendulum_seed, ss58_format=SS58_FORMAT),
        funding_lock=FundingLock(engine),
        ephemeral_xlm=Decimal(settings.ephemeral_starting_xlm),
        ephemeral_pen=Decimal(settings.ephemeral_fee_pen),
        poll=timedelta(milliseconds=settings.worker_chain_poll_ms),
        swap_soft_margin=Decimal(settings.swap_soft_margin),
    )


def build_handlers(settings: WorkerSettings, engine: AsyncEngine) -> dict[str, PhaseHandler]:
    """Every phase's handler over the configured networks and partners."""
    return build_phase_handlers(build_chains(settings, engine))
