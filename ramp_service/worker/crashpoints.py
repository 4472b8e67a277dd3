"""Named crash points for crash-recovery tests (inert unless WORKER_CRASH_AT is set).

`WORKER_CRASH_AT="nablaSwap:submit:sent,fundEphemeral:advanced"` makes this worker SIGKILL
itself the first time it reaches one of those points, the way a node dies: no drain, no
cleanup, leases left to expire. Points:

- `<phase>:<operation>:intent` — the journal holds the intent; nothing was sent yet;
- `<phase>:<operation>:sent` — the chain or partner call returned; nothing recorded yet;
- `<phase>:advanced` — the move out of `<phase>` is committed.
"""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(p for p in os.environ.get("WORKER_CRASH_AT", "").split(",") if p)


def crash_point(name: str) -> None:
    """Die here if this point is armed."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
