"""The Alembic migrations build exactly the schema the models describe, for every context."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine

from quote_service.db.models import Base as QuoteBase
from ramp_service.db.models import Base as RampBase
from service_kit.db import sqlalchemy_url


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
