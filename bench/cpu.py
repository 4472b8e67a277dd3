"""CPU time of processes (Linux /proc): what one request costs each side, so ratios to the echo
baseline can be explained by where the cycles went on a machine the load generator shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _with_descendants(roots: list[int]) -> set[int]:
    """`roots` and every process below them (GRPC_PROCESSES siblings, Envoy's children)."""
    parent: dict[int, int] = {}
    for entry in PROC.glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields:
            parent[int(entry.name)] = int(fields[1])
    found, frontier = set(roots), list(roots)
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parent.items() if pp == pid and p not in found]
        found.update(children)
        frontier.extend(children)
    return found


def cpu_seconds(roots: list[int], descendants: bool = True) -> float:
    """User + system CPU seconds used so far by `roots` (and, by default, their descendants);
    0 without /proc."""
    if not PROC.exists():
        return 0.0
    total = 0
    for pid in _with_descendants(roots) if descendants else set(roots):
        fields = _stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (backends, WAL writer, checkpointer,
    autovacuum): the database's share of a workload, whichever server the bench uses. On a
    machine running other databases it counts their work too."""
    pids = []
    for entry in PROC.glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                pids.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return pids


def postgres_seconds() -> float:
    """CPU seconds used so far by the PostgreSQL server's current processes."""
    return cpu_seconds(postgres_pids(), descendants=False)


class Split:
    """CPU seconds per named group of processes over a window: `Split(groups)` starts it,
    `per_request(n)` ends it (milliseconds per request for each group). Each group is read by
    a callable giving its CPU seconds so far (PostgreSQL's processes are looked up each time)."""

    def __init__(self, groups: dict[str, Callable[[], float]]) -> None:
        self._groups = groups
        self._before = {name: read() for name, read in groups.items()}

    def per_request(self, requests: int) -> dict[str, float]:
        return {
            name: round(1e3 * (read() - self._before[name]) / max(1, requests), 2)
            for name, read in self._groups.items()
        }

    def cores(self, seconds: float) -> dict[str, float]:
        """Each group's CPU seconds per second of the window: the cores it kept busy."""
        return {
            name: round((read() - self._before[name]) / max(seconds, 1e-9), 2)
            for name, read in self._groups.items()
        }


AUTOGROUP = PROC / "sys" / "kernel" / "sched_autogroup_enabled"


def host() -> dict[str, int]:
    """What of the host shapes the numbers: its cores, and whether the kernel groups tasks by
    session for scheduling (`kernel.sched_autogroup_enabled`, -1 where there is no such knob).

    Autogroup is a desktop feature: every session gets one scheduling group of equal weight, so
    all of a PostgreSQL server's backends (one session) share what one shell would get, and a
    backend can sit runnable for hundreds of milliseconds while the bench's processes (another
    session) hold both cores. It applies only to tasks outside any CPU cgroup, so it does not
    reach containers; on a shared machine like this one it shows as cleanup's worst batch."""
    try:
        autogroup = int(AUTOGROUP.read_text().strip())
    except (OSError, ValueError):
        autogroup = -1
    return {"cpus": os.cpu_count() or 0, "sched_autogroup": autogroup}
