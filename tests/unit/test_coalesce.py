"""The coalescer: concurrent submissions share one batch call (per loop turn, or behind a batch
in flight when the in-flight count is limited: group commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from service_kit.coalesce import Coalescer


def test_submissions_of_one_turn_form_one_batch_and_get_their_own_answers() -> None:
    batches: list[list[int]] = []

    async def double(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        await asyncio.sleep(0)
        return [i * 2 for i in items]

    async def main() -> tuple[list[int], int]:
        coalescer: Coalescer[int, int] = Coalescer(double)
        first = await asyncio.gather(*(coalescer.submit(i) for i in range(5)))
        later = await coalescer.submit(7)  # a new turn: a new batch
        return first, later

    first, later = asyncio.run(main())
    assert first == [0, 2, 4, 6, 8] and later == 14
    assert batches == [[0, 1, 2, 3, 4], [7]]


def test_a_failing_batch_fails_every_caller_of_that_batch_only() -> None:
    async def flaky(items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise ConnectionError("database went away")
        return list(items)

    async def main() -> tuple[list[object], int]:
        coalescer: Coalescer[int, int] = Coalescer(flaky)
        failed = await asyncio.gather(
            *(coalescer.submit(i) for i in (1, 13)), return_exceptions=True
        )
        return failed, await coalescer.submit(2)

    failed, after = asyncio.run(main())
    assert all(isinstance(f, ConnectionError) for f in failed)
    assert after == 2


def test_an_items_own_failure_fails_only_its_caller() -> None:
    """A batch failing on one item's bad data is re-run item by item when `alone` says so."""
    batches: list[list[int]] = []

    async def strict(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if 13 in items:
            raise ValueError("value too long for type character varying(64)")
        return [i * 2 for i in items]

    async def main() -> list[object]:
        coalescer: Coalescer[int, int] = Coalescer(
            strict, alone=lambda exc: isinstance(exc, ValueError)
        )
        return await asyncio.gather(
            *(coalescer.submit(i) for i in (1, 13, 2)), return_exceptions=True
        )

    answers = asyncio.run(main())
    assert answers[0] == 2 and answers[2] == 4
    assert isinstance(answers[1], ValueError)
    assert batches == [[1, 13, 2], [1], [13], [2]]


def test_a_batch_that_answers_the_wrong_number_of_items_is_an_error() -> None:
    async def short(items: Sequence[int]) -> list[int]:
        return list(items)[:-1]

    async def main() -> None:
        coalescer: Coalescer[int, int] = Coalescer(short)
        await asyncio.gather(coalescer.submit(1), coalescer.submit(2))

    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        asyncio.run(main())


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    release = asyncio.Event

    async def main() -> list[int]:
        gate = release()

        async def slow(items: Sequence[int]) -> list[int]:
            await gate.wait()
            return list(items)

        coalescer: Coalescer[int, int] = Coalescer(slow)
        tasks = [asyncio.ensure_future(coalescer.submit(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        tasks[1].cancel()
        gate.set()
        return [await tasks[0], await tasks[2]]

    assert asyncio.run(main()) == [0, 2]


def _gated() -> tuple[
    list[list[int]], asyncio.Event, Callable[[Sequence[int]], Awaitable[list[int]]]
]:
    """A batch function that records its batches and holds each until `gate` is set."""
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def hold(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        await gate.wait()
        return [i * 10 for i in items]

    return batches, gate, hold


def test_with_one_in_flight_the_items_behind_it_go_together_as_the_next_batch() -> None:
    async def main() -> tuple[list[list[int]], list[int], int]:
        batches, gate, hold = _gated()
        coalescer: Coalescer[int, int] = Coalescer(hold, max_in_flight=1)
        first = asyncio.ensure_future(coalescer.submit(0))
        await asyncio.sleep(0.01)  # the first batch is out, alone
        assert batches == [[0]]
        later = []
        for i in range(1, 6):  # arrivals in separate turns (as grpc.aio starts each RPC)
            later.append(asyncio.ensure_future(coalescer.submit(i)))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert batches == [[0]]  # nothing more goes out while one is in flight
        gate.set()
        answers = [await first, *[await task for task in later]]
        return batches, answers, coalescer.items

    batches, answers, items = asyncio.run(main())
    assert batches == [[0], [1, 2, 3, 4, 5]]
    assert answers == [0, 10, 20, 30, 40, 50] and items == 6


def test_an_item_alone_goes_at_once_even_with_an_in_flight_limit() -> None:
    """Nothing waits for a batch to fill: with nothing in flight, the next turn sends it."""
    batches: list[list[int]] = []

    async def record(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return list(items)

    async def main() -> list[int]:
        coalescer: Coalescer[int, int] = Coalescer(record, max_in_flight=1, max_batch=8)
        return [await coalescer.submit(i) for i in range(3)]

    assert asyncio.run(main()) == [0, 1, 2]
    assert batches == [[0], [1], [2]]


def test_max_batch_splits_what_piled_up_and_max_in_flight_bounds_the_batches_out() -> None:
    async def main() -> tuple[list[list[int]], list[int], list[int]]:
        batches, gate, hold = _gated()
        coalescer: Coalescer[int, int] = Coalescer(
            hold,
            max_in_flight=2,
            max_batch=3,
        )
        tasks = [asyncio.ensure_future(coalescer.submit(i)) for i in range(8)]
        await asyncio.sleep(0.01)
        out_while_held = [len(b) for b in batches]
        gate.set()
        answers = [await task for task in tasks]
        return batches, out_while_held, answers

    batches, out_while_held, answers = asyncio.run(main())
    assert out_while_held == [3, 3]  # two out, at most three items each; two more wait
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert answers == [i * 10 for i in range(8)]


def test_a_caller_cancelled_while_waiting_behind_a_batch_still_has_its_item_written() -> None:
    """Cancelling ends the wait, not the write (a release in a cancelled ramp's `finally`)."""

    async def main() -> tuple[list[list[int]], list[int], bool]:
        batches, gate, hold = _gated()
        coalescer: Coalescer[int, int] = Coalescer(hold, max_in_flight=1)
        tasks = [asyncio.ensure_future(coalescer.submit(0))]
        await asyncio.sleep(0.01)
        tasks += [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        tasks[2].cancel()  # item 2 gives up while item 0's batch is out
        gate.set()
        await coalescer.wait_idle()
        return batches, [await tasks[i] for i in (0, 1, 3)], tasks[2].cancelled()

    batches, answers, cancelled = asyncio.run(main())
    assert batches == [[0], [1, 2, 3]]
    assert answers == [0, 10, 30] and cancelled


def test_wait_idle_returns_once_everything_submitted_was_answered() -> None:
    async def main() -> tuple[bool, list[int]]:
        _, gate, hold = _gated()
        coalescer: Coalescer[int, int] = Coalescer(hold, max_in_flight=1)
        tasks = [asyncio.ensure_future(coalescer.submit(i)) for i in range(4)]
        await asyncio.sleep(0.01)
        idle = asyncio.ensure_future(coalescer.wait_idle())
        await asyncio.sleep(0.01)
        waiting = not idle.done()
        gate.set()
        await asyncio.wait_for(idle, 5)
        return waiting, [task.result() for task in tasks]  # all done: result() does not wait

    waiting, answers = asyncio.run(main())
    assert waiting and answers == [0, 10, 20, 30]


def test_limits_below_one_are_refused() -> None:
    async def nothing(items: Sequence[int]) -> list[int]:
        return list(items)

    with pytest.raises(ValueError):
        Coalescer(nothing, max_in_flight=0)
    with pytest.raises(ValueError):
        Coalescer(nothing, max_batch=0)


def test_drop_cancelled_leaves_out_a_caller_who_gave_up_before_its_batch_went_out() -> None:
    async def main() -> tuple[list[list[int]], list[int]]:
        batches, gate, hold = _gated()
        coalescer: Coalescer[int, int] = Coalescer(
            hold, max_in_flight=1, max_batch=2, drop_cancelled=True
        )
        tasks = [asyncio.ensure_future(coalescer.submit(0))]
        await asyncio.sleep(0.01)
        tasks += [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        tasks[2].cancel()
        gate.set()
        await coalescer.wait_idle()
        return batches, [await tasks[i] for i in (0, 1, 3)]

    batches, answers = asyncio.run(main())
    assert batches == [[0], [1, 3]]  # the batch of two is filled with live items
    assert answers == [0, 10, 30]


def test_beyond_max_pending_a_submit_fails_at_once_and_the_cancelled_hold_no_place() -> None:
    async def main() -> tuple[list[list[int]], str, list[int], int]:
        batches, gate, hold = _gated()
        coalescer: Coalescer[int, int] = Coalescer(
            hold,
            max_in_flight=1,
            max_pending=2,
            when_full=lambda: LookupError("full"),
            drop_cancelled=True,
        )
        first = asyncio.ensure_future(coalescer.submit(0))
        await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(LookupError) as full:
            await coalescer.submit(3)
        waiting[0].cancel()
        await asyncio.sleep(0)
        fits = asyncio.ensure_future(coalescer.submit(4))  # item 1 gave up: its place is free
        await asyncio.sleep(0.01)
        gate.set()
        answers = [await first, await waiting[1], await fits]
        return batches, str(full.value), answers, coalescer.waiting

    batches, full, answers, left = asyncio.run(main())
    assert full == "full" and answers == [0, 20, 40] and left == 0
    assert batches == [[0], [2, 4]]


def test_cancelling_wait_idle_leaves_the_writes_running() -> None:
    async def main() -> list[int]:
        _, gate, hold = _gated()
        coalescer: Coalescer[int, int] = Coalescer(hold, max_in_flight=1)
        tasks = [asyncio.ensure_future(coalescer.submit(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        idle = asyncio.ensure_future(coalescer.wait_idle())
        await asyncio.sleep(0.01)
        idle.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        return [await task for task in tasks]

    assert asyncio.run(main()) == [0, 10]


def test_alone_raising_reaches_every_caller_and_retries_are_not_counted_as_batches() -> None:
    async def main() -> tuple[list[object], int, int]:
        async def strict(items: Sequence[int]) -> list[int]:
            if 13 in items:
                raise ValueError("bad item")
            return list(items)

        def alone(exc: Exception) -> bool:
            raise RuntimeError("alone() itself failed")

        coalescer: Coalescer[int, int] = Coalescer(strict, alone)
        answers = await asyncio.gather(
            *(coalescer.submit(i) for i in (1, 13, 2)), return_exceptions=True
        )
        retried: Coalescer[int, int] = Coalescer(strict, lambda exc: True)
        await asyncio.gather(*(retried.submit(i) for i in (1, 13, 2)), return_exceptions=True)
        return list(answers), retried.batches, retried.items

    answers, batches, items = asyncio.run(main())
    assert all(isinstance(a, RuntimeError) for a in answers)
    assert (batches, items) == (1, 3)  # one batch sent; its row-by-row retry is not another
