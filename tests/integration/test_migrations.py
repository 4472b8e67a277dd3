"""The Alembic migrations build exactly the schema the models describe, for every context."""

from __future__ import annotations

import importlib.util
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quote_service.db.models import Base as QuoteBase
from ramp_service.db.models import Base as RampBase
from ramp_service.worker.queue import FOLLOW_UP_STATUSES
from service_kit.db import libpq_url, sqlalchemy_url
from service_kit.migrations import alembic_config
from tests.support.aio import FakeClock, LoopThread
from tests.support.ramps import buy_record, insert_registered, insert_running, sell_record


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


def test_sell_ramps_that_ended_without_their_deposit_lately_are_watched_after_the_upgrade(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Ramps that ended before the release that brought the late-deposit watch: the SELLs that
    ended without their deposit within the watch's default window get it, due now; older ones,
    BUYs and completed ramps do not. A downgrade takes the watch off again."""
    migrations = Path(__file__).resolve().parents[2] / "ramp_service" / "db" / "migrations"
    config = alembic_config(migrations, database_url, "ramp")
    command.downgrade(config, "0004_idempotency_claims")
    rows = {
        "sell timed out an hour ago": (sell_record(clock.now), "TIMED_OUT", timedelta(hours=1)),
        "sell cancelled two days ago": (sell_record(clock.now), "CANCELLED", timedelta(days=2)),
        "sell failed a week ago": (sell_record(clock.now), "FAILED", timedelta(days=7)),
        "buy timed out an hour ago": (
            buy_record(clock.now, f"5{uuid.uuid4().hex}", {}),
            "TIMED_OUT",
            timedelta(hours=1),
        ),
        "sell complete an hour ago": (sell_record(clock.now), "COMPLETE", timedelta(hours=1)),
        "sell failed after its deposit": (sell_record(clock.now), "FAILED", timedelta(hours=1)),
    }
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        for record, status, ago in rows.values():
            aio_loop.run(insert_registered(sessions, record))
            conn.execute(
                "UPDATE ramp.ramps SET status = %s, updated_at = now() - %s WHERE id = %s",
                [status, ago, record.id],
            )
        # An older release failed SELLs after their deposit: that one sent a transaction.
        failed_late = rows["sell failed after its deposit"][0].id
        conn.execute(
            "INSERT INTO ramp.operations (ramp_id, phase, operation, network, state, detail,"
            " generation, created_at, updated_at) VALUES (%s, 'fundEphemeral', 'fund_pen',"
            " 'pendulum', 'confirmed', '', 1, now(), now())",
            [failed_late],
        )
    command.upgrade(config, "head")

    def watched() -> set[str]:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            return {
                name
                for name, (record, _, _) in rows.items()
                if conn.execute(
                    # Due within a quarter of an hour, its watch counted from when it ended.
                    "SELECT cleanup_phase = 'watchLateDeposit'"
                    " AND next_attempt_at <= now() + interval '15 minutes'"
                    " AND phase_started_at = updated_at FROM ramp.ramps WHERE id = %s",
                    [record.id],
                ).fetchone()
                == (True,)
            }

    assert watched() == {"sell timed out an hour ago", "sell cancelled two days ago"}
    command.downgrade(config, "0004_idempotency_claims")
    assert watched() == set()
    command.upgrade(config, "head")


# A pre-0005 release's abort, as its processor's move wrote it: status and phase, the phase's
# start, no follow-up phase, next_attempt_at left alone (the ramp was due when claimed).
OLD_ABORT = (
    "UPDATE ramp.ramps SET status = %s, current_phase = %s, cleanup_phase = NULL,"
    " attempts = 0, phase_started_at = %s, updated_at = %s WHERE id = %s"
)


def test_a_sell_the_previous_release_ends_without_its_deposit_is_watched(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """The previous release's pods keep ending ramps until the rollout is over, after the
    migrations ran, and know nothing of the watch: PostgreSQL sets it on their abort (0006's
    trigger). Not on a ramp something was sent for, not on a BUY, not over a watch this
    release's writers set themselves, and not again once a watch has run to its end."""
    ramps = {
        name: aio_loop.run(insert_running(sessions, clock.now))
        for name in ("timed out", "failed", "funded", "own watch", "watch over")
    }
    buy = buy_record(clock.now, f"5{uuid.uuid4().hex}", {})
    aio_loop.run(insert_registered(sessions, buy))
    unstarted = sell_record(clock.now)
    aio_loop.run(insert_registered(sessions, unstarted))
    ended = clock.now + timedelta(minutes=3)
    later = clock.now + timedelta(hours=1)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ramp.operations (ramp_id, phase, operation, network, state, detail,"
            " generation, created_at, updated_at) VALUES (%s, 'fundEphemeral', 'fund_pen',"
            " 'pendulum', 'confirmed', '', 1, now(), now())",
            [ramps["funded"]],
        )
        conn.execute(OLD_ABORT, ["TIMED_OUT", "timedOut", ended, ended, ramps["timed out"]])
        conn.execute(OLD_ABORT, ["FAILED", "failed", ended, ended, ramps["failed"]])
        conn.execute(OLD_ABORT, ["FAILED", "failed", ended, ended, ramps["funded"]])
        conn.execute(OLD_ABORT, ["TIMED_OUT", "timedOut", ended, ended, buy.id])
        # The previous release's cleanup job timing out an unstarted ramp (no due time set).
        conn.execute(
            "UPDATE ramp.ramps SET status = 'TIMED_OUT', current_phase = 'timedOut',"
            " next_attempt_at = NULL, updated_at = %s WHERE id = %s",
            [ended, unstarted.id],
        )
        # This release's writer: its own watch, due when it says.
        conn.execute(
            "UPDATE ramp.ramps SET status = 'CANCELLED', cleanup_phase = 'watchLateDeposit',"
            " next_attempt_at = %s WHERE id = %s",
            [later, ramps["own watch"]],
        )
        # A watch that ran to its end empties the cleanup phase; the status stays.
        conn.execute(OLD_ABORT, ["TIMED_OUT", "timedOut", ended, ended, ramps["watch over"]])
        conn.execute(
            "UPDATE ramp.ramps SET cleanup_phase = NULL WHERE id = %s", [ramps["watch over"]]
        )

        def state(ramp_id: uuid.UUID) -> tuple[object, ...]:
            row = conn.execute(
                "SELECT cleanup_phase, phase_started_at, next_attempt_at <= now(), attempts"
                " FROM ramp.ramps WHERE id = %s",
                [ramp_id],
            ).fetchone()
            assert row is not None
            return tuple(row)

        assert state(ramps["timed out"]) == ("watchLateDeposit", ended, True, 0)
        assert state(ramps["failed"]) == ("watchLateDeposit", ended, True, 0)
        watch, started, due, _ = state(unstarted.id)
        assert (watch, due) == ("watchLateDeposit", True)
        assert started is not None and started > clock.now  # from when it ended, by the database
        assert state(ramps["funded"])[0] is None
        assert state(buy.id)[0] is None
        assert state(ramps["own watch"])[:1] == ("watchLateDeposit",)
        assert conn.execute(
            "SELECT next_attempt_at FROM ramp.ramps WHERE id = %s", [ramps["own watch"]]
        ).fetchone() == (later,)
        assert state(ramps["watch over"])[0] is None


def test_the_upgrade_watches_sells_the_previous_release_ended_after_0005_ran(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Without the trigger (downgraded to 0005) an old-style abort is left unwatched; the
    upgrade to 0006 catches up those that were never watched, not one whose watch ran."""
    migrations = Path(__file__).resolve().parents[2] / "ramp_service" / "db" / "migrations"
    config = alembic_config(migrations, database_url, "ramp")
    command.downgrade(config, "0005_follow_ups_after_abort")
    unwatched = aio_loop.run(insert_running(sessions, clock.now))
    watched_once = aio_loop.run(insert_running(sessions, clock.now))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        ended = datetime.now(UTC)  # within the watch's window of the database's clock
        for ramp_id in (unwatched, watched_once):
            conn.execute(OLD_ABORT, ["TIMED_OUT", "timedOut", ended, ended, ramp_id])
        conn.execute(
            "INSERT INTO ramp.phase_events (ramp_id, from_phase, to_phase, status, actor, note,"
            " created_at) VALUES (%s, 'watchLateDeposit', 'watchLateDeposit', 'TIMED_OUT',"
            " 'worker:w1', 'done', now())",
            [watched_once],
        )

        def watching() -> set[uuid.UUID]:
            found = conn.execute(
                "SELECT id FROM ramp.ramps WHERE cleanup_phase = 'watchLateDeposit'"
                " AND next_attempt_at <= now() + interval '15 minutes'"
            ).fetchall()
            return {r[0] for r in found}

        assert watching() == set()  # the gap this release closes
        command.upgrade(config, "head")
        assert watching() == {unwatched}


def test_migration_0006_runs_again_after_a_run_cut_off_in_its_catch_up(database_url: str) -> None:
    """Its trigger commits before the catch-up runs: a migrate Job killed in between leaves
    the trigger and revision 0005 behind, and the next run must get through."""
    migrations = Path(__file__).resolve().parents[2] / "ramp_service" / "db" / "migrations"
    config = alembic_config(migrations, database_url, "ramp")
    command.downgrade(config, "0005_follow_ups_after_abort")
    spec = importlib.util.spec_from_file_location(
        "m0006", migrations / "versions" / "0006_watch_every_abort.py"
    )
    assert spec is not None and spec.loader is not None
    m0006 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m0006)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(m0006.FUNCTION)
        conn.execute(m0006.TRIGGER)
    command.upgrade(config, "head")
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'watch_after_abort'"
        ).fetchone()
        version = conn.execute("SELECT version_num FROM ramp.alembic_version").fetchone()
    assert (found, version) == ((1,), ("0006_watch_every_abort",))
