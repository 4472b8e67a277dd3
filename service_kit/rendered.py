"""Messages a process rendered lately, by id, each with the tag it was rendered from (a bounded
LRU): a read that finds the same tag answers the held message instead of rendering again.
GetRamp tags a ramp's message with the ramp's version, GetQuote a quote's with the (immutable)
ticket object it came from. The messages are shared between answers and never modified after
rendering."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Key = TypeVar("Key")
Tag = TypeVar("Tag")
Message = TypeVar("Message")


class Rendered(Generic[Key, Tag, Message]):
    """At most `capacity` (tag, message) pairs by key, least recently used out first. Not
    thread-safe: one event loop owns it."""

    def __init__(self, capacity: int = 2048) -> None:
        self._entries: OrderedDict[Key, tuple[Tag, Message]] = OrderedDict()
        self._capacity = capacity

    def get(self, key: Key) -> tuple[Tag, Message] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, tag: Tag, message: Message) -> None:
        if self._capacity <= 0:
            return
        self._entries[key] = (tag, message)
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def drop(self, key: Key) -> None:
        self._entries.pop(key, None)
