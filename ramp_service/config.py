"""Configuration of the ramp service and worker (environment variables, validated at start-up)."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr

from service_kit.config import ServiceSettings

# Pendulum clients loaded at start by default: chain calls run on asyncio's default thread pool,
# which has min(32, cores + 4) threads, and under a burst of registers each busy thread holds a
# client (with four, the fifth and sixth each decoded the runtime's metadata inside the first
# burst). At most six: each holds a decoded runtime, and a big node's core count is not the pod's.
WARM_CLIENTS = min(6, (os.cpu_count() or 1) + 4)


class RampSettings(ServiceSettings):
    """Ramp service settings on top of the shared service settings."""

    grpc_port: int = Field(15052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    quote_service_target: str = Field(
        "127.0.0.1:15051",
        description="Quote service gRPC target (host:port or dns:///name:port; calls are"
        " balanced round robin over every address it resolves to).",
    )
    quote_timeout_s: float = Field(2.0, gt=0, le=30, description="Deadline of each quote call.")
    start_window_s: int = Field(900, ge=30, le=86400, description="Register → start deadline.")
    idempotency_ttl_s: int = Field(86400, ge=60, description="How long responses are replayed.")
    horizon_url: str = Field("http://127.0.0.1:8000", description="Stellar Horizon.")
    stellar_network_passphrase: str = Field(
        "Pendulum Pay Devnet ; November 2026", description="Stellar network passphrase."
    )
    substrate_url: str = Field("ws://127.0.0.1:9944", description="Pendulum JSON-RPC endpoint.")
    pendulum_warm_clients: int = Field(
        WARM_CLIENTS,
        ge=0,
        le=32,
        description="Pendulum clients whose runtime is loaded at start, beside the metadata"
        " client (default: as many as register's chain calls run at once, at most six; the rest"
        " load on first use).",
    )
    anchor_url: str = Field("http://127.0.0.1:8001", description="SEP-24 anchor.")
    pix_url: str = Field("http://127.0.0.1:8002", description="PIX partner (BRLA).")
    pix_payment_window_s: int = Field(
        3600,
        ge=60,
        le=86400,
        description="BUY: how long the PIX charge opened at start can be paid (its expiry).",
    )
    chain_timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of chain calls.")
    stellar_funding_secret: SecretStr = Field(
        SecretStr(""), description="Secret seed (S...) of the Stellar funding account."
    )
    stellar_funding_account: str = Field(
        "",
        description="Public key (G...) of the Stellar funding account: all the API needs (the "
        "worker signs with STELLAR_FUNDING_SECRET); empty: derived from that secret, if set.",
    )
    pendulum_funding_account: str = Field(
        "",
        description="SS58 address of the Pendulum funding account, for the API as above; "
        "empty: derived from PENDULUM_FUNDING_SEED, if set.",
    )
    admin_token: SecretStr = Field(
        SecretStr(""), description="Bearer token of the admin API; empty closes it."
    )
    pendulum_funding_seed: SecretStr = Field(
        SecretStr(""), description="Secret seed/mnemonic of the Pendulum funding account."
    )
