"""Services run their main coroutine on the configured event loop."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from service_kit.config import ServiceSettings
from service_kit.loop import run


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_uvloop_by_default() -> None:
    assert ServiceSettings().event_loop == "uvloop"
    assert run(_loop_type(), "uvloop") is uvloop.Loop


def test_asyncio_s_own_loop_on_request() -> None:
    assert not issubclass(run(_loop_type(), "asyncio"), uvloop.Loop)


def test_an_unknown_loop_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="event_loop"):
        ServiceSettings()
