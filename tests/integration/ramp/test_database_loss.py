"""The ramp service losing its database connections: every path says so retryably
(UNAVAILABLE, DATABASE_UNAVAILABLE), the ORM's session paths as the direct pool's do, and the
next call is served."""

from __future__ import annotations

import grpc
import psycopg

from pendulumpay.ramp.v1 import ramp_pb2, ramp_pb2_grpc
from ramp_service.domain.ramp import RampRecord
from service_kit.db import libpq_url
from tests.support.grpc_errors import failure

KILL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = 'ramp_service'"
)


def test_a_killed_connection_on_a_session_path_is_unavailable_not_internal(
    ramp_stub: ramp_pb2_grpc.RampServiceStub, registered: RampRecord, database_url: str
) -> None:
    """ListRamps and GetRampErrors read through SQLAlchemy sessions, whose lost connection
    raised OperationalError past every mapping: INTERNAL, which a client does not retry."""
    wallet = ramp_pb2.ListRampsRequest(wallet_address=registered.additional_data.wallet_address)
    errors = ramp_pb2.GetRampErrorsRequest(id=str(registered.id))
    calls = {
        "ListRamps": lambda: ramp_stub.ListRamps(wallet, timeout=5),
        "GetRampErrors": lambda: ramp_stub.GetRampErrors(errors, timeout=5),
    }
    for name, call in calls.items():
        call()  # the session pool's one connection is open and idle now
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            row = conn.execute(KILL).fetchone()
            assert row is not None and row[0] >= 1
        outcomes = []
        for _ in range(3):
            try:
                call()
                outcomes.append("ok")
            except grpc.RpcError as err:
                refused = failure(err)
                outcomes.append(f"{refused.code.name}:{refused.reason}")
        # The dead connection fails one call, retryably; the pool reconnects for the next.
        assert outcomes == ["UNAVAILABLE:DATABASE_UNAVAILABLE", "ok", "ok"], (name, outcomes)
