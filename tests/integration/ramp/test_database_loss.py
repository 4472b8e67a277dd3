"""The ramp service losing its database connections: every path says so retryably
(UNAVAILABLE, DATABASE_UNAVAILABLE), the ORM's session paths as the direct pool's do, and the
next call is served."""

from __future__ import annotations

import grpc
import psycopg

from pendulumpay.ramp.v1 import ramp_pb2, ramp_pb2_grpc
from ramp_service.domain.ramp import RampRecord
from service_kit.db import libpq_url
from tests.support.aio import eventually
from tests.support.grpc_errors import failure

KILL = (
    "WITH targets AS MATERIALIZED (SELECT pid FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name = 'ramp_service')"
    " SELECT array_agg(pid) FROM targets WHERE pg_terminate_backend(pid)"
)
LEFT = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"


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
            assert row is not None and row[0]
            # Gone before the next call, not merely told to go.
            killed = row[0]
            eventually(
                lambda c=conn, k=killed: c.execute(LEFT, [k]).fetchone() == (0,), "backends gone", 5
            )
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
