"""Configuration of the phase processor worker."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from ramp_service.config import RampSettings


class WorkerSettings(RampSettings):
    """Worker knobs on top of the ramp settings (chains, partners, database)."""

    # A batch's phase moves, record loads and lease releases share statements (coalesced per
    # event-loop turn); the journal, the funding lock and the gauges take their own connections:
    # overflow connections are closed on return, so keep the pool above what runs at once.
    db_pool_size: int = Field(20, ge=1, le=200, description="Connections kept in the pool.")

    # A claim of 32 shares each round trip and commit among up to 32 ramps' transitions
    # (10 claimed at a time: 364 no-op ramps/s on 2 cores; 32: see README "Performance").
    worker_batch_size: int = Field(32, ge=1, le=500, description="Ramps claimed per statement.")
    # Ramps one worker drives at once; the next claim goes out when half is free, so a ramp
    # stuck in a slow chain call holds only its own place (0: two batches' worth).
    worker_max_in_flight: int = Field(0, ge=0, le=5000, description="Ramps driven at once.")
    worker_poll_interval_ms: int = Field(500, ge=10, le=60_000, description="Idle poll interval.")
    worker_lease_s: float = Field(30.0, ge=1, le=600, description="Lease length; heartbeat at 1/3.")
    worker_phase_timeout_s: float = Field(60.0, ge=1, description="Longest single handler run.")
    worker_max_attempts: int = Field(8, ge=1, description="Recoverable errors before review.")
    worker_phase_budget_s: int = Field(1800, ge=10, description="Longest time in one phase.")
    deposit_timeout_s: int = Field(3600, ge=10, description="SELL: wait for the user's deposit.")
    pix_timeout_s: int = Field(
        7200,
        ge=10,
        description="BUY: brlaTeleport's time budget. An unpaid charge times the ramp out when"
        " the partner confirms it expired or cancelled (PIX_PAYMENT_WINDOW_S after start); past"
        " this budget a charge still pending, or paid and not minted, goes to MANUAL_REVIEW.",
    )
    late_deposit_watch_s: int = Field(
        259_200,
        ge=0,
        description="SELL: how long a timed-out ramp's deposit address is watched for money sent"
        " too late (reported as LATE_DEPOSIT); 0 = not watched.",
    )
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus metrics; 0 = off.")
    metrics_host: str = Field("127.0.0.1", description="Interface of the metrics endpoint.")
    worker_chain_poll_ms: int = Field(2000, ge=50, description="Re-check interval while waiting.")
    ephemeral_starting_xlm: str = Field("3", description="XLM a new Stellar ephemeral gets.")
    ephemeral_fee_pen: str = Field("1", description="PEN a Pendulum ephemeral gets for fees.")
    swap_soft_margin: str = Field(
        "0", description="Fraction above the quoted output the live pool must give to swap."
    )

    @field_validator("pix_timeout_s")
    @classmethod
    def _pix_budget_outlasts_the_charge(cls, value: int, info: ValidationInfo) -> int:
        """A budget ending before the charge does would send every unpaid BUY to review.
        (A field validator: its error quotes this value only, never the other settings.)"""
        window = info.data.get("pix_payment_window_s")
        if window is not None and value <= window:
            raise ValueError(f"must exceed PIX_PAYMENT_WINDOW_S ({window}), the charge's life")
        return value
