"""Corridor flows as data.

Each corridor is a declared sequence of phases; each phase names what it needs. A ramp stores
the flow version it started with, so a deploy never changes a ramp in flight. Transitions that
the flow does not declare are bugs and raise `IllegalTransition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Network(StrEnum):
    """Chains an ephemeral account lives on."""

    STELLAR = "stellar"
    PENDULUM = "pendulum"


INITIAL = "initial"
COMPLETE = "complete"
FAILED = "failed"
TIMED_OUT = "timedOut"
TERMINAL_PHASES = frozenset({COMPLETE, FAILED, TIMED_OUT})
WATCH_LATE_DEPOSIT = "watchLateDeposit"
# Statuses of a ramp that ended before it took the user's money: a SELL never gets past
# awaitUserDeposit without the deposit, and a BUY's failures after the PIX payment go to review.
ABORTED_STATUSES = frozenset({"TIMED_OUT", "FAILED", "CANCELLED"})


@dataclass(frozen=True)
class PhaseSpec:
    """One phase: its name and the presigned transaction it submits, if any."""

    name: str
    presigned_on: Network | None = None
    # A phase that can time out (waiting for the user or a partner) may jump to `timedOut`.
    may_time_out: bool = False
    # Only the partner can confirm this phase's timeout (a PIX charge is payable until the
    # partner reports it expired or cancelled): the handler times it out on the partner's word;
    # running out of the phase's time budget, or an unrecoverable error, goes to MANUAL_REVIEW.
    partner_confirms_timeout: bool = False
    # The user's money is on an ephemeral by now: an unrecoverable error here goes to
    # MANUAL_REVIEW (where an operator can retry or settle it), never to the terminal `failed`.
    holds_funds: bool = False


@dataclass(frozen=True)
class Flow:
    """The ordered phases of one corridor version, plus the follow-up phases run after the
    terminal ones: cleanup after `complete`, watches after `timedOut`."""

    ramp_type: str
    version: str
    phases: tuple[PhaseSpec, ...]
    cleanup: tuple[PhaseSpec, ...]
    # Run once the ramp ended before it took the user's money (timed out, failed or cancelled;
    # the status stays): e.g. watching the deposit address for money the user sent anyway.
    # Like cleanup, they never change how the ramp ended.
    after_abort: tuple[PhaseSpec, ...] = ()

    @property
    def first_after_abort(self) -> str | None:
        """The follow-up phase a ramp ended without the user's money starts with, if any."""
        return self.after_abort[0].name if self.after_abort else None

    def follow_ups(self, status: str) -> tuple[PhaseSpec, ...]:
        """The follow-up phases of a ramp that ended with `status`."""
        if status == "COMPLETE":
            return self.cleanup
        return self.after_abort if status in ABORTED_STATUSES else ()

    def names(self) -> list[str]:
        """Phase names in order, from `initial` to `complete`."""
        return [p.name for p in self.phases]

    def spec(self, name: str) -> PhaseSpec:
        """The spec of phase `name` (main, cleanup or after-timeout)."""
        for phase in (*self.phases, *self.cleanup, *self.after_abort):
            if phase.name == name:
                return phase
        raise KeyError(name)

    def next_phase(self, current: str) -> str:
        """The phase after `current` on the happy path."""
        names = self.names()
        index = names.index(current)
        if index + 1 >= len(names):
            raise IllegalTransition(current, "<none>")
        return names[index + 1]

    def check_transition(self, current: str, target: str) -> None:
        """Raise unless `current → target` is declared by this flow."""
        if current in TERMINAL_PHASES:
            raise IllegalTransition(current, target)
        if target == FAILED:
            return
        if target == TIMED_OUT and self.spec(current).may_time_out:
            return
        if target != self.next_phase(current):
            raise IllegalTransition(current, target)

    def presigned_requirements(self) -> list[tuple[str, Network]]:
        """(phase, network) of every transaction the user must presign, in submit order."""
        return [(p.name, p.presigned_on) for p in (*self.phases, *self.cleanup) if p.presigned_on]


class IllegalTransition(Exception):
    """A phase change the flow does not declare: a bug, never a user error."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"illegal phase transition {current} → {target}")
        self.current = current
        self.target = target


SELL_V1 = Flow(
    ramp_type="SELL",
    version="sell-v1",
    phases=(
        PhaseSpec(INITIAL),
        PhaseSpec("awaitUserDeposit", may_time_out=True),
        # Creates the Stellar ephemeral (funding account + ephemeral sign) and sends PEN for fees.
        PhaseSpec("fundEphemeral", presigned_on=Network.STELLAR, holds_funds=True),
        PhaseSpec("nablaApprove", presigned_on=Network.PENDULUM, holds_funds=True),
        PhaseSpec("nablaSwap", presigned_on=Network.PENDULUM, holds_funds=True),
        PhaseSpec("spacewalkRedeem", presigned_on=Network.PENDULUM, holds_funds=True),
        PhaseSpec("stellarPayment", presigned_on=Network.STELLAR, holds_funds=True),
        PhaseSpec(COMPLETE),
    ),
    cleanup=(
        PhaseSpec("stellarCleanup", presigned_on=Network.STELLAR),
        PhaseSpec("pendulumCleanup", presigned_on=Network.PENDULUM),
    ),
    # A deposit that arrives after the ramp ended without it (timed out, unstarted past its
    # deadline, failed or cancelled before the deposit) is nobody's to move: it is found and
    # reported for a person to settle.
    after_abort=(PhaseSpec(WATCH_LATE_DEPOSIT),),
)

BUY_V1 = Flow(
    ramp_type="BUY",
    version="buy-v1",
    phases=(
        PhaseSpec(INITIAL),
        PhaseSpec("brlaTeleport", may_time_out=True, partner_confirms_timeout=True),
        PhaseSpec("fundEphemeral", holds_funds=True),
        PhaseSpec("nablaApprove", presigned_on=Network.PENDULUM, holds_funds=True),
        PhaseSpec("nablaSwap", presigned_on=Network.PENDULUM, holds_funds=True),
        PhaseSpec("pendulumToAssethub", presigned_on=Network.PENDULUM, holds_funds=True),
        PhaseSpec(COMPLETE),
    ),
    cleanup=(PhaseSpec("pendulumCleanup", presigned_on=Network.PENDULUM),),
)

FLOWS: dict[str, Flow] = {flow.version: flow for flow in (SELL_V1, BUY_V1)}
# Every follow-up phase of every flow: they run after a ramp ended and appear in its history,
# but never say how far the ramp itself got.
FOLLOW_UP_PHASES = frozenset(
    p.name for flow in FLOWS.values() for p in (*flow.cleanup, *flow.after_abort)
)
# The first after-abort phase of each flow version that has one (set by whatever ends a ramp
# without its money: the processor, the cleanup job, an operator's cancel).
FIRST_AFTER_ABORT: dict[str, str] = {
    flow.version: flow.first_after_abort for flow in FLOWS.values() if flow.first_after_abort
}
CURRENT_FLOW: dict[str, Flow] = {"SELL": SELL_V1, "BUY": BUY_V1}

# Networks whose ephemeral account each ramp type needs.
REQUIRED_ACCOUNTS: dict[str, frozenset[Network]] = {
    "SELL": frozenset({Network.STELLAR, Network.PENDULUM}),
    "BUY": frozenset({Network.PENDULUM}),
}
