"""`python -m ramp_service.worker`: run the phase processor until SIGTERM.

Any number of workers may run at once; they share the queue through leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import start_http_server
from sqlalchemy import func, select

from ramp_service.chains.pendulum import PendulumChain
from ramp_service.config import WARM_CLIENTS
from ramp_service.db.models import OperationRow, RampRow
from ramp_service.domain.flows import WATCH_LATE_DEPOSIT
from ramp_service.domain.outcomes import RetryPolicy
from ramp_service.worker.config import WorkerSettings
from ramp_service.worker.engine import PhaseProcessor, ProcessorConfig
from ramp_service.worker.loader import RecordLoader
from ramp_service.worker.metrics import WorkerMetrics
from ramp_service.worker.queue import WorkQueue
from service_kit.config import load_settings
from service_kit.db import DirectPool, create_engine, session_factory
from service_kit.heap import freeze_startup_heap
from service_kit.logs import configure_logging
from service_kit.loop import run as run_on_loop

log = logging.getLogger("worker")
WARM_UP_S = 60.0  # the longest a Pendulum warm-up may take before the worker gives up on it


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def processor_config(settings: WorkerSettings) -> ProcessorConfig:
    """Budgets per phase from settings: user- and partner-paced phases get their own timeouts."""
    default = RetryPolicy(
        max_attempts=settings.worker_max_attempts,
        time_budget=timedelta(seconds=settings.worker_phase_budget_s),
    )
    return ProcessorConfig(
        batch_size=settings.worker_batch_size,
        max_in_flight=settings.worker_max_in_flight or None,
        poll_interval=timedelta(milliseconds=settings.worker_poll_interval_ms),
        phase_timeout=timedelta(seconds=settings.worker_phase_timeout_s),
        default_policy=default,
        policies={
            "awaitUserDeposit": RetryPolicy(
                default.max_attempts, timedelta(seconds=settings.deposit_timeout_s)
            ),
            "brlaTeleport": RetryPolicy(
                default.max_attempts, timedelta(seconds=settings.pix_timeout_s)
            ),
            WATCH_LATE_DEPOSIT: RetryPolicy.for_watch(
                timedelta(seconds=settings.late_deposit_watch_s)
            ),
        },
    )


async def refresh_gauges(sessions: object, metrics: WorkerMetrics, stop: asyncio.Event) -> None:
    """Every 15 s, set the ramps-by-status/phase and journal-state gauges from the database."""
    while not stop.is_set():
        try:
            async with sessions.begin() as session:  # type: ignore[attr-defined]
                ramps = await session.execute(
                    select(RampRow.status, RampRow.current_phase, func.count()).group_by(
                        RampRow.status, RampRow.current_phase
                    )
                )
                journal = await session.execute(
                    select(OperationRow.state, func.count()).group_by(OperationRow.state)
                )
            metrics.ramps.clear()
            for status, phase, n in ramps:
                metrics.ramps.labels(status=status, phase=phase).set(n)
            metrics.journal.clear()
            for state, n in journal:
                metrics.journal.labels(state=state).set(n)
        except Exception:
            log.exception("gauge refresh failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 15)


async def warm_up(pendulum: PendulumChain) -> None:
    """Load the Pendulum runtime into as many pooled clients as Pendulum calls run at once,
    beside the processing (which starts at once and loads a client itself if it must first),
    then freeze the heap: the loaded runtime is most of what a full collection would walk."""
    try:
        await asyncio.wait_for(asyncio.to_thread(pendulum.warm_up, WARM_CLIENTS), WARM_UP_S)
    except Exception as exc:  # the node may be down at start: clients load on first use
        log.warning(
            "pendulum warm-up failed; clients load on first use",
            extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
        )
    # Still worth it without the runtime (the imports). It runs while ramps are processed: one
    # collection's pause, and the few objects in flight then are frozen with the rest.
    freeze_startup_heap()


async def serve(settings: WorkerSettings) -> None:
    """Build the processor and run it until a signal arrives."""
    from ramp_service.worker.handlers.phases import build_phase_handlers
    from ramp_service.worker.handlers.registry import build_chains

    engine = create_engine(settings, "ramp_worker")
    sessions = session_factory(engine)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    direct = DirectPool(settings, "ramp_worker")
    queue = WorkQueue(sessions, direct, owner, timedelta(seconds=settings.worker_lease_s), utc_now)
    metrics = WorkerMetrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.metrics_host, registry=metrics.registry)

    chains = build_chains(settings, engine)
    handlers = build_phase_handlers(chains)
    processor = PhaseProcessor(
        queue, RecordLoader(direct), handlers, processor_config(settings), metrics
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker started", extra={"owner": owner, "metrics_port": settings.metrics_port})
    warm = asyncio.ensure_future(warm_up(chains.pendulum))
    gauges = asyncio.ensure_future(refresh_gauges(sessions, metrics, stop))
    await processor.run_forever(stop)
    warm.cancel()
    await gauges
    for pooled in (chains.stellar, chains.anchor, chains.pix):  # their HTTP connections
        await pooled.close()
    await direct.close()
    await engine.dispose()
    log.info("worker stopped", extra={"owner": owner})


def main() -> None:
    """Entry point."""
    settings = load_settings(WorkerSettings)
    configure_logging(settings.log_level)
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set (make run starts an embedded PostgreSQL)")
    run_on_loop(serve(settings), settings.event_loop)


main()
