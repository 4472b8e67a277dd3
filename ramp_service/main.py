"""Wiring of the ramp service: the only place that builds things."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc

from pendulumpay.ramp.v1 import admin_pb2, admin_pb2_grpc, ramp_pb2, ramp_pb2_grpc
from ramp_service.adapters.quote_client import GrpcQuoteClient, quote_channel
from ramp_service.admin import RampAdmin
from ramp_service.api.admin_servicer import BearerTokenInterceptor, RampAdminServicer
from ramp_service.api.servicer import RampServicer
from ramp_service.config import RampSettings
from ramp_service.idempotency import IdempotencyStore
from ramp_service.ports import RegistrationChains
from ramp_service.service import Clock, RampService, utc_now
from service_kit.config import load_settings
from service_kit.db import DirectPool, create_engine, session_factory
from service_kit.grpc_server import RunningServer, build_server, run_service

SERVICE_NAME = ramp_pb2.DESCRIPTOR.services_by_name["RampService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["RampAdminService"].full_name


@dataclass
class RampDeps:
    """What the server needs from outside; tests inject a clock, production builds the rest."""

    chains: RegistrationChains | None = None
    clock: Clock = utc_now


def create_server(
    settings: RampSettings, deps: RampDeps | None = None
) -> tuple[RunningServer, RampService]:
    """Build the ramp gRPC server (not started) and the service behind it."""
    deps = deps or RampDeps()
    if deps.chains is None:
        from ramp_service.adapters.registration import build_registration_chains

        deps.chains = build_registration_chains(settings)
    engine = create_engine(settings, "ramp_service")
    sessions = session_factory(engine)
    direct = DirectPool(settings, "ramp_service")
    channel = quote_channel(settings.quote_service_target)
    service = RampService(
        sessions,
        direct,
        GrpcQuoteClient(channel, settings.quote_timeout_s),
        deps.chains,
        timedelta(seconds=settings.start_window_s),
        deps.clock,
    )
    idempotency = IdempotencyStore(
        sessions, deps.clock, timedelta(seconds=settings.idempotency_ttl_s)
    )
    admin = RampAdmin(sessions, deps.clock, deps.chains)

    def register(server: grpc.aio.Server) -> None:
        ramp_pb2_grpc.add_RampServiceServicer_to_server(RampServicer(service, idempotency), server)
        admin_pb2_grpc.add_RampAdminServiceServicer_to_server(RampAdminServicer(admin), server)

    running = build_server(
        settings.grpc_host,
        settings.grpc_port,
        register,
        [SERVICE_NAME, ADMIN_SERVICE_NAME],
        log_rpcs=settings.log_rpcs,
        reuse_port=settings.grpc_processes > 1,
        interceptors=[BearerTokenInterceptor(settings.admin_token.get_secret_value())],
    )

    async def close_channel() -> None:
        await channel.close()

    running.on_stop.extend([close_channel, engine.dispose, direct.close, deps.chains.close])
    running.warm_up.append(deps.chains.warm_up)
    return running, service


def run() -> None:
    """Entry point of `python -m ramp_service`."""
    run_service("ramp service", load_settings(RampSettings), create_server)
