"""The coalescer: concurrent submissions in one loop turn share one batch call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ramp_service.worker.coalesce import Coalescer


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
