"""Database for the whole suite: TEST_DATABASE_URL, else Docker (testcontainers), else embedded.

Migrations are applied once into a template database; every test that asks for
`database_url` gets its own fresh copy of it, so tests run in any order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from devstack.database import migrate_all
from service_kit.db import libpq_url


def _docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server (as a libpq URL to its maintenance database) for the session."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield libpq_url(url)
    elif _docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            yield libpq_url(container.get_connection_url())
    else:
        from service_kit.embedded_pg import start_embedded_postgres

        data_dir = Path(tmp_path_factory.mktemp("embedded-pg")) / "pg"
        yield start_embedded_postgres(data_dir)


def _with_database(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _admin(server_url: str, sql: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """Name of a database holding every schema at its latest migration."""
    name = f"pp_template_{uuid.uuid4().hex[:8]}"
    _admin(pg_server_url, f'CREATE DATABASE "{name}"')
    migrate_all(_with_database(pg_server_url, name))
    yield name
    _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    """URL of a fresh, fully migrated database for one test."""
    name = f"pp_test_{uuid.uuid4().hex[:12]}"
    _admin(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield _with_database(pg_server_url, name)
    _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
