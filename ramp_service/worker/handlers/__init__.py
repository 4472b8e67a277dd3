"""Phase handlers: one per phase, each a small object with `run(ctx) -> Outcome`.

A handler never writes ramp state itself; it reports an outcome and the processor applies it.
Side effects go through the journal (`ctx.journal`) first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ramp_service.domain.outcomes import Outcome
from ramp_service.domain.ramp import RampRecord
from ramp_service.worker.journal import Journal


@dataclass(frozen=True)
class PhaseContext:
    """What a handler gets to work with."""

    ramp: RampRecord
    phase: str
    attempt: int
    journal: Journal
    now: datetime
    phase_started_at: datetime

    def presigned(self, network: str) -> str:
        """The presigned payload this phase submits on `network`."""
        for tx in self.ramp.txs:
            if tx.issued.phase == self.phase and tx.issued.network.value == network:
                if tx.presigned_payload is None:
                    raise LookupError(f"no presigned {network} tx for {self.phase}")
                return tx.presigned_payload
        raise LookupError(f"no {network} tx issued for {self.phase}")


class PhaseHandler(Protocol):
    """Runs one phase once; idempotent: it reconciles with the journal before acting."""

    async def run(self, ctx: PhaseContext) -> Outcome:
        """Do (or check) the phase's work and report the outcome."""
        ...
