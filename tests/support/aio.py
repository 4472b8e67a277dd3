"""Run asyncio servers in a background thread so synchronous tests can call them over sockets."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coro` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@dataclass
class FakeClock:
    """A clock tests move by hand (UTC)."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move forward by a timedelta given as keyword arguments."""
        self.now += timedelta(**delta)


def eventually(
    done: Callable[[], bool], what: str, within_s: float = 10, every_s: float = 0.05
) -> None:
    """Poll `done` every `every_s` until it holds; fail naming `what` after `within_s`."""
    deadline = time.monotonic() + within_s
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(every_s)
