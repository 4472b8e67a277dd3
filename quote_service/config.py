"""Configuration of the quote service (environment variables, validated at start-up)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from quote_service.adapters.pricing_file import DEFAULT_PRICING_FILE
from service_kit.config import ServiceSettings


class QuoteSettings(ServiceSettings):
    """QUOTE_TTL_S, PRICING_FILE, QUOTE_CACHE_SIZE and QUOTE_INSERT_BATCH on top of the shared
    service settings."""

    grpc_port: int = Field(15051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    quote_ttl_s: int = Field(600, ge=10, le=86400, description="How long a quote stays usable.")
    pricing_file: Path = Field(DEFAULT_PRICING_FILE, description="Fee schedule and pool JSON.")
    quote_cache_size: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="Tickets each process holds for GetQuote (0: every read goes to the database).",
    )
    quote_insert_batch: int = Field(
        32,
        ge=1,
        le=64,  # one prepared statement per batch size and connection (psycopg keeps 100)
        description="Most quotes CreateQuote commits in one INSERT while others are on their way"
        " (1: each quote its own INSERT, at once).",
    )
