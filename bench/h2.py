"""Driving `build/h2gen` (bench/h2gen/h2gen.c), the load generator of every single-request
workload, and turning what it writes into the same `Result` the Python loops produce.

The Python gRPC client spent as much CPU per call as the servers it measured (330-670 us), so
on two cores it took a core from whatever it measured; h2gen spends a few microseconds. The
latencies it reports go into HDR histograms here.
"""

from __future__ import annotations

import array
import json
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import CALLS, Result, histogram, result

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "build" / "h2gen"
# Clients arrive over many connections. The services run one process per core on one port
# (SO_REUSEPORT), and the kernel hashes each connection to one of them: over four connections
# four runs in five left one process with three or all four of them and the machine 25-30%
# idle; over sixteen the split was at worst 11:6. The bare echo server is one process, so its
# connections cannot be unbalanced, and it reached 6% more over four (probe, README
# "Performance"): it keeps four, the baseline at its best.
CONNECTIONS = 16
ECHO_CONNECTIONS = 4

Request = tuple[str, bytes]  # HTTP/2 :path and body


def grpc_request(method: str, message: bytes) -> Request:
    """A unary call of `method` ("/package.Service/Method") with a serialized message."""
    return method, b"\0" + len(message).to_bytes(4, "big") + message


def rest_get(path: str) -> Request:
    """A GET of `path` (through the gateway)."""
    return path, b""


@dataclass(frozen=True)
class Target:
    """Where to send: loopback port, and whether success is grpc-status 0 or a 2xx status."""

    port: int
    grpc: bool
    host: str = "127.0.0.1"
    connections: int = CONNECTIONS

    @classmethod
    def of(cls, address: str, grpc: bool, connections: int = CONNECTIONS) -> Target:
        """From "host:port" or "http://host:port"."""
        host, _, port = address.removeprefix("http://").rstrip("/").rpartition(":")
        return cls(int(port), grpc, host, connections)


class Generator:
    """CPU the generator processes have used so far (for the CPU-per-request accounting)."""

    cpu_seconds = 0.0


GENERATOR = Generator()


@dataclass
class Run:
    """One h2gen run: its result, and when each success completed (monotonic ns) if asked."""

    result: Result
    completions: list[int] = field(default_factory=list)


class Launch:
    """A running h2gen: `finish()` waits for its end (or, with `stop=True`, ends it now: no new
    requests, those in flight complete) and reads its report."""

    def __init__(
        self,
        target: Target,
        requests: Iterable[Request],
        *,
        seconds: float,
        concurrency: int = 32,
        rate: float | None = None,
        connections: int | None = None,
        completions: bool = False,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="h2gen-")
        self._work = Path(self._tmp.name)
        self._seconds = seconds
        self._completions = completions
        try:
            with open(self._work / "requests", "wb") as out:
                for path, body in requests:
                    encoded = path.encode()
                    out.write(len(encoded).to_bytes(2, "big") + encoded)
                    out.write(len(body).to_bytes(4, "big") + body)
            argv = [
                str(BINARY),
                "--host",
                target.host,
                "--port",
                str(target.port),
                "--requests",
                str(self._work / "requests"),
                "--seconds",
                str(seconds),
                "--connections",
                str(connections or target.connections),
                "--latencies",
                str(self._work / "latencies"),
                *(["--grpc"] if target.grpc else []),
                *(
                    ["--mode", "open", "--rate", str(rate)]
                    if rate is not None
                    else ["--mode", "closed", "--concurrency", str(concurrency)]
                ),
                *(["--completions", str(self._work / "completions")] if completions else []),
            ]
            self._process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except BaseException:
            self._tmp.cleanup()
            raise

    def finish(self, stop: bool = False) -> Run:
        """Wait for the run to end (`stop`: end it now) and return what it measured."""
        if stop:
            self._process.terminate()
        # h2gen itself gives up on unanswered streams 10 s after its last send.
        timeout = 30 if stop else self._seconds + 30
        try:
            out, err = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            self._tmp.cleanup()
            raise RuntimeError("h2gen did not finish") from None
        if stop and self._process.returncode == -signal.SIGTERM:
            # Stopped before its first statement installed the handler: nothing was sent.
            self._tmp.cleanup()
            return Run(result(histogram(), 0, 0, 1.0))
        try:
            if self._process.returncode != 0:
                raise RuntimeError(f"h2gen failed ({self._process.returncode}): {err.strip()}")
            summary = json.loads(out)
            GENERATOR.cpu_seconds += summary["cpu_s"]
            latencies = array.array("I")
            latencies.frombytes((self._work / "latencies").read_bytes())
            times = array.array("q")
            if self._completions:
                times.frombytes((self._work / "completions").read_bytes())
        finally:
            self._tmp.cleanup()
        hist = histogram()
        for value in latencies:
            hist.record_value(value)
        errors = summary["errors"] + summary["dropped"]
        CALLS.calls += summary["done"] + errors
        elapsed = max(summary["elapsed_s"], 1e-6)
        return Run(result(hist, summary["done"], errors, elapsed), list(times))


def run(
    target: Target,
    requests: Iterable[Request],
    *,
    seconds: float,
    concurrency: int = 32,
    rate: float | None = None,
) -> Result:
    """A closed loop of `concurrency` streams, or an open loop at `rate` when given."""
    return (
        Launch(target, requests, seconds=seconds, concurrency=concurrency, rate=rate)
        .finish()
        .result
    )


def measure(
    target: Target, requests: list[Request], seconds: float, concurrency: int = 32
) -> tuple[Result, Result]:
    """Peak (closed loop, after a warm-up) then latency at half of peak (open loop)."""
    run(target, requests, seconds=min(1.0, seconds / 4), concurrency=concurrency)
    peak = run(target, requests, seconds=seconds, concurrency=concurrency)
    half = run(target, requests, seconds=seconds, rate=max(1.0, peak.qps / 2))
    return peak, half
