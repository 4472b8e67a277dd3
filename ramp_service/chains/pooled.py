"""A pooled network client per event loop: made on first use, remade when called from another
loop (a client's connections belong to the loop that opened them), closed on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

C = TypeVar("C")


class LoopPooled(Generic[C]):
    """`get()`: the running loop's client, made by `make` on first use; `close()` closes it."""

    def __init__(self, make: Callable[[], C], close: Callable[[C], Awaitable[object]]) -> None:
        self._make = make
        self._close = close
        self._client: C | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> C:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._make(), loop
        return self._client

    async def close(self) -> None:
        """Close the pooled connections (the next `get()` makes a new client)."""
        client, self._client = self._client, None
        if client is not None:
            await self._close(client)
