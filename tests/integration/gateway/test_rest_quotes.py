"""The REST contract of the quote endpoints, through real Envoy."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc
import httpx
import pytest

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from quote_service.config import QuoteSettings
from quote_service.main import create_server
from service_kit.grpc_server import RunningServer
from tests.support.aio import LoopThread
from tests.support.envoy import Gateway
from tests.support.processes import free_port

SELL = {
    "rampType": "SELL",
    "from": "pendulum",
    "to": "sepa",
    "inputAmount": "100",
    "inputCurrency": "USDC",
    "outputCurrency": "EUR",
}


def reason(response: httpx.Response) -> str:
    details = response.json().get("details", [])
    return next((d["reason"] for d in details if d.get("@type", "").endswith("ErrorInfo")), "")


def fields(response: httpx.Response) -> set[str]:
    details = response.json().get("details", [])
    return {
        v["field"]
        for d in details
        if d.get("@type", "").endswith("BadRequest")
        for v in d["fieldViolations"]
    }


def test_create_and_get_a_quote(rest: httpx.Client) -> None:
    created = rest.post("/v1/ramp/quotes", json=SELL)
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["status"] == "PENDING"
    assert body["rampType"] == "SELL" and body["from"] == "pendulum" and body["to"] == "sepa"
    assert body["inputAmount"] == "100.000000" and isinstance(body["outputAmount"], str)
    assert body["fee"]["partnerMarkup"] == "0.000000"  # zero values are printed
    assert body["partnerId"] == ""
    fee = body["fee"]
    parts = ("network", "platform", "anchor", "partnerMarkup")
    assert sum(Decimal(fee[k]) for k in parts) == Decimal(fee["total"])
    fetched = rest.get(f"/v1/ramp/quotes/{body['id']}")
    assert fetched.status_code == 200 and fetched.json() == body


def test_buy_quote_with_partner(rest: httpx.Client) -> None:
    response = rest.post(
        "/v1/ramp/quotes",
        json={
            "rampType": "BUY",
            "from": "pix",
            "to": "assethub",
            "inputAmount": "250.00",
            "inputCurrency": "BRL",
            "outputCurrency": "USDC",
            "partnerId": "acme-wallet",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["partnerId"] == "acme-wallet"


@pytest.mark.parametrize(
    ("path", "status", "why"),
    [
        (f"/v1/ramp/quotes/{uuid.uuid4()}", 404, "QUOTE_NOT_FOUND"),
        ("/v1/ramp/quotes/not-a-uuid", 400, "INVALID_QUOTE_ID"),
    ],
)
def test_get_errors(rest: httpx.Client, path: str, status: int, why: str) -> None:
    response = rest.get(path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert reason(response) == why
    assert response.json()["message"]


@pytest.mark.parametrize(
    ("body", "why", "bad"),
    [
        (
            {},
            "INVALID_QUOTE_REQUEST",
            {"ramp_type", "from", "to", "input_amount", "input_currency", "output_currency"},
        ),
        ({**SELL, "inputAmount": "-5"}, "INVALID_QUOTE_REQUEST", {"input_amount"}),
        ({**SELL, "inputAmount": "lots"}, "INVALID_QUOTE_REQUEST", {"input_amount"}),
        ({**SELL, "inputAmount": "1"}, "AMOUNT_BELOW_MINIMUM", {"input_amount"}),
        (
            {**SELL, "outputCurrency": "ARS"},
            "UNSUPPORTED_CORRIDOR",
            {"ramp_type", "from", "to", "input_currency", "output_currency"},
        ),
    ],
)
def test_documented_create_errors(
    rest: httpx.Client, body: dict[str, Any], why: str, bad: set[str]
) -> None:
    response = rest.post("/v1/ramp/quotes", json=body)
    assert response.status_code == 400, response.text
    assert reason(response) == why
    assert fields(response) == bad


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"rampType": "SELL", "inputAmount": {"nested": 1}}',
        b'{"rampType": "TELEPORT"}',
        b'{"rampType": 7.5}',
        b"[1, 2, 3]",
        b'{"inputAmount": 100}',
    ],
)
def test_malformed_bodies_are_clear_4xx(rest: httpx.Client, raw: bytes) -> None:
    response = rest.post(
        "/v1/ramp/quotes", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] and body["code"] == 3
    assert reason(response) in ("INVALID_REQUEST_BODY", "INVALID_QUOTE_REQUEST"), body


def test_a_huge_body_is_413_not_a_hang(rest: httpx.Client) -> None:
    response = rest.post("/v1/ramp/quotes", json={**SELL, "partnerId": "x" * 200_000})
    assert response.status_code == 413
    assert response.json()["code"] == 8 and reason(response) == "BODY_TOO_LARGE"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing/here"),
        ("GET", "/v1/ramp/quotes"),
        ("DELETE", f"/v1/ramp/quotes/{uuid.uuid4()}"),
        ("PUT", "/v1/ramp/quotes"),
        ("GET", "/"),
    ],
)
def test_unknown_paths_and_wrong_methods_are_404(
    rest: httpx.Client, method: str, path: str
) -> None:
    response = rest.request(method, path)
    assert response.status_code == 404
    assert response.json()["code"] == 5 and reason(response) == "NO_SUCH_ENDPOINT"


def test_unknown_query_parameters_are_400(rest: httpx.Client) -> None:
    response = rest.get(f"/v1/ramp/quotes/{uuid.uuid4()}", params={"debug": "1"})
    assert response.status_code == 400
    assert response.json()["message"] and reason(response) == "INVALID_REQUEST_BODY"


def test_unknown_json_fields_are_dropped_and_change_nothing(rest: httpx.Client) -> None:
    response = rest.post(
        "/v1/ramp/quotes", json={**SELL, "outputAmount": "1000000", "fee": {"total": "0"}}
    )
    assert response.status_code == 200
    plain = rest.post("/v1/ramp/quotes", json=SELL).json()
    assert response.json()["outputAmount"] == plain["outputAmount"]


def test_cors_preflight(rest: httpx.Client) -> None:
    headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,idempotency-key",
    }
    allowed = rest.options(
        "/v1/ramp/quotes", headers={**headers, "Origin": "http://localhost:3000"}
    )
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:3000"
    assert "idempotency-key" in allowed.headers.get("access-control-allow-headers", "")
    denied = rest.options("/v1/ramp/quotes", headers={**headers, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers


def test_internal_rpcs_are_unreachable(gateway: Gateway, rest: httpx.Client) -> None:
    created = rest.post("/v1/ramp/quotes", json=SELL).json()
    as_rest = rest.post(
        "/pendulumpay.quote.v1.QuoteService/ConsumeQuote",
        json={"quoteId": created["id"], "rampId": "r"},
    )
    assert as_rest.status_code == 404
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = quote_pb2_grpc.QuoteServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.ConsumeQuote(
                quote_pb2.ConsumeQuoteRequest(quote_id=created["id"], ramp_id="r"), timeout=5
            )
        assert exc.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
        # A public method is reachable as gRPC too.
        quote = stub.GetQuote(quote_pb2.GetQuoteRequest(id=created["id"]), timeout=5)
        assert quote.status == quote_pb2.Quote.PENDING
    assert rest.get(f"/v1/ramp/quotes/{created['id']}").json()["status"] == "PENDING"


def test_openapi_document_is_served(rest: httpx.Client) -> None:
    response = rest.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {"/v1/ramp/quotes", "/v1/ramp/quotes/{id}"}
    assert "ConsumeQuote" not in json.dumps(doc)
    create = doc["paths"]["/v1/ramp/quotes"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert "inputAmount" in doc["components"]["schemas"][body]["properties"]


def test_health_reflects_the_upstreams(
    gateway_factory: Callable[..., Gateway], rest: httpx.Client
) -> None:
    assert rest.get("/healthz").status_code == 200
    dead = gateway_factory(wait_healthy=False, quote_upstream="127.0.0.1:1")
    assert httpx.get(f"{dead.url}/healthz", timeout=5).status_code == 503


def test_reason_status_overrides(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory(reason_status="QUOTE_NOT_FOUND=410")
    response = httpx.get(f"{gateway.url}/v1/ramp/quotes/{uuid.uuid4()}", timeout=5)
    assert response.status_code == 410
    assert reason(response) == "QUOTE_NOT_FOUND"


def test_per_client_rate_limit(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory(rate_limit_tokens=3, rate_limit_per_s=1)
    statuses = [
        httpx.get(f"{gateway.url}/v1/ramp/quotes/{uuid.uuid4()}", timeout=5) for _ in range(6)
    ]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert limited[0].headers["retry-after"] == "1"


def test_access_logs_are_json(gateway: Gateway, rest: httpx.Client) -> None:
    rest.get(f"/v1/ramp/quotes/{uuid.uuid4()}")
    gateway.stop()
    lines = [
        json.loads(line)
        for line in gateway.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(
        entry["path"].startswith("/v1/ramp/quotes/") and entry["status"] == 404 for entry in lines
    )


def test_admin_listens_on_loopback_only(gateway: Gateway) -> None:
    listeners = httpx.get(f"{gateway.admin_url}/listeners?format=json", timeout=5)
    assert listeners.status_code == 200
    assert gateway.admin_url.startswith("http://127.0.0.1:")
    from gateway.config import GatewaySettings
    from gateway.render import render_config

    admin = render_config(GatewaySettings())["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1"


def test_health_recovers_when_upstreams_start_after_the_gateway(
    gateway_factory: Callable[..., Gateway], database_url: str, aio_loop: LoopThread
) -> None:
    port = free_port()
    gateway = gateway_factory(wait_healthy=False, quote_upstream=f"127.0.0.1:{port}")
    assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 503

    async def late_upstream() -> RunningServer:
        running, _ = create_server(
            QuoteSettings(database_url=database_url, grpc_port=port, log_rpcs=False)
        )
        await running.start()
        return running

    upstream = aio_loop.run(late_upstream())
    try:
        deadline = time.monotonic() + 10
        while httpx.get(f"{gateway.url}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, (
                "gateway stayed unhealthy after its upstream started"
            )
            time.sleep(0.1)
    finally:
        aio_loop.run(upstream.stop(0))
