"""Typed configuration from the environment, validated once at start-up."""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every gRPC service shares. Each service subclasses this with its own prefix."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    grpc_host: str = Field("127.0.0.1", description="Interface the gRPC server binds to.")
    grpc_port: int = Field(15051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    grpc_processes: int = Field(
        1, ge=1, le=64, description="Server processes sharing the port (SO_REUSEPORT)."
    )
    database_url: str = Field(
        "", description="PostgreSQL URL. Empty means: start the embedded server (local runs)."
    )
    db_pool_size: int = Field(10, ge=1, le=200, description="Connections kept in the pool.")
    db_max_overflow: int = Field(5, ge=0, le=200, description="Extra connections under load.")
    db_direct_pool_size: int = Field(
        8, ge=1, le=200, description="Connections for the hot single-statement paths."
    )
    db_pool_timeout_s: float = Field(5.0, gt=0, description="Wait for a pooled connection.")
    db_statement_timeout_ms: int = Field(5000, ge=100, description="Per-statement time limit.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Drain time for in-flight calls.")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_rpcs: bool = Field(True, description="Log one line per RPC.")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="The event loop: uvloop (less CPU per call) or asyncio's own."
    )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Build `cls` from the environment or exit with one clear line per bad value."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [f"invalid configuration for {cls.__name__}:"]
        for err in exc.errors():
            name = prefix + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}={err.get('input')!r}: {err['msg']}")
        sys.stderr.write("\n".join(lines) + "\n")
        raise SystemExit(2) from None
