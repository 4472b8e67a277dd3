"""Fault injection shared by every devnet stand-in.

Each aiohttp app built with `install_faults(app)` gets a control endpoint:

    POST /dev/faults   {"fail_next": 2, "fail_status": 503, "delay_ms": 0,
                        "drop_next": 1, "paths": ["/transactions"]}
    DELETE /dev/faults  clears every fault

- `fail_next`: the next N matching requests get `fail_status` without being processed.
- `delay_ms`: every matching request waits this long first.
- `drop_next`: the next N matching requests are processed, then the connection is closed
  without a response (the client sees a dropped response; the effect is applied).
- `paths`: only requests whose path starts with one of these match (default: all but /dev).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FaultPlan:
    """What misbehaviour is armed right now."""

    fail_next: int = 0
    fail_status: int = 503
    delay_ms: int = 0
    drop_next: int = 0
    paths: list[str] = field(default_factory=list)
    held: int = 0  # requests waiting out `delay_ms` right now (read-only: tests wait on it)

    def matches(self, path: str) -> bool:
        """Whether a request to `path` is subject to the plan."""
        if path.startswith("/dev/"):
            return False
        return not self.paths or any(path.startswith(p) for p in self.paths)


FAULTS_KEY = web.AppKey("faults", FaultPlan)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the armed faults to matching requests."""
    plan = request.app[FAULTS_KEY]
    if not plan.matches(request.path):
        return await handler(request)
    if plan.delay_ms:
        plan.held += 1
        try:
            await asyncio.sleep(plan.delay_ms / 1000)
        finally:
            plan.held -= 1
    if plan.fail_next > 0:
        plan.fail_next -= 1
        return web.json_response(
            {"status": plan.fail_status, "title": "injected fault"}, status=plan.fail_status
        )
    if plan.drop_next > 0:
        plan.drop_next -= 1
        await handler(request)  # the effect happens...
        if request.transport is not None:
            request.transport.close()  # ...but the answer never arrives
        raise asyncio.CancelledError
    return await handler(request)


async def _set_faults(request: web.Request) -> web.Response:
    body = await request.json()
    plan = request.app[FAULTS_KEY]
    for name in ("fail_next", "fail_status", "delay_ms", "drop_next", "paths"):
        if name in body:
            setattr(plan, name, body[name])
    return web.json_response(vars(plan))


async def _clear_faults(request: web.Request) -> web.Response:
    plan = request.app[FAULTS_KEY]
    for name, value in vars(FaultPlan()).items():
        if name != "held":  # a count of requests in flight, not a fault
            setattr(plan, name, value)
    return web.json_response(vars(plan))


def install_faults(app: web.Application) -> None:
    """Add the fault middleware and the /dev/faults control endpoint to `app`."""
    app[FAULTS_KEY] = FaultPlan()
    app.middlewares.append(fault_middleware)
    app.router.add_post("/dev/faults", _set_faults)
    app.router.add_delete("/dev/faults", _clear_faults)
