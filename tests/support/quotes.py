"""Quote and register requests the tests and benchmarks share."""

from __future__ import annotations

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from pendulumpay.ramp.v1 import ramp_pb2
from service_kit.grpc_server import RunningServer, build_server


def sell_request(amount: str = "100", **overrides: object) -> quote_pb2.CreateQuoteRequest:
    """A SELL USDC (pendulum) → EUR (sepa) quote request."""
    fields: dict[str, object] = {
        "ramp_type": quote_pb2.SELL,
        "from_network": "pendulum",
        "to_network": "sepa",
        "input_amount": amount,
        "input_currency": "USDC",
        "output_currency": "EUR",
    }
    fields.update(overrides)
    return quote_pb2.CreateQuoteRequest(**fields)  # type: ignore[arg-type]


def sell_register_request(
    quote_id: str, stellar: str, pendulum: str
) -> ramp_pb2.RegisterRampRequest:
    """Register a SELL quote for these ephemerals, paying out to a valid IBAN."""
    return ramp_pb2.RegisterRampRequest(
        quote_id=quote_id,
        signing_accounts=[
            ramp_pb2.SigningAccount(network="stellar", address=stellar),
            ramp_pb2.SigningAccount(network="pendulum", address=pendulum),
        ],
        additional_data=ramp_pb2.AdditionalData(
            wallet_address=pendulum, destination="DE89370400440532013000"
        ),
    )


async def serve_quote_standin(
    servicer: quote_pb2_grpc.QuoteServiceServicer, host: str = "127.0.0.1", port: int = 0
) -> RunningServer:
    """A stand-in QuoteService (a test's own servicer) on a real gRPC server, started."""
    running = build_server(
        host,
        port,
        lambda s: quote_pb2_grpc.add_QuoteServiceServicer_to_server(servicer, s),
        ["pendulumpay.quote.v1.QuoteService"],
        log_rpcs=False,
    )
    await running.start()
    return running
