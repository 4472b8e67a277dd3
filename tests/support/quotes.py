"""Quote requests the tests share."""

from __future__ import annotations

from pendulumpay.quote.v1 import quote_pb2


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
