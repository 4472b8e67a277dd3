"""The gRPC server bootstrap every service shares.

`build_server` returns an aio server with health checking, reflection and one interceptor for
the cross-cutting concerns (request id, access log, domain error → status mapping).
`serve_until_signal` runs it until SIGTERM/SIGINT, then drains in-flight calls.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from service_kit import errors
from service_kit.config import ServiceSettings
from service_kit.db import DATABASE_LOST, database_unavailable
from service_kit.heap import freeze_startup_heap
from service_kit.logs import AccessLog, configure_logging, new_request_id, request_id
from service_kit.loop import run as run_on_loop
from service_kit.protobuf import control_characters

log = logging.getLogger("grpc")

ERROR_DOMAIN = "pendulumpay.com"
WARM_UP_TIMEOUT_S = 30.0
REQUEST_ID_KEY = "x-request-id"

# The one table from domain error kinds to gRPC codes.
STATUS_BY_ERROR: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.DependencyUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code_for(exc: errors.DomainError) -> grpc.StatusCode:
    """The gRPC code for a domain error, by the nearest kind in its class hierarchy."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def rich_status(
    code: grpc.StatusCode, message: str, reason: str, exc: errors.DomainError | None = None
) -> status_pb2.Status:
    """A `google.rpc.Status` with `ErrorInfo` and, for bad fields, `BadRequest` details."""
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=ERROR_DOMAIN, metadata=dict(exc.metadata) if exc else {}
    )
    details = [info]
    if exc is not None and exc.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    packed = []
    for detail in details:
        any_msg = any_pb2.Any()
        any_msg.Pack(detail)
        packed.append(any_msg)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)


async def _abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    await context.abort(
        code,
        status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Sets the request id, logs each unary call and maps domain errors to rich statuses.

    Each method's wrapped handler is built once and reused: the request id is read from the
    call's own metadata, so nothing per call is captured (building a handler per call cost
    a closure and a handler tuple on every RPC)."""

    def __init__(self, log_rpcs: bool = True, access: AccessLog | None = None) -> None:
        self._log_rpcs = log_rpcs
        self.access = access or AccessLog()
        # method -> (the inner behaviour it wraps, the wrapped handler)
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler.unary_unary:
            return cached[1]
        wrapped = self._wrap(method, handler)
        if cached is None:  # the registered handler (an interceptor's one-off stays one-off)
            self._wrapped[method] = (handler.unary_unary, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary
        # Health probes (Envoy checks every second) would drown everything else.
        logged = self._log_rpcs and not method.startswith("/grpc.health.")
        access = self.access

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            given = None
            for key, value in context.invocation_metadata() or ():
                if key == REQUEST_ID_KEY:
                    given = str(value)
                    break
            rid = new_request_id(given)
            token = request_id.set(rid)
            started = time.perf_counter()
            outcome = "OK"
            try:
                if isinstance(request, Message):
                    if bad := control_characters(request):
                        raise errors.InvalidInput(
                            "INVALID_TEXT", "text fields may not hold control characters", bad
                        )
                elif isinstance(request, _Undecodable):
                    raise _refuse_undecodable(request)
                try:
                    return await inner(request, context)
                except DATABASE_LOST as exc:  # a session path's: retryable, as DirectPool's are
                    # The SQLSTATE tells a lost connection (08...) from a statement timeout
                    # (57014) or a runaway query; bound values are never in the text.
                    origin = getattr(exc, "orig", exc)
                    log.warning(
                        "database unavailable",
                        extra={
                            "method": method,
                            "error": type(exc).__name__,
                            "sqlstate": getattr(origin, "sqlstate", None),
                        },
                    )
                    raise database_unavailable(exc) from exc
            except errors.DomainError as exc:
                code = status_code_for(exc)
                outcome = f"{code.name}:{exc.reason}"
                await _abort(context, rich_status(code, exc.message, exc.reason, exc))
            except grpc.aio.AbortError:  # the handler aborted on purpose
                outcome = "ABORTED_BY_HANDLER"
                raise
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            except Exception as exc:
                outcome = "INTERNAL"
                log.exception("unhandled error", extra={"method": method})
                await _abort(
                    context,
                    rich_status(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL"),
                )
                raise AssertionError("unreachable") from exc
            finally:
                if logged and access.enabled():
                    access.record(
                        rid, method, outcome, round((time.perf_counter() - started) * 1000, 2)
                    )
                request_id.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


@dataclass(frozen=True)
class _Undecodable:
    """A request body the message type could not parse (bad UTF-8 in a string field, or not
    protobuf at all): the handler refuses it with a reason instead of grpc answering UNKNOWN
    with the parser's exception text."""

    detail: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Undecodable(str(exc))

    return parse


def _refuse_undecodable(request: _Undecodable) -> errors.InvalidInput:
    if "UTF-8" in request.detail:  # REST path and query parameters arrive as string fields
        return errors.InvalidInput("INVALID_TEXT", "text fields must be valid UTF-8")
    return errors.InvalidInput("MALFORMED_REQUEST", "the request is not a valid message")


@dataclass
class RunningServer:
    """A built server, the port it bound and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: tuple[str, ...]
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run after the port is open and before health says SERVING (readiness), each for at most
    # WARM_UP_TIMEOUT_S; a failure is logged and the service serves cold rather than not at all.
    warm_up: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    access: AccessLog = field(default_factory=AccessLog)
    # Freeze the heap once warm (service_kit.heap): set by `run_service`, the process entry
    # point; servers built inside a test process leave that process's collector alone.
    freeze_heap: bool = False

    async def start(self) -> None:
        """Start serving, warm up, and report every service SERVING."""
        # The whole server ("") stays SERVING from birth, as grpc's HealthServicer has it: that
        # is liveness. Readiness is the named services, set below after the warm-ups.
        await self.server.start()
        for warm in self.warm_up:
            try:
                await asyncio.wait_for(warm(), WARM_UP_TIMEOUT_S)
            except Exception as exc:  # a dependency may be down at start: serve anyway
                log.warning(
                    "warm-up failed; serving cold",
                    extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
                )
        if self.freeze_heap:
            freeze_startup_heap()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, then let in-flight calls finish for up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.access.flush()  # the drained calls' lines
        for release in self.on_stop:  # e.g. dispose the connection pool
            await release()


def build_server(
    host: str,
    port: int,
    register: Callable[[grpc.aio.Server], None],
    service_names: Iterable[str],
    *,
    log_rpcs: bool = True,
    max_concurrent_rpcs: int | None = None,
    reuse_port: bool = False,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
) -> RunningServer:
    """Build (not start) an aio server with our services plus health and reflection.

    `interceptors` run first (e.g. authentication), then the shared `ServiceInterceptor`.
    """
    access = AccessLog()
    server = grpc.aio.server(
        interceptors=[*interceptors, ServiceInterceptor(log_rpcs, access)],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[("grpc.so_reuseport", int(reuse_port))],
    )
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = tuple(service_names)
    reflection.enable_server_reflection(
        (
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC server to {host}:{port}")
    return RunningServer(server, bound, health, names, access=access)


async def serve_until_signal(running: RunningServer, grace: float) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await running.start()
        log.info("serving", extra={"port": running.port, "services": list(running.service_names)})
        await stop.wait()
        log.info("shutting down", extra={"grace_s": grace})
        await running.stop(grace)
        log.info("stopped")
    finally:
        running.access.flush()  # a failed start or stop still writes the calls it served


def run_service(
    name: str,
    settings: ServiceSettings,
    create: Callable[[Any], tuple[RunningServer, object]],
) -> None:
    """`python -m <service>`: log as JSON, build the server inside its loop, serve until SIGTERM."""
    configure_logging(settings.log_level)
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set (make run starts an embedded PostgreSQL)")

    children = _spawn_siblings(name, settings)

    async def serve() -> None:
        # The aio server must be built inside the loop that runs it.
        try:
            running, _ = create(settings)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{name} cannot start: {exc}") from exc
        running.freeze_heap = True
        await serve_until_signal(running, settings.shutdown_grace_s)

    try:
        run_on_loop(serve(), settings.event_loop)
    finally:
        for child in children:  # forward the stop; each drains its own calls
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=settings.shutdown_grace_s + 5)
            except subprocess.TimeoutExpired:
                child.kill()


_CHILD_ENV = "SERVICE_KIT_SIBLING"


def _die_with_parent() -> None:
    """In a sibling process: get SIGTERM when the first process dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn_siblings(name: str, settings: ServiceSettings) -> list[subprocess.Popen[bytes]]:
    """With GRPC_PROCESSES=N > 1, start N-1 more copies of this process on the same port
    (SO_REUSEPORT: the kernel spreads connections over them), one per core."""
    if settings.grpc_processes <= 1 or os.environ.get(_CHILD_ENV):
        return []
    if settings.grpc_port == 0:
        raise SystemExit(f"{name}: GRPC_PROCESSES > 1 needs a fixed GRPC_PORT")
    argv = [sys.executable, *sys.orig_argv[1:]]
    env = {**os.environ, _CHILD_ENV: "1"}
    return [
        subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent)
        for _ in range(settings.grpc_processes - 1)
    ]


__all__ = [
    "ERROR_DOMAIN",
    "STATUS_BY_ERROR",
    "RunningServer",
    "ServiceInterceptor",
    "build_server",
    "rich_status",
    "run_service",
    "serve_until_signal",
    "status_code_for",
]
