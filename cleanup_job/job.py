"""The cleanup tasks, each in bounded batches, under one advisory lock.

A second run that finds the lock taken logs that it skipped and exits 0, so overlapping
schedules (or a person running it by hand) are harmless.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, text

from cleanup_job.config import CleanupSettings
from quote_service.db import cleanup as quote_cleanup
from ramp_service.db import cleanup as ramp_cleanup

log = logging.getLogger("cleanup_job")
LOCK_KEY = "pendulumpay:cleanup_job"


@dataclass
class Summary:
    """What one run did."""

    skipped: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    max_batch_ms: float = 0.0
    duration_ms: float = 0.0


class CleanupJob:
    """Runs every task to completion in batches of at most `cleanup_batch_size` rows."""

    def __init__(
        self,
        engine: Engine,
        settings: CleanupSettings,
        clock: Callable[[], datetime],
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._summary = Summary()
        self._paced_since = 0.0
        self._paced_rows = 0

    def run(self) -> Summary:
        """Take the lock or skip; then run each task."""
        started = time.perf_counter()
        with self._engine.connect() as lock_conn:
            got = lock_conn.scalar(
                text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": LOCK_KEY}
            )
            lock_conn.commit()
            if not got:
                log.info("another cleanup run holds the lock; skipping")
                self._summary.skipped = True
                return self._summary
            log.info(
                "cleanup started",
                extra={
                    "batch_size": self._settings.cleanup_batch_size,
                    "max_rows_per_s": self._settings.cleanup_max_rows_per_s,
                },
            )
            self._paced_since = self._monotonic()
            try:
                self._run_tasks(lock_conn)
            except BaseException:
                # The batch's error is the one to report: if the connection died with it, the
                # session lock went with the session, and unlocking would only raise again.
                with contextlib.suppress(Exception):
                    self._unlock(lock_conn)
                raise
            self._unlock(lock_conn)
        self._summary.duration_ms = round((time.perf_counter() - started) * 1000, 1)
        return self._summary

    @staticmethod
    def _unlock(conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": LOCK_KEY})
        conn.commit()

    def _run_tasks(self, conn: Connection) -> None:
        """Every task on `conn`, the connection holding the lock (a second connection would be
        opened inside the first batch's timing, and would cost a backend for nothing)."""
        now = self._clock()
        batch = self._settings.cleanup_batch_size
        self._repeat(conn, "quotes_expired", lambda c: quote_cleanup.expire_pending(c, now, batch))
        self._delete_old_quotes(
            conn, now - timedelta(days=self._settings.quote_retention_days), batch
        )
        cutoff = now - timedelta(seconds=self._settings.idempotency_ttl_s)
        self._repeat(
            conn,
            "idempotency_keys_deleted",
            lambda c: ramp_cleanup.delete_idempotency_keys(c, cutoff, batch),
        )
        self._repeat(
            conn, "ramps_timed_out", lambda c: ramp_cleanup.time_out_unstarted(c, now, batch)
        )

    def _delete_old_quotes(self, conn: Connection, cutoff: datetime, batch: int) -> None:
        kept: set[uuid.UUID] = set()

        def one_batch(conn: Connection) -> int:
            examined, deleted = quote_cleanup.delete_expired(
                conn, cutoff, batch, ramp_cleanup.QUOTE_HELD, kept
            )
            self._add("quotes_deleted", deleted)
            return examined

        self._repeat(conn, "quotes_examined", one_batch)
        self._add("quotes_kept_referenced", len(kept))

    def _repeat(self, conn: Connection, name: str, task: Callable[[Connection], int]) -> None:
        """Run `task` one batch per transaction until a batch touches nothing."""
        self._add(name, 0)
        while True:
            started = time.perf_counter()
            with conn.begin():
                conn.execute(
                    text(f"SET LOCAL statement_timeout = {self._settings.statement_timeout_ms}")
                )
                touched = task(conn)
            elapsed = (time.perf_counter() - started) * 1000
            self._summary.batches += 1
            self._summary.max_batch_ms = max(self._summary.max_batch_ms, round(elapsed, 2))
            self._add(name, touched)
            if touched == 0:
                return
            self._pace(touched)

    def _pace(self, touched: int) -> None:
        """Between batches: the configured pause, then, while the run is ahead of
        `cleanup_max_rows_per_s` (rows touched by every task since the lock was taken), sleep
        until it is not. The job shares the database's cores with the services: unpaced, it
        takes whatever share the scheduler gives it from them."""
        if self._settings.cleanup_batch_pause_ms:
            self._sleep(self._settings.cleanup_batch_pause_ms / 1000)
        self._paced_rows += touched
        if rate := self._settings.cleanup_max_rows_per_s:
            ahead = self._paced_rows / rate - (self._monotonic() - self._paced_since)
            if ahead > 0:
                self._sleep(ahead)

    def _add(self, name: str, count: int) -> None:
        self._summary.counts[name] = self._summary.counts.get(name, 0) + count
