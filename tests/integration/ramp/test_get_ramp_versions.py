"""GetRamp answers a poll of an unchanged ramp from what it rendered before, after one cheap
version read, and never from a stale rendering: whichever table a change touched, the next poll
shows it. Real PostgreSQL, the real ramp service over gRPC."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import psycopg
import pytest

from pendulumpay.ramp.v1 import ramp_pb2, ramp_pb2_grpc
from ramp_service.domain.ramp import RampRecord

Stub = ramp_pb2_grpc.RampServiceStub


def get(stub: Stub, ramp_id: object, timeout: float = 5) -> ramp_pb2.Ramp:
    return stub.GetRamp(ramp_pb2.GetRampRequest(id=str(ramp_id)), timeout=timeout)


def test_a_poll_of_an_unchanged_ramp_does_not_read_the_ramp_again(
    ramp_stub: Stub,
    registered: RampRecord,
    database_url: str,
) -> None:
    """While another transaction holds `signing_accounts` exclusively, reading the whole ramp
    would wait for it; the version read does not touch that table. So polls of the unchanged
    ramp answer, and once the ramp changed, the poll waits for the full read."""
    first = get(ramp_stub, registered.id)
    with psycopg.connect(database_url.replace("+psycopg", "")) as locker:
        locker.execute("LOCK TABLE ramp.signing_accounts IN ACCESS EXCLUSIVE MODE")
        for _ in range(3):
            assert get(ramp_stub, registered.id) == first
        assert get(ramp_stub, str(registered.id).upper()) == first  # one ramp, one entry
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as writer:
            writer.execute(
                "UPDATE ramp.ramps SET current_phase = 'awaitUserDeposit' WHERE id = %s",
                [registered.id],
            )
        with pytest.raises(grpc.RpcError) as waited:
            get(ramp_stub, registered.id, timeout=1)
        assert waited.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        locker.rollback()
    assert get(ramp_stub, registered.id).current_phase == "awaitUserDeposit"


# Each changes one table only, as a writer that forgot the ramp row would, and says what the
# next poll must show.
CHANGES: dict[str, tuple[str, Callable[[ramp_pb2.Ramp], bool]]] = {
    "the ramp row": (
        "UPDATE ramp.ramps SET status = 'RUNNING' WHERE id = %(id)s",
        lambda ramp: ramp.status == ramp_pb2.Ramp.RUNNING,
    ),
    "a phase event": (
        "INSERT INTO ramp.phase_events (ramp_id, from_phase, to_phase, status, actor, note,"
        " created_at) VALUES (%(id)s, 'initial', 'awaitUserDeposit', 'RUNNING', 'test', '', now())",
        lambda ramp: [p.phase for p in ramp.phase_history] == ["initial", "awaitUserDeposit"],
    ),
    "an error": (
        "INSERT INTO ramp.errors (ramp_id, phase, reason, message, recoverable, created_at)"
        " VALUES (%(id)s, 'initial', 'HORIZON_5XX', 'busy', true, now())",
        lambda ramp: ramp.last_error.reason == "HORIZON_5XX",
    ),
    "a transaction": (
        "UPDATE ramp.transactions SET unsigned_payload = 'reissued'"
        " WHERE ramp_id = %(id)s AND phase = 'nablaSwap'",
        lambda ramp: "reissued" in [t.tx_data for t in ramp.unsigned_txs],
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_any_table_a_poll_shows_is_shown_by_the_next_poll(
    ramp_stub: Stub,
    registered: RampRecord,
    database_url: str,
    change: str,
) -> None:
    statement, shown = CHANGES[change]
    before = get(ramp_stub, registered.id)
    assert get(ramp_stub, registered.id) == before  # rendered and held
    assert not shown(before)
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as writer:
        writer.execute(statement, {"id": registered.id})
    assert shown(get(ramp_stub, registered.id))


def test_a_deleted_ramp_is_not_found_although_it_was_rendered(
    ramp_stub: Stub,
    registered: RampRecord,
    database_url: str,
) -> None:
    get(ramp_stub, registered.id)
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as writer:
        writer.execute("DELETE FROM ramp.ramps WHERE id = %s", [registered.id])
    with pytest.raises(grpc.RpcError) as missing:
        get(ramp_stub, registered.id)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
