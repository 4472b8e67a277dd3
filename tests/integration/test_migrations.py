"""The Alembic migrations build exactly the schema the models describe, for every context."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine

from quote_service.db.models import Base as QuoteBase
from ramp_service.db.models import Base as RampBase
from ramp_service.worker.queue import FOLLOW_UP_STATUSES
from service_kit.db import libpq_url, sqlalchemy_url
from service_kit.migrations import alembic_config


@pytest.mark.parametrize(
    ("metadata", "schema"), [(QuoteBase.metadata, "quote"), (RampBase.metadata, "ramp")]
)
def test_models_match_the_migrated_schema(
    database_url: str, metadata: MetaData, schema: str
) -> None:
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, _parent: (
                        type_ != "schema" or name == schema
                    ),
                    "compare_type": True,
                },
            )
            diff = [
                d
                for d in compare_metadata(context, metadata)
                if not (d[0] == "remove_table" and d[1].name == "alembic_version")
            ]
    finally:
        engine.dispose()
    assert diff == []


def test_the_claim_index_rebuild_recovers_from_an_interrupted_concurrent_build(
    database_url: str,
) -> None:
    """A CREATE INDEX CONCURRENTLY cut off (a Job's deadline, a killed pod) leaves an INVALID
    index behind. Migration 0005 run again must not take it for done: it drops it, builds the
    index again and only then replaces the old one."""
    migrations = Path(__file__).resolve().parents[2] / "ramp_service" / "db" / "migrations"
    config = alembic_config(migrations, database_url, "ramp")
    command.downgrade(config, "0004_idempotency_claims")
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("CREATE INDEX ix_ramps_due_next ON ramp.ramps (next_attempt_at)")
        conn.execute(
            "UPDATE pg_index SET indisvalid = false"
            " WHERE indexrelid = 'ramp.ix_ramps_due_next'::regclass"
        )
    command.upgrade(config, "head")
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT c.relname, i.indisvalid, pg_get_expr(i.indpred, i.indrelid)"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'ramp.ramps'::regclass AND c.relname LIKE 'ix_ramps_due%'"
        ).fetchall()
    assert len(indexes) == 1
    name, valid, predicate = indexes[0]
    assert (name, valid) == ("ix_ramps_due", True)
    # Running ramps and every status whose follow-up phases the processor runs.
    assert set(re.findall(r"'([A-Z_]+)'", predicate)) == {"RUNNING", *FOLLOW_UP_STATUSES}
