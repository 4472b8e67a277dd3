"""How adapters report failures, classified for the phase processor.

Recoverable errors (timeouts, 5xx, rate limits, "not yet") are retried with backoff;
unrecoverable ones (bad signature, bad sequence, insufficient funds) fail the ramp.
"""

from __future__ import annotations


class ChainError(Exception):
    """A failed call to a chain or partner. `reason` is a stable UPPER_SNAKE_CASE code."""

    recoverable: bool = False

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class RecoverableError(ChainError):
    """Worth retrying later: the outcome may change without anyone intervening."""

    recoverable = True


class UnrecoverableError(ChainError):
    """Retrying the same request cannot succeed."""

    recoverable = False


class NotYet(RecoverableError):
    """The awaited effect (a payment, a payout, a block) has not happened yet."""

    def __init__(self, message: str) -> None:
        super().__init__("NOT_YET", message)
