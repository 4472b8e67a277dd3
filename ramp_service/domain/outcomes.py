"""What a phase handler reports, and what the processor does with it. No I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Advance:
    """The phase's effect is confirmed: move to the next phase. `note` goes into the move's
    history entry; a `finding` (reason, message) is recorded with the move as an error entry
    for people to act on, though nothing failed (the user sent more than the quote, say)."""

    note: str = ""
    finding: tuple[str, str] | None = None


@dataclass(frozen=True)
class Wait:
    """Nothing is wrong, the awaited thing has not happened yet: look again after `delay`."""

    delay: timedelta
    reason: str = "NOT_YET"
    # Some of the user's money has already arrived (a partial deposit, a PIX payment not yet
    # minted): running out of time then needs a person (MANUAL_REVIEW), never a timeout.
    holds_funds: bool = False


@dataclass(frozen=True)
class Retry:
    """A recoverable error: record it, back off and try again (counts against the budgets)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Fail:
    """An unrecoverable error: the ramp fails with this reason."""

    reason: str
    message: str


@dataclass(frozen=True)
class TimeOut:
    """The user or partner did not act in time: the ramp moves to `timedOut`."""

    reason: str


@dataclass(frozen=True)
class Review:
    """Something only a person can settle (funds held on an ephemeral after a failed on-chain
    step, an effect that cannot be found): the ramp moves to MANUAL_REVIEW with this reason."""

    reason: str
    message: str


Outcome = Advance | Wait | Retry | Fail | TimeOut | Review


@dataclass(frozen=True)
class RetryPolicy:
    """Budgets and backoff of one phase."""

    max_attempts: int = 8
    time_budget: timedelta = timedelta(minutes=30)
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=2)
    # Count only the failures since the phase last checked successfully (a Wait), not every
    # failure since it began: for a follow-up phase that keeps checking for days, where outages
    # that are each short would otherwise add up to the budget. Honoured for follow-up phases
    # (the engine's _apply_cleanup) only; the ramp's own phases count every failure.
    failures_in_a_row: bool = False

    @classmethod
    def for_watch(cls, window: timedelta) -> RetryPolicy:
        """Budgets of a phase that watches for `window` and then ends itself: the budget only
        stops one that cannot (a node down for about half a day: 500 failed reads in a row,
        each backed off one to two minutes); a read that works starts the count again."""
        return cls(max_attempts=500, time_budget=window + timedelta(days=1), failures_in_a_row=True)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """Full-jitter exponential backoff for the `attempt`-th failure (1-based)."""
        cap = min(self.max_delay, self.base_delay * (2 ** max(attempt - 1, 0)))
        fraction = (rng or random).uniform(0.5, 1.0)
        return cap * fraction

    def exhausted(self, attempts: int, phase_started_at: datetime, now: datetime) -> str | None:
        """Why the phase must go to manual review, or None while it may keep trying."""
        if attempts >= self.max_attempts:
            return f"retry budget of {self.max_attempts} attempts exhausted"
        if now - phase_started_at >= self.time_budget:
            return f"time budget of {self.time_budget} exceeded"
        return None
