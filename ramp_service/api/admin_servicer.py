"""`pendulumpay.ramp.v1.RampAdminService`: internal operator RPCs behind a bearer token."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC

import grpc

from pendulumpay.ramp.v1 import admin_pb2, admin_pb2_grpc, ramp_pb2
from ramp_service.admin import RampAdmin
from ramp_service.api.servicer import ramp_to_proto
from ramp_service.domain.errors import invalid

ADMIN_PREFIX = "/pendulumpay.ramp.v1.RampAdminService/"


log = logging.getLogger("admin")


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects admin calls without `authorization: Bearer <token>` (UNAUTHENTICATED).

    With no token configured, the admin API is closed to everyone.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode() if token else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not handler_call_details.method.startswith(ADMIN_PREFIX):
            return await continuation(handler_call_details)
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if self._expected and hmac.compare_digest(str(given).encode(), self._expected):
            return await continuation(handler_call_details)

        log.warning(  # before the access log sees the call: say it was turned away
            "admin call rejected",
            extra={"method": handler_call_details.method, "token_given": bool(given)},
        )

        async def deny(request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "admin token required")

        return grpc.unary_unary_rpc_method_handler(deny)


class RampAdminServicer(admin_pb2_grpc.RampAdminServiceServicer):
    """Translates admin RPCs to `RampAdmin` use cases."""

    def __init__(self, admin: RampAdmin) -> None:
        self._admin = admin

    async def RetryRamp(
        self, request: admin_pb2.RetryRampRequest, context: grpc.aio.ServicerContext
    ) -> ramp_pb2.Ramp:
        return ramp_to_proto(
            await self._admin.retry(request.ramp_id, request.operator, request.note)
        )

    async def CancelRamp(
        self, request: admin_pb2.CancelRampRequest, context: grpc.aio.ServicerContext
    ) -> ramp_pb2.Ramp:
        return ramp_to_proto(
            await self._admin.cancel(request.ramp_id, request.operator, request.note)
        )

    async def ListRampsForReview(
        self, request: admin_pb2.ListRampsForReviewRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListRampsForReviewResponse:
        before = None
        if request.HasField("updated_before"):
            try:
                before = request.updated_before.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError, OSError):
                raise invalid(
                    "INVALID_TIMESTAMP", "updated_before", "outside 0001-01-01..9999-12-31"
                ) from None
        records = await self._admin.list_for_review(
            request.status, request.phase, before, request.page_size, request.reason
        )
        return admin_pb2.ListRampsForReviewResponse(ramps=[ramp_to_proto(r) for r in records])
