"""Coalescing of concurrent calls into one round trip.

A processor drives its claimed ramps concurrently; on cheap phases they reach their next write
in the same event-loop turn. `Coalescer` gathers the items submitted during one turn and hands
them to a batch function once, at the start of the next turn; every caller still awaits its own
item's answer, so nothing a caller does next happens before its own write is durable: only the
round trip and the commit are shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalescer(Generic[Item, Answer]):
    """`await submit(item)` runs `batch([... every item submitted this turn ...])` once and
    returns this item's answer (the batch returns one answer per item, in order). A failing
    batch raises its exception in every caller of that batch, unless `alone(exc)` says the
    failure may be one item's own (bad data, not a lost connection): then each item is run as
    a batch of its own, so one bad item fails only its own caller. The batch must be atomic
    (a single statement) for that retry to be safe."""

    def __init__(
        self,
        batch: Callable[[Sequence[Item]], Awaitable[Sequence[Answer]]],
        alone: Callable[[Exception], bool] = lambda exc: False,
    ) -> None:
        self._batch = batch
        self._alone = alone
        self._pending: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Answer:
        """Queue `item` for this turn's batch; its answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(pending))
        self._flushes.add(task)  # keep a reference until it is done
        task.add_done_callback(self._flushes.discard)

    async def _run(self, pending: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._batch([item for item, _ in pending])
            if len(answers) != len(pending):
                raise RuntimeError(f"batch answered {len(answers)} of {len(pending)} items")
        except BaseException as exc:
            if len(pending) > 1 and isinstance(exc, Exception) and self._alone(exc):
                for one in pending:  # find the item it was: each alone
                    await self._run([one])
                return
            for _, future in pending:  # every caller learns why its write did not happen
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), answer in zip(pending, answers, strict=True):
            if not future.done():  # a cancelled caller no longer waits
                future.set_result(answer)
