"""Ramp errors, each with a stable reason."""

from __future__ import annotations

from service_kit.errors import (
    Conflict,
    DependencyUnavailable,
    FieldViolation,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)


def invalid(reason: str, field: str, description: str) -> InvalidInput:
    """A bad request field."""
    return InvalidInput(reason, f"{field}: {description}", [FieldViolation(field, description)])


class InvalidRampRequest(InvalidInput):
    """Request fields are missing or malformed; `violations` names every bad field."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__(
            "INVALID_RAMP_REQUEST",
            "invalid fields: " + ", ".join(v.field for v in violations),
            violations,
        )


class RampNotFound(NotFound):
    """No ramp has this id."""

    def __init__(self, ramp_id: str) -> None:
        super().__init__("RAMP_NOT_FOUND", f"ramp {ramp_id} not found")


class RampNotInitial(PreconditionFailed):
    """The ramp has left the state in which it can be changed (REST 409)."""

    def __init__(self, ramp_id: str, status: str) -> None:
        super().__init__("RAMP_NOT_INITIAL", f"ramp {ramp_id} is {status}; it can no longer change")


class RampAlreadyStarted(PreconditionFailed):
    """Start with different transactions on a started ramp (REST 409)."""

    def __init__(self, ramp_id: str) -> None:
        super().__init__(
            "RAMP_ALREADY_STARTED", f"ramp {ramp_id} was started with other transactions"
        )


class StartDeadlinePassed(PreconditionFailed):
    """The ramp was not started in time."""

    def __init__(self, ramp_id: str) -> None:
        super().__init__("START_DEADLINE_PASSED", f"ramp {ramp_id} passed its start deadline")


class EphemeralNotFresh(PreconditionFailed):
    """An ephemeral account already exists on chain or belongs to another ramp."""

    def __init__(self, network: str, address: str, why: str) -> None:
        super().__init__(
            "EPHEMERAL_NOT_FRESH",
            f"{network} account {address} cannot be used: {why}",
            metadata={"network": network, "address": address},
        )


class QuoteUnusable(PreconditionFailed):
    """The quote service refused the quote (expired, consumed...); `reason` is its reason."""


class QuoteServiceUnavailable(DependencyUnavailable):
    """The quote service did not answer in time."""

    def __init__(self, detail: str) -> None:
        super().__init__("QUOTE_SERVICE_UNAVAILABLE", f"quote service unavailable: {detail}")


class ChainUnavailable(DependencyUnavailable):
    """A chain or partner needed to register did not answer."""

    def __init__(self, detail: str) -> None:
        super().__init__("CHAIN_UNAVAILABLE", detail)


class IdempotencyKeyReused(InvalidInput):
    """Same idempotency key, different request (REST 422)."""

    def __init__(self) -> None:
        super().__init__(
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used with a different request",
        )


class IdempotencyInProgress(Conflict):
    """A request with this key is still being processed (REST 409)."""

    def __init__(self) -> None:
        super().__init__(
            "IDEMPOTENCY_REQUEST_IN_PROGRESS",
            "a request with this Idempotency-Key is still in progress; retry shortly",
        )
