"""Quote errors, each with a stable reason."""

from __future__ import annotations

from service_kit.errors import FieldViolation, InvalidInput, NotFound, PreconditionFailed


class InvalidQuoteRequest(InvalidInput):
    """A request field is missing or malformed; `violations` names every bad field."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__(
            "INVALID_QUOTE_REQUEST",
            "invalid fields: " + ", ".join(v.field for v in violations),
            violations,
        )


def amount_rejected(reason: str, message: str) -> InvalidInput:
    """The input amount is well-formed but cannot be quoted (limits, fees)."""
    return InvalidInput(reason, message, [FieldViolation("input_amount", message)])


class QuoteNotFound(NotFound):
    """No quote has this id."""

    def __init__(self, quote_id: str) -> None:
        super().__init__("QUOTE_NOT_FOUND", f"quote {quote_id} not found")


class QuoteExpired(PreconditionFailed):
    """The quote passed its expiry before it was consumed."""

    def __init__(self, quote_id: str) -> None:
        super().__init__("QUOTE_EXPIRED", f"quote {quote_id} has expired")


class QuoteConsumed(PreconditionFailed):
    """Another ramp already consumed the quote."""

    def __init__(self, quote_id: str) -> None:
        super().__init__("QUOTE_CONSUMED", f"quote {quote_id} was already used by another ramp")
