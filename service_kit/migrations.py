"""Alembic plumbing shared by every bounded context: one schema and one version table each."""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, create_engine, text

from service_kit.db import sqlalchemy_url


def alembic_config(migrations_dir: Path, database_url: str, schema: str) -> Config:
    """An Alembic config for the migrations in `migrations_dir`, owning `schema`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(migrations_dir: Path, database_url: str, schema: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    command.upgrade(alembic_config(migrations_dir, database_url, schema), revision)


def run_migrations(target_metadata: MetaData) -> None:
    """Body of each context's `env.py`: migrate its own schema, online, under a lock.

    The advisory lock makes concurrent migration runs (several pods starting) take turns.
    """
    cfg = context.config
    schema = cfg.attributes["schema"]
    engine = create_engine(sqlalchemy_url(cfg.attributes["database_url"]))
    with engine.connect() as connection:
        connection.execute(
            text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": f"migrate:{schema}"}
        )
        try:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            connection.commit()
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                version_table_schema=schema,
                include_schemas=True,
                include_name=lambda name, type_, _parent: type_ != "schema" or name == schema,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(
                text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": f"migrate:{schema}"}
            )
            connection.commit()
    engine.dispose()
