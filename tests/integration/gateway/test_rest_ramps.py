"""The REST contract of the ramp endpoints through real Envoy."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pendulumpay.ramp.v1 import admin_pb2, admin_pb2_grpc
from ramp_service.domain.ramp import RampRecord
from service_kit.config import ServiceSettings
from service_kit.db import create_engine, session_factory
from service_kit.grpc_server import RunningServer
from tests.support.aio import FakeClock, LoopThread
from tests.support.envoy import Gateway
from tests.support.ramps import insert_registered, sell_record


@pytest.fixture
def ramp_rest(
    gateway_factory: Callable[..., Gateway], ramp_server: RunningServer
) -> Iterator[tuple[httpx.Client, Gateway]]:
    gateway = gateway_factory(ramp_upstream=f"127.0.0.1:{ramp_server.port}")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client, gateway


@pytest.fixture
def registered(database_url: str, clock: FakeClock, aio_loop: LoopThread) -> RampRecord:
    record = sell_record(clock.now)

    async def add() -> None:
        engine: AsyncEngine = create_engine(ServiceSettings(database_url=database_url), "test")
        await insert_registered(session_factory(engine), record)
        await engine.dispose()

    aio_loop.run(add())
    return record


def reason(response: httpx.Response) -> str:
    return next((d["reason"] for d in response.json().get("details", []) if "reason" in d), "")


def test_ramp_lifecycle_over_rest(
    ramp_rest: tuple[httpx.Client, Gateway], registered: RampRecord
) -> None:
    rest, _ = ramp_rest
    ramp = rest.get(f"/v1/ramp/{registered.id}")
    assert ramp.status_code == 200
    body = ramp.json()
    assert body["status"] == "REGISTERED" and body["currentPhase"] == "initial"
    assert body["quote"]["inputAmount"] == "100.000000"
    assert isinstance(body["unsignedTxs"][0]["nonce"], str)  # 64-bit numbers are strings
    assert "lastError" not in body  # message fields are absent until set
    start = {"rampId": str(registered.id), "presignedTxs": []}
    first = rest.post("/v1/ramp/start", json=start, headers={"Idempotency-Key": "rest-key"})
    assert first.status_code == 200 and first.json()["status"] == "RUNNING"
    replay = rest.post("/v1/ramp/start", json=start, headers={"Idempotency-Key": "rest-key"})
    assert replay.status_code == 200 and replay.json() == first.json()
    reused = rest.post(
        "/v1/ramp/start",
        json={**start, "additionalData": {"walletAddress": "5Else"}},
        headers={"Idempotency-Key": "rest-key"},
    )
    assert reused.status_code == 422 and reason(reused) == "IDEMPOTENCY_KEY_REUSED"
    update = rest.post("/v1/ramp/update", json={"rampId": str(registered.id)})
    assert update.status_code == 409 and reason(update) == "RAMP_NOT_INITIAL"
    errors = rest.get(f"/v1/ramp/{registered.id}/errors")
    assert errors.status_code == 200 and errors.json() == {"errors": []}


def test_ramp_errors_and_history_over_rest(
    ramp_rest: tuple[httpx.Client, Gateway], registered: RampRecord
) -> None:
    rest, _ = ramp_rest
    missing = rest.get(f"/v1/ramp/{uuid.uuid4()}")
    assert missing.status_code == 404 and reason(missing) == "RAMP_NOT_FOUND"
    assert rest.get("/v1/ramp/not-an-id").status_code == 400
    history = rest.get("/v1/ramp/history/5Wallet", params={"pageSize": 1})
    assert history.status_code == 200
    assert [r["id"] for r in history.json()["ramps"]] == [str(registered.id)]
    assert rest.get("/v1/ramp/history/5Wallet", params={"sort": "asc"}).status_code == 400
    # A NUL or an address no wallet has: 400 with a reason, never a 500.
    nul = rest.get("/v1/ramp/history/5W%00allet")
    assert (nul.status_code, reason(nul)) == (400, "INVALID_TEXT"), nul.text
    for path in ("/v1/ramp/%FF", "/v1/ramp/history/5W%C3allet", "/v1/ramp/quotes/%FF"):
        bad_utf8 = rest.get(path)  # not UTF-8 once decoded: 400 with a reason, never a 500
        assert (bad_utf8.status_code, reason(bad_utf8)) == (400, "INVALID_TEXT"), bad_utf8.text
    huge = rest.get("/v1/ramp/history/" + "5" * 300)
    assert (huge.status_code, reason(huge)) == (400, "INVALID_RAMP_REQUEST"), huge.text
    bad = rest.post("/v1/ramp/start", json={"rampId": str(registered.id), "presignedTxs": "nope"})
    assert bad.status_code == 400


def test_admin_rpcs_are_not_routed(
    ramp_rest: tuple[httpx.Client, Gateway], registered: RampRecord
) -> None:
    rest, gateway = ramp_rest
    assert rest.post("/pendulumpay.ramp.v1.RampAdminService/CancelRamp", json={}).status_code == 404
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        admin = admin_pb2_grpc.RampAdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            admin.CancelRamp(
                admin_pb2.CancelRampRequest(ramp_id=str(registered.id), operator="x"),
                metadata=(("authorization", "Bearer test-admin-token"),),
                timeout=5,
            )
        assert exc.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
    assert rest.get(f"/v1/ramp/{registered.id}").json()["status"] == "REGISTERED"


def test_admin_rpcs_need_the_token_directly(
    ramp_server: RunningServer, registered: RampRecord
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{ramp_server.port}") as channel:
        admin = admin_pb2_grpc.RampAdminServiceStub(channel)
        request = admin_pb2.CancelRampRequest(
            ramp_id=str(registered.id), operator="ops", note="user asked"
        )
        for token in ("", "Bearer wrong"):
            with pytest.raises(grpc.RpcError) as exc:
                admin.CancelRamp(
                    request, metadata=(("authorization", token),) if token else (), timeout=5
                )
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        cancelled = admin.CancelRamp(
            request, metadata=(("authorization", "Bearer test-admin-token"),), timeout=5
        )
        assert cancelled.status == cancelled.CANCELLED
