"""Configuration of the cleanup job (environment variables, validated at start-up)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CleanupSettings(BaseSettings):
    """What to clean and how gently."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str = Field("", description="PostgreSQL URL (both schemas).")
    cleanup_batch_size: int = Field(1000, ge=1, le=100_000, description="Rows per batch.")
    cleanup_batch_pause_ms: int = Field(0, ge=0, le=60_000, description="Pause between batches.")
    cleanup_max_rows_per_s: int = Field(
        60_000,
        ge=0,
        description=(
            "Pace: rows touched per second over the run, at most (0: unpaced). The job shares "
            "the database's cores with the services; unpaced it takes what it can get."
        ),
    )
    quote_retention_days: int = Field(60, ge=1, description="Keep expired quotes this long.")
    idempotency_ttl_s: int = Field(
        86400,
        ge=60,
        description=(
            "Keep idempotency keys this long: the ramp service's own IDEMPOTENCY_TTL_S (the same "
            "variable, so one value serves both; a shorter one here would delete keys still "
            "inside their replay window)."
        ),
    )
    statement_timeout_ms: int = Field(10_000, ge=100, description="Per-statement time limit.")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
