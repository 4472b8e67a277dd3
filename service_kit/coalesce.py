"""Coalescing of concurrent calls into one round trip.

A processor drives its claimed ramps concurrently; on cheap phases they reach their next write
in the same event-loop turn. `Coalescer` gathers the items submitted during one turn and hands
them to a batch function once, at the start of the next turn; every caller still awaits its own
item's answer, so nothing a caller does next happens before its own write is durable: only the
round trip and the commit are shared.

With `max_in_flight`, a batch is sent only while fewer than that many are out; items submitted
meanwhile wait for one to return and then go together (at most `max_batch` to a batch). That is
group commit: under a light load each item goes alone at once, under a burst the items that
pile up behind a round trip share the next one (CreateQuote's inserts). Its bounds for a slow
or lost database: `max_pending` items may wait (more fail at once with `when_full()`), and with
`drop_cancelled` an item whose caller gave up before its batch went out is not sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")

Pending = list[tuple[Item, asyncio.Future[Answer]]]


class Coalescer(Generic[Item, Answer]):
    """`await submit(item)` runs `batch([... items submitted together ...])` once and returns
    this item's answer (the batch returns one answer per item, in order). A failing batch
    raises its exception in every caller of that batch, unless `alone(exc)` says the failure
    may be one item's own (bad data, not a lost connection): then each item is run as a batch
    of its own, so one bad item fails only its own caller. The batch must be atomic (a single
    statement) for that retry to be safe. By default cancelling a caller ends its wait, not its
    write: an item submitted goes out with its batch (a lease release in a cancelled ramp's
    `finally` still happens); `drop_cancelled` leaves such items out instead."""

    def __init__(
        self,
        batch: Callable[[Sequence[Item]], Awaitable[Sequence[Answer]]],
        alone: Callable[[Exception], bool] = lambda exc: False,
        *,
        max_in_flight: int | None = None,
        max_batch: int | None = None,
        max_pending: int | None = None,
        when_full: Callable[[], Exception] = lambda: RuntimeError("too many items waiting"),
        drop_cancelled: bool = False,
    ) -> None:
        for name, limit in (
            ("max_in_flight", max_in_flight),
            ("max_batch", max_batch),
            ("max_pending", max_pending),
        ):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1")
        self._batch = batch
        self._alone = alone
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._when_full = when_full
        self._drop_cancelled = drop_cancelled
        self._pending: Pending[Item, Answer] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self.batches = 0  # batches sent and the items in them, retries not counted (probes)
        self.items = 0

    @property
    def waiting(self) -> int:
        """Items submitted, not yet sent, whose callers still wait."""
        return sum(1 for _, future in self._pending if not future.done())

    async def submit(self, item: Item) -> Answer:
        """Queue `item` for the next batch; its answer."""
        if self._max_pending is not None and len(self._pending) >= self._max_pending:
            self._drop_gone()  # those who gave up hold no place
            if len(self._pending) >= self._max_pending:
                raise self._when_full()
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._schedule()
        return await future

    async def wait_idle(self) -> None:
        """Until nothing is pending or on its way (a stopping server's last writes). Cancelling
        this wait leaves the writes running."""
        while self._flushes or self._pending or self._scheduled:
            if self._flushes:
                await asyncio.wait(set(self._flushes))
            else:
                self._schedule()
                await asyncio.sleep(0)

    def _drop_gone(self) -> None:
        """With `drop_cancelled`, forget the pending items whose callers gave up."""
        if self._drop_cancelled:
            self._pending = [entry for entry in self._pending if not entry[1].done()]

    def _room(self) -> bool:
        return self._max_in_flight is None or len(self._flushes) < self._max_in_flight

    def _schedule(self) -> None:
        if self._pending and not self._scheduled and self._room():
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self._drop_gone()  # before slicing: a batch is not sent short of live items
        while self._pending and self._room():
            taken = self._pending[: self._max_batch] if self._max_batch else self._pending
            self._pending = self._pending[len(taken) :]
            self.batches += 1
            self.items += len(taken)
            task = asyncio.ensure_future(self._run(taken))
            self._flushes.add(task)  # keep a reference until it is done
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._schedule()  # what piled up behind it goes next

    async def _run(self, pending: Pending[Item, Answer]) -> None:
        """Send `pending` and answer its callers; whatever stops it (the batch failing,
        `alone` raising, a cancellation mid-retry) reaches every caller not yet answered."""
        try:
            await self._attempt(pending)
        except BaseException as exc:
            for _, future in pending:
                if future.done():  # answered, or its caller was cancelled
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _attempt(self, pending: Pending[Item, Answer]) -> None:
        try:
            answers = await self._batch([item for item, _ in pending])
            if len(answers) != len(pending):
                raise RuntimeError(f"batch answered {len(answers)} of {len(pending)} items")
        except Exception as exc:
            if len(pending) > 1 and self._alone(exc):
                for one in pending:  # find the item it was: each alone, answered by _run
                    await self._run([one])
                return
            raise
        for (_, future), answer in zip(pending, answers, strict=True):
            if not future.done():  # a cancelled caller no longer waits
                future.set_result(answer)
