"""Running a process's main coroutine on the configured event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """`asyncio.run(main)` on uvloop or on asyncio's own loop.

    uvloop (libuv) cut the CPU of every gRPC call and database round trip by about a tenth
    (README, Performance); "asyncio" remains for debugging.
    """
    if event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
