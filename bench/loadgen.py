"""Load generation in Python, for workloads whose calls depend on earlier answers (register
then start): a closed loop to find peak throughput, an open loop to measure latency. Single
independent requests go through the C generator instead (`bench.h2`).

The open loop sends at a fixed arrival rate and measures every latency from the request's
*intended* start, so queueing delay is never hidden (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

Call = Callable[[], Awaitable[object]]


class _Counter:
    """Every call either loop has finished, warm-ups included (for CPU per request)."""

    calls = 0


CALLS = _Counter()


@dataclass
class Result:
    """Throughput, latency percentiles (ms) and errors of one run."""

    qps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    requests: int


def histogram() -> HdrHistogram:
    return HdrHistogram(1, 120_000_000, 3)  # microseconds, up to two minutes


def result(hist: HdrHistogram, done: int, errors: int, elapsed: float) -> Result:
    """A `Result` from a run's histogram (microseconds) and counts."""

    def ms(p: float) -> float:
        return round(hist.get_value_at_percentile(p) / 1000, 3) if hist.get_total_count() else 0.0

    return Result(round(done / elapsed, 1), ms(50), ms(99), ms(99.9), errors, done + errors)


async def closed_loop(
    call: Call, concurrency: int, seconds: float, budget: int | None = None
) -> Result:
    """`concurrency` workers calling back to back for `seconds` (or until `budget` calls were
    made, for calls that use up prepared requests): the peak throughput."""
    hist, done, errors = histogram(), 0, 0
    deadline = time.perf_counter() + seconds
    left = budget if budget is not None else -1

    async def worker() -> None:
        nonlocal done, errors, left
        while time.perf_counter() < deadline and left != 0:
            left -= 1
            started = time.perf_counter()
            try:
                await call()
                done += 1
                hist.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
            except Exception:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    CALLS.calls += done + errors
    return result(hist, done, errors, time.perf_counter() - started)


async def open_loop(call: Call, rate: float, seconds: float, max_in_flight: int = 4000) -> Result:
    """Send at `rate` per second for `seconds`; latency counted from each intended start.

    Every send is a timer on the event loop at its intended time, so sends interleave with the
    processing of responses (a send loop that catches up in a burst would starve them, and its
    own stall would show up as the system's latency)."""
    hist, done, errors = histogram(), 0, 0
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def one(intended: float) -> None:
        nonlocal done, errors
        try:
            await call()
            done += 1
            hist.record_value(max(1, int((loop.time() - intended) * 1e6)))
        except Exception:
            errors += 1

    def launch(intended: float) -> None:
        nonlocal errors
        if len(tasks) >= max_in_flight:
            errors += 1  # the system under test fell too far behind: count, don't wait
            return
        task = loop.create_task(one(intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    total = int(rate * seconds)
    start = loop.time() + 0.05
    for i in range(total):
        loop.call_at(start + i / rate, launch, start + i / rate)
    await asyncio.sleep(max(0.0, start + total / rate - loop.time()) + 0.01)
    while tasks:
        await asyncio.gather(*list(tasks))
    CALLS.calls += done + errors
    return result(hist, done, errors, loop.time() - start)


async def measure(call: Call, seconds: float, concurrency: int = 32) -> tuple[Result, Result]:
    """Peak (closed loop) then latency at half of peak (open loop)."""
    await closed_loop(call, concurrency, min(1.0, seconds / 4))  # warm-up
    peak = await closed_loop(call, concurrency, seconds)
    half = await open_loop(call, max(1.0, peak.qps / 2), seconds)
    return peak, half
