"""The operation journal: before any side effect, its intent is recorded; then its outcome.

States: intent → submitted → confirmed | failed | unknown. A retry reads the journal first and
reconciles (looks the transaction up by hash or signer+nonce, or asks the partner) before it
submits anything again, and it re-submits the recorded payload rather than building a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.dialects.postgresql import insert

from ramp_service.db.models import OperationRow
from ramp_service.worker.crashpoints import crash_point
from ramp_service.worker.queue import Claim, WorkQueue


@dataclass(frozen=True)
class Operation:
    """A journal entry."""

    operation: str
    network: str
    state: str
    tx_hash: str | None
    signer: str | None
    nonce: int | None
    payload: str | None
    detail: str


def _operation(row: OperationRow) -> Operation:
    return Operation(
        row.operation,
        row.network,
        row.state,
        row.tx_hash,
        row.signer,
        row.nonce,
        row.payload,
        row.detail,
    )


class Journal:
    """Journal entries of one phase of one claimed ramp; every write is fenced by the lease."""

    def __init__(self, queue: WorkQueue, claim: Claim, phase: str) -> None:
        self._queue = queue
        self._claim = claim
        self._phase = phase

    async def get(self, operation: str) -> Operation | None:
        """The entry for `operation` in this phase, if any."""
        async with self._queue.sessions.begin() as session:
            row = await session.scalar(select(OperationRow).where(*self._key(operation)))
            return _operation(row) if row else None

    async def record_intent(
        self,
        operation: str,
        network: str,
        *,
        tx_hash: str | None,
        signer: str | None,
        nonce: int | None,
        payload: str | None,
        detail: str = "",
        replace: bool = False,
    ) -> Operation:
        """Record what is about to be sent. An existing entry wins unless `replace` is set
        (only after reconciling proved the recorded one can never apply)."""
        now = self._queue.clock()
        values = dict(
            ramp_id=self._claim.ramp_id,
            phase=self._phase,
            operation=operation,
            network=network,
            state="intent",
            tx_hash=tx_hash,
            signer=signer,
            nonce=nonce,
            payload=payload,
            detail=detail,
            generation=self._claim.generation,
            created_at=now,
            updated_at=now,
        )
        statement = insert(OperationRow).values(**values)
        if replace:
            statement = statement.on_conflict_do_update(
                index_elements=["ramp_id", "phase", "operation"],
                set_={
                    k: v
                    for k, v in values.items()
                    if k not in ("ramp_id", "phase", "operation", "created_at")
                },
            )
        else:
            statement = statement.on_conflict_do_nothing()
        async with self._queue.sessions.begin() as session:
            await self._queue.check_lease(session, self._claim)
            await session.execute(statement)
            row = await session.scalar(select(OperationRow).where(*self._key(operation)))
            assert row is not None
            return _operation(row)

    async def mark(
        self, operation: str, state: str, detail: str | None = None, tx_hash: str | None = None
    ) -> None:
        """Move an entry to `state` (submitted, confirmed, failed, unknown); `detail` replaces
        the recorded detail when given."""
        crash_point(f"{self._phase}:{operation}:{'intent' if state == 'submitted' else 'sent'}")
        values: dict[str, object] = {"state": state, "updated_at": self._queue.clock()}
        if detail is not None:
            values["detail"] = detail[:2000]
        if tx_hash is not None:
            values["tx_hash"] = tx_hash
        async with self._queue.sessions.begin() as session:
            await self._queue.check_lease(session, self._claim)
            await session.execute(
                update(OperationRow).where(*self._key(operation)).values(**values)
            )

    def _key(self, operation: str) -> list[ColumnElement[bool]]:
        return [
            OperationRow.ramp_id == self._claim.ramp_id,
            OperationRow.phase == self._phase,
            OperationRow.operation == operation,
        ]
