"""The phase processor: claim due ramps, run their phases, apply the outcomes — durably.

Any number of processors may run: claims are atomic and leased, every write is fenced by the
lease's generation, attempts and next-attempt times live in PostgreSQL, and transitions must
follow the corridor's declared flow (anything else is a bug that stops the ramp loudly in
MANUAL_REVIEW rather than moving it somewhere undeclared).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from ramp_service.chains.errors import ChainError
from ramp_service.domain.flows import COMPLETE, FAILED, FLOWS, TIMED_OUT, Flow, IllegalTransition
from ramp_service.domain.outcomes import (
    Advance,
    Fail,
    Outcome,
    Retry,
    RetryPolicy,
    Review,
    TimeOut,
    Wait,
)
from ramp_service.domain.ramp import RampRecord
from ramp_service.worker.crashpoints import crash_point
from ramp_service.worker.handlers import PhaseContext, PhaseHandler
from ramp_service.worker.journal import Journal
from ramp_service.worker.metrics import WorkerMetrics
from ramp_service.worker.queue import Claim, ErrorEntry, LeaseLost, WorkQueue
from service_kit.db import DATABASE_LOST
from service_kit.errors import DependencyUnavailable

log = logging.getLogger("worker")

# The database going away, as each path reports it: DirectPool's DependencyUnavailable, a lost
# or timed-out connection through SQLAlchemy, or its pool's wait running out. Anything else
# (an integrity or SQL error) is a bug and is reported as one.
DATABASE_DOWN: tuple[type[Exception], ...] = (DependencyUnavailable, *DATABASE_LOST)


@dataclass
class ProcessorConfig:
    """Tuning of one processor."""

    batch_size: int = 10
    # Ramps driven at once (None: two batches' worth); a claim goes out when half is free.
    max_in_flight: int | None = None
    poll_interval: timedelta = timedelta(milliseconds=500)
    phase_timeout: timedelta = timedelta(seconds=60)
    default_policy: RetryPolicy = field(default_factory=RetryPolicy)
    policies: Mapping[str, RetryPolicy] = field(default_factory=dict)

    def policy(self, phase: str) -> RetryPolicy:
        """The retry policy of `phase`."""
        return self.policies.get(phase, self.default_policy)

    @property
    def in_flight_limit(self) -> int:
        """The most ramps one processor drives at a time."""
        return self.max_in_flight or 2 * self.batch_size


class PhaseProcessor:
    """Drives claimed ramps through their phases."""

    def __init__(
        self,
        queue: WorkQueue,
        load_ramp: Callable[[uuid.UUID], Awaitable[RampRecord]],
        handlers: Mapping[str, PhaseHandler],
        config: ProcessorConfig,
        metrics: WorkerMetrics,
    ) -> None:
        self._queue = queue
        self._load_ramp = load_ramp
        self._handlers = handlers
        self._config = config
        self._metrics = metrics

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Claim and drive ramps until `stop` is set; ramps in flight then finish their run.

        Claims are continuous, not batch after batch: up to `in_flight_limit` ramps are driven
        at once and the next claim goes out as soon as half of that is free (or a whole batch,
        if smaller). Waiting for a whole batch to finish before claiming again let one ramp
        whose chain call ran to its timeout hold back every due ramp behind it. A claim that
        finds fewer due ramps than it asked for means the queue is empty for now: the next
        waits for the poll interval, or for every ramp in flight to finish (ramps that just
        went on may be due at once), whichever comes first.
        """
        in_flight: set[asyncio.Future[None]] = set()
        slot_freed, drained = asyncio.Event(), asyncio.Event()
        drained.set()

        def finished(task: asyncio.Future[None]) -> None:
            in_flight.discard(task)
            slot_freed.set()
            if not in_flight:
                drained.set()

        limit = self._config.in_flight_limit
        threshold = max(1, min(self._config.batch_size, limit // 2))
        try:
            while not stop.is_set():
                free = limit - len(in_flight)
                if free < threshold:
                    slot_freed.clear()
                    await _first_of(stop, slot_freed)
                    continue
                asked = min(self._config.batch_size, free)
                try:
                    claims = await self._queue.claim_due(asked)
                except DATABASE_DOWN as exc:
                    # The database is away: nothing was claimed (or the claim did not commit);
                    # the leases of anything claimed expire and this or another worker goes on.
                    log.warning("database unavailable; retrying", extra={"error": str(exc)[:200]})
                    claims = []
                for claim in claims:
                    task = asyncio.ensure_future(self._drive_reported(claim))
                    in_flight.add(task)
                    drained.clear()
                    task.add_done_callback(finished)
                if len(claims) < asked:
                    wake = (stop, drained) if claims else (stop,)
                    await _first_of(*wake, within=self._config.poll_interval.total_seconds())
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim one batch and drive every claimed ramp as far as it can go now."""
        claims = await self._queue.claim_due(self._config.batch_size)
        await asyncio.gather(*(self._drive(claim) for claim in claims))
        return len(claims)

    async def _drive_reported(self, claim: Claim) -> None:
        """`_drive`, on its own: what escapes it (recording a bug while the database is away)
        is logged, as run_once's caller would see it, and the ramp is left to its next claim."""
        try:
            await self._drive(claim)
        except DATABASE_DOWN as exc:
            log.warning(
                "database unavailable; ramp left for its next claim",
                extra={"ramp_id": str(claim.ramp_id), "error": str(exc)[:200]},
            )
        except Exception:
            log.exception("processor bug", extra={"ramp_id": str(claim.ramp_id)})

    async def _drive(self, claim: Claim) -> None:
        steps = asyncio.ensure_future(self._steps(claim))
        heartbeat = asyncio.ensure_future(self._heartbeat(claim, steps))
        try:
            await steps
        except (LeaseLost, asyncio.CancelledError):
            self._metrics.lease_losses.inc()
            log.warning("lease lost; stopping", extra={"ramp_id": str(claim.ramp_id)})
        except DATABASE_DOWN as exc:
            # Stopped between two durable writes; the journal and the fenced moves make the
            # next claim of this ramp (after its lease expires) pick up exactly there.
            log.warning(
                "database unavailable; ramp left for its next claim",
                extra={"ramp_id": str(claim.ramp_id), "error": str(exc)[:200]},
            )
        except Exception as exc:
            log.exception("processor bug", extra={"ramp_id": str(claim.ramp_id)})
            await self._after_bug(claim, exc)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await self._queue.release(claim)

    async def _after_bug(self, claim: Claim, exc: Exception) -> None:
        """Record the error, count an attempt and back off under the phase's retry policy (to
        MANUAL_REVIEW once it is exhausted; an ended ramp's follow-up phases are abandoned
        instead, as they never change its outcome), so a ramp that keeps hitting a bug is
        neither claimed again at every poll nor left without a trace."""
        phase = claim.active_phase
        error = ErrorEntry(phase, "PROCESSOR_ERROR", f"{type(exc).__name__}: {exc}", True)
        policy = self._config.policy(phase)
        attempts = claim.attempts + 1
        try:
            why = policy.exhausted(attempts, claim.phase_started_at, self._queue.clock())
            if why is not None:
                with contextlib.suppress(Exception):  # the move may be what fails: back off
                    if claim.following_up:
                        # The rest of the follow-ups would hit the same bug: stop them here.
                        await self._abandon_follow_up(
                            claim, None, f"PROCESSOR_ERROR: {why}; {error.message}"
                        )
                    else:
                        await self._manual_review(claim, phase, f"PROCESSOR_ERROR: {why}", error)
                    return
            await self._queue.reschedule(claim, policy.backoff(attempts), error)
        except Exception:
            log.exception("processor error not recorded", extra={"ramp_id": str(claim.ramp_id)})

    async def _heartbeat(self, claim: Claim, steps: asyncio.Future[None]) -> None:
        interval = self._queue.lease_for.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._queue.heartbeat(claim)
            except LeaseLost:
                steps.cancel()  # stop before the run's next write
                return
            except DATABASE_DOWN as exc:  # keep beating: the lease has two more intervals
                log.warning(
                    "lease heartbeat failed; trying again",
                    extra={"ramp_id": str(claim.ramp_id), "error": str(exc)[:200]},
                )

    async def _steps(self, claim: Claim) -> None:
        flow = FLOWS[claim.flow_version]
        # Loaded once per claim: what handlers read (quote, accounts, transactions, partner
        # data) does not change while a ramp runs; phase and status come from the claim.
        record = await self._load_ramp(claim.ramp_id)
        while await self._step(claim, flow, record):
            pass

    async def _step(self, claim: Claim, flow: Flow, record: RampRecord) -> bool:
        """Run the active phase once and apply its outcome; True when the ramp can go on now."""
        phase = claim.active_phase
        handler = self._handlers.get(phase)
        if handler is None and claim.following_up:  # never changes how the ramp ended
            log.error("no handler", extra={"ramp_id": str(claim.ramp_id), "phase": phase})
            await self._abandon_follow_up(claim, None, f"NO_HANDLER: {phase}")
            return False
        if handler is None:
            await self._queue.move(
                claim,
                status="MANUAL_REVIEW",
                reason=f"no handler for phase {phase}",
                error=ErrorEntry(phase, "NO_HANDLER", f"no handler for {phase}", False),
            )
            return False
        ctx = PhaseContext(
            record,
            phase,
            claim.attempts + 1,
            Journal(self._queue, claim, phase),
            self._queue.clock(),
            claim.phase_started_at,
        )
        outcome = await self._run_handler(handler, ctx)
        try:
            if claim.following_up:
                return await self._apply_cleanup(claim, flow, phase, outcome)
            return await self._apply(claim, flow, phase, outcome)
        except IllegalTransition as exc:
            log.error(
                "illegal transition", extra={"ramp_id": str(claim.ramp_id), "error": str(exc)}
            )
            await self._queue.move(
                claim,
                status="MANUAL_REVIEW",
                reason=str(exc),
                error=ErrorEntry(phase, "ILLEGAL_TRANSITION", str(exc), False),
            )
            return False

    async def _run_handler(self, handler: PhaseHandler, ctx: PhaseContext) -> Outcome:
        try:
            return await asyncio.wait_for(
                handler.run(ctx), self._config.phase_timeout.total_seconds()
            )
        except ChainError as exc:
            return (
                Retry(exc.reason, exc.message) if exc.recoverable else Fail(exc.reason, exc.message)
            )
        except TimeoutError:
            return Retry(
                "PHASE_TIMEOUT", f"{ctx.phase} took longer than {self._config.phase_timeout}"
            )
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception("handler error", extra={"ramp_id": str(ctx.ramp.id), "phase": ctx.phase})
            return Retry("HANDLER_ERROR", f"{type(exc).__name__}: {exc}")

    async def _apply(self, claim: Claim, flow: Flow, phase: str, outcome: Outcome) -> bool:
        now = self._queue.clock()
        policy = self._config.policy(phase)
        if isinstance(outcome, Advance):
            target = flow.next_phase(phase)
            flow.check_transition(phase, target)
            self._metrics.observe_phase(phase, (now - claim.phase_started_at).total_seconds())
            finding = ErrorEntry(phase, *outcome.finding, False) if outcome.finding else None
            if finding is not None:
                log.warning(
                    "finding",
                    extra={"ramp_id": str(claim.ramp_id), "phase": phase, "why": finding.reason},
                )
            if target == COMPLETE:
                first_cleanup = flow.cleanup[0].name if flow.cleanup else None
                await self._queue.move(
                    claim,
                    to_phase=COMPLETE,
                    status="COMPLETE",
                    first_cleanup=first_cleanup,
                    error=finding,
                    note=outcome.note,
                )
                crash_point(f"{phase}:advanced")
                return first_cleanup is not None
            await self._queue.move(claim, to_phase=target, error=finding, note=outcome.note)
            crash_point(f"{phase}:advanced")
            return True
        if isinstance(outcome, Wait):
            if (why := policy.exhausted(0, claim.phase_started_at, now)) is not None:
                spec = flow.spec(phase)
                # Out of time with nothing arrived: the ramp times out, unless only the partner
                # can say nothing will (then, as once money arrived, a person decides).
                timeout = spec.may_time_out and not spec.partner_confirms_timeout
                if timeout and not outcome.holds_funds:
                    return await self._apply(claim, flow, phase, TimeOut(why))
                await self._manual_review(claim, phase, f"{outcome.reason}: {why}")
                return False
            await self._queue.reschedule(claim, outcome.delay, None)
            return False
        if isinstance(outcome, Retry):
            self._metrics.retries.labels(phase=phase, reason=outcome.reason).inc()
            error = ErrorEntry(phase, outcome.reason, outcome.message, True)
            if (
                why := policy.exhausted(claim.attempts + 1, claim.phase_started_at, now)
            ) is not None:
                await self._manual_review(claim, phase, f"{outcome.reason}: {why}", error)
                return False
            await self._queue.reschedule(claim, policy.backoff(claim.attempts + 1), error)
            return False
        if isinstance(outcome, Review):
            await self._manual_review(
                claim,
                phase,
                f"{outcome.reason}: {outcome.message}",
                ErrorEntry(phase, outcome.reason, outcome.message, False),
            )
            return False
        if isinstance(outcome, Fail):
            spec = flow.spec(phase)
            # The user's money is out there, or may yet arrive: a person decides.
            if spec.holds_funds or spec.partner_confirms_timeout:
                return await self._apply(
                    claim, flow, phase, Review(outcome.reason, outcome.message)
                )
            flow.check_transition(phase, FAILED)
            # Ended before the user's money came: it may still come (its follow-up watches).
            watch = flow.first_after_abort
            await self._queue.move(
                claim,
                to_phase=FAILED,
                status="FAILED",
                reason=outcome.reason,
                error=ErrorEntry(phase, outcome.reason, outcome.message, False),
                first_cleanup=watch,
            )
            return watch is not None
        flow.check_transition(phase, TIMED_OUT)
        watch = flow.first_after_abort
        await self._queue.move(
            claim,
            to_phase=TIMED_OUT,
            status="TIMED_OUT",
            reason=outcome.reason,
            error=ErrorEntry(phase, "TIMED_OUT", outcome.reason, False),
            first_cleanup=watch,
        )
        return watch is not None

    async def _manual_review(
        self, claim: Claim, phase: str, why: str, error: ErrorEntry | None = None
    ) -> None:
        log.warning(
            "manual review", extra={"ramp_id": str(claim.ramp_id), "phase": phase, "why": why}
        )
        await self._queue.move(
            claim,
            status="MANUAL_REVIEW",
            reason=why,
            error=error or ErrorEntry(phase, "MANUAL_REVIEW", why, False),
        )

    async def _apply_cleanup(self, claim: Claim, flow: Flow, phase: str, outcome: Outcome) -> bool:
        """Follow-up phases never change how a ramp ended: cleanup never blocks `complete`
        (exhausted or failed cleanup is recorded and skipped), and a watch after the ramp ended
        without the user's money that finds what a person must settle records it under its own
        reason and stops."""
        names = [p.name for p in flow.follow_ups(claim.status)]
        following = names[names.index(phase) + 1] if names.index(phase) + 1 < len(names) else None
        now = self._queue.clock()
        policy = self._config.policy(phase)
        if isinstance(outcome, Advance):
            await self._queue.step_cleanup(claim, following)
            crash_point(f"{phase}:advanced")
            return following is not None
        if isinstance(outcome, Wait | Retry):
            reason = outcome.reason
            attempts = claim.attempts + (1 if isinstance(outcome, Retry) else 0)
            if (why := policy.exhausted(attempts, claim.phase_started_at, now)) is None:
                error = (
                    ErrorEntry(phase, reason, outcome.message, True)
                    if isinstance(outcome, Retry)
                    else None
                )
                delay = outcome.delay if isinstance(outcome, Wait) else policy.backoff(attempts)
                checked = isinstance(outcome, Wait) and policy.failures_in_a_row
                await self._queue.reschedule(claim, delay, error, reset_attempts=checked)
                return False
            message = f"cleanup abandoned: {why}"
        elif isinstance(outcome, Review) and claim.status != "COMPLETE":
            log.error(
                "aborted ramp needs a person",
                extra={"ramp_id": str(claim.ramp_id), "phase": phase, "why": outcome.reason},
            )
            self._metrics.reviews_after_abort.labels(reason=outcome.reason).inc()
            error = ErrorEntry(phase, outcome.reason, outcome.message, False)
            # The reason goes on the ramp too: ListRampsForReview finds it (status, reason).
            await self._queue.step_cleanup(
                claim,
                following,
                error,
                note="needs review",
                status_reason=f"{outcome.reason}: {outcome.message}",
            )
            return following is not None
        else:
            reason, message = (
                getattr(outcome, "reason", "CLEANUP_FAILED"),
                f"cleanup failed: {outcome}",
            )
        await self._abandon_follow_up(claim, following, f"{reason}: {message}")
        return following is not None

    async def _abandon_follow_up(self, claim: Claim, following: str | None, why: str) -> None:
        """Record the active follow-up phase as given up (CLEANUP_ABANDONED) and go on to
        `following`. One of a ramp that ended without the user's money (a watch) is counted
        with the findings: nobody watches that deposit address any more."""
        if claim.status != "COMPLETE":
            self._metrics.reviews_after_abort.labels(reason="CLEANUP_ABANDONED").inc()
        error = ErrorEntry(claim.active_phase, "CLEANUP_ABANDONED", why, False)
        await self._queue.step_cleanup(claim, following, error)


async def _first_of(*events: asyncio.Event, within: float | None = None) -> None:
    """Return once any of `events` is set, or after `within` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
