"""Gateway settings from the environment; the same rendering serves local runs and Kubernetes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class GatewaySettings(BaseSettings):
    """Ports, upstreams, files and limits of the gateway."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_prefix="GATEWAY_")

    host: str = Field("0.0.0.0", description="Interface of the REST listener.")
    port: int = Field(8080, ge=0, le=65535, description="REST listener port.")
    admin_port: int = Field(9901, ge=0, le=65535, description="Envoy admin, loopback only.")
    quote_upstream: str = Field(
        "127.0.0.1:15051", description="host:port of the quote service (several: comma-separated)."
    )
    ramp_upstream: str = Field(
        "127.0.0.1:15052",
        description="host:port of the ramp service (several: comma-separated); empty = none.",
    )
    descriptor_path: Path = Field(ROOT / "build" / "descriptors.pb", description="Descriptor set.")
    openapi_path: Path = Field(
        ROOT / "build" / "openapi.json", description="Served at /v1/openapi.json."
    )
    cors_origins: str = Field(
        "http://localhost:3000,http://localhost:5173",
        description="Comma-separated allowed origins.",
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Larger request bodies get 413.")
    rate_limit_tokens: int = Field(200, ge=1, description="Burst per client.")
    rate_limit_per_s: int = Field(
        100, ge=1, description="Sustained requests per second per client."
    )
    route_timeout_s: float = Field(15.0, gt=0, description="Upstream timeout of each route.")
    upstream_streams_per_connection: int = Field(
        8,
        ge=1,
        description="Streams one upstream HTTP/2 connection carries before Envoy opens another:"
        " a service's SO_REUSEPORT processes each get connections only if there are several.",
    )
    xff_trusted_hops: int = Field(
        0,
        ge=0,
        description="Proxies in front of the gateway that append to X-Forwarded-For (an"
        " ingress: 1). The client address (rate limit, access log) is the entry that many from"
        " the right; 0 = the connection's peer, X-Forwarded-For ignored.",
    )
    health_interval_s: float = Field(2.0, gt=0, description="Active gRPC health check interval.")
    concurrency: int = Field(
        1,
        ge=1,
        le=256,
        description="Envoy worker threads (--concurrency): the CPUs the gateway may use. Envoy's"
        " own default is one per hardware thread of the host, whatever the container's limit.",
    )
    reason_status: str = Field(
        "IDEMPOTENCY_KEY_REUSED=422,IDEMPOTENCY_REQUEST_IN_PROGRESS=409,QUOTE_CONSUMED=409,"
        "RAMP_NOT_INITIAL=409,RAMP_ALREADY_STARTED=409,EPHEMERAL_NOT_FRESH=409",
        description="ErrorInfo reason → HTTP status overrides (the gRPC code's default otherwise).",
    )

    def origins(self) -> list[str]:
        """Allowed CORS origins."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def status_overrides(self) -> dict[str, int]:
        """Parsed `reason_status`."""
        pairs = (item.split("=") for item in self.reason_status.split(",") if item.strip())
        return {reason.strip(): int(status) for reason, status in pairs}
