"""Database engines: one async pool per process, sized by configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg.errors
import sqlalchemy.exc
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import RowFactory
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service_kit.config import ServiceSettings
from service_kit.errors import DependencyUnavailable


def sqlalchemy_url(url: str) -> URL:
    """Accept `postgresql://` or `postgres://` URLs and select the psycopg 3 driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in ("postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def libpq_url(url: str) -> str:
    """The same URL without the SQLAlchemy driver suffix, for psycopg and libpq tools."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


CONNECT_TIMEOUT_S = 5


# The database lost or out of reach, as the ORM's session paths report it (a dropped or timed
# out connection, the engine's pool wait running out) and as a raw psycopg connection does:
# UNAVAILABLE with DATABASE_UNAVAILABLE for the caller, who may retry (DirectPool maps its own;
# the gRPC interceptor maps these wherever they escape). Integrity and SQL errors are not here:
# those are bugs.
DATABASE_LOST: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    PoolTimeout,
)


def database_unavailable(exc: Exception) -> DependencyUnavailable:
    """The caller's view of `exc`, one of DATABASE_LOST: its type, never its text (which can
    hold the statement)."""
    return DependencyUnavailable(
        "DATABASE_UNAVAILABLE", f"database unavailable: {type(exc).__name__}"
    )


def _connect_options(settings: ServiceSettings, application_name: str) -> dict[str, Any]:
    return {
        "application_name": application_name,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
    }


def create_engine(settings: ServiceSettings, application_name: str) -> AsyncEngine:
    """An async engine whose pool and statement timeout come from `settings`."""
    return create_async_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        # No pre-ping: it costs a round trip per checkout. A dropped connection fails one call,
        # invalidates the pool and the next call reconnects; recycling bounds connection age.
        pool_pre_ping=False,
        # Bound values stay out of exception texts, which reach logs (tax ids, IBANs).
        hide_parameters=True,
        pool_recycle=1800,
        connect_args=_connect_options(settings, application_name),
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for one unit of work each; objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def driver_cursor(
    session: AsyncSession, row_factory: RowFactory[Any] | None = None
) -> AsyncCursor[Any]:
    """A psycopg cursor on the session's connection, for server-side prepared statements on hot
    paths (one round trip, no statement building, rows straight into tuples or dicts)."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    if raw is None:  # pragma: no cover - a pooled psycopg connection always has one
        raise RuntimeError("no driver connection")
    cursor: AsyncCursor[Any] = raw.cursor(row_factory=row_factory) if row_factory else raw.cursor()
    return cursor


async def connect_direct(settings: ServiceSettings, application_name: str) -> AsyncConnection[Any]:
    """One autocommit psycopg connection outside any pool, with the pools' timeouts (a
    LISTENing connection, say, which must not be handed to anyone else)."""
    return await AsyncConnection.connect(
        libpq_url(settings.database_url),
        autocommit=True,
        **_connect_options(settings, application_name),
    )


def one_items_fault(exc: Exception) -> bool:
    """Whether a batched statement's failure may be one item's own (bad data, a constraint),
    not the connection's or the server's: then its items are retried one by one
    (`service_kit.coalesce.Coalescer`'s `alone`)."""
    return isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, psycopg.OperationalError)


class DirectPool:
    """Autocommit psycopg connections for the hottest single-statement paths (GetQuote,
    CreateQuote, GetRamp): no ORM session, no greenlet hop and no reset around each call —
    a prepared select through it costs 155 us of client CPU against 390 us through an
    autocommit SQLAlchemy session (measured side by side). A single statement on an autocommit
    connection is its own durable transaction. Opened on first use, inside the serving loop;
    broken connections are replaced by the pool."""

    def __init__(self, settings: ServiceSettings, application_name: str) -> None:
        self._pool = AsyncConnectionPool(
            libpq_url(settings.database_url),
            min_size=settings.db_direct_pool_size,
            max_size=settings.db_direct_pool_size,
            kwargs={"autocommit": True, **_connect_options(settings, application_name)},
            timeout=settings.db_pool_timeout_s,
            max_lifetime=1800,
            name=f"{application_name}-direct",
            open=False,
        )
        self._opened = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection for one statement; back to the pool on exit.

        A lost or unreachable database is `DependencyUnavailable` (UNAVAILABLE, reason
        DATABASE_UNAVAILABLE: the caller may retry); after a broken connection every idle one
        is checked at once, so one failed call replaces them all (a restarted server or killed
        backends would otherwise fail one call per pooled connection)."""
        if not self._opened:
            await self._pool.open()  # idempotent; safe when two first callers race
            self._opened = True
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise DependencyUnavailable(
                "DATABASE_UNAVAILABLE", "no database connection within the pool timeout"
            ) from exc
        except psycopg.OperationalError as exc:
            if not isinstance(exc, psycopg.errors.QueryCanceled):  # a timeout: connection fine
                await self._pool.check()
            raise database_unavailable(exc) from exc

    async def close(self) -> None:
        """Close every connection (the pool cannot be reopened)."""
        if self._opened:
            await self._pool.close()
