"""Structured JSON logs carrying the current request id."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import itertools
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send JSON lines to stderr at `level`, replacing any handlers already installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries log every request at INFO (a worker polls partners several times a
    # second); their failures reach our own logs as classified errors instead.
    for noisy in ("httpx", "httpcore", "websocket", "substrateinterface", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


# A request id a client may choose (Envoy sends UUIDs): anything else is replaced by one of
# ours, so a header cannot break or forge a log line.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)


def new_request_id(given: str | None = None) -> str:
    """`given` when it is a well-formed client id, else a new id unique to this process run
    (a random prefix and a counter: no system call per request, unlike uuid4)."""
    if given and _CLIENT_REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ids):x}"


class AccessLog:
    """The access log: one JSON line per RPC (the same shape as every other line), written in
    batches by the event loop.

    Through `logging`, each line cost a LogRecord, the handler's lock, a formatter walking the
    record's attributes and a write of its own: 100-150 us of CPU per call in a loaded server,
    as much as a bare grpc.aio echo call (README, Performance). Here a call appends one line;
    the lines gathered are written `flush_s` after the first of them, at once past
    `max_lines`, and on shutdown or exit, in whole-line writes of at most PIPE_BUF bytes. A
    process killed with SIGKILL loses at most `flush_s` of access lines; warnings and errors
    go through `logging` at once, as before.
    """

    def __init__(self, logger: str = "grpc", flush_s: float = 0.2, max_lines: int = 512) -> None:
        self._logger = logging.getLogger(logger)
        self._prefix = f'"level": "INFO", "logger": {json.dumps(logger)}, "msg": "rpc"'
        self._flush_s = flush_s
        self._max_lines = max_lines
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        atexit.register(self.flush)  # whatever path the process leaves by

    def enabled(self) -> bool:
        """Whether access lines are wanted (INFO on the logger)."""
        return self._logger.isEnabledFor(logging.INFO)

    def record(self, rid: str, method: str, outcome: str, ms: float) -> None:
        """Queue one line. `rid` comes from `new_request_id` and `method` is a registered
        "/package.Service/Method" path: neither needs escaping. `outcome` may carry a reason
        code another service sent, so it is escaped."""
        ts = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds")
        self._lines.append(
            f'{{"ts": "{ts}", {self._prefix}, "request_id": "{rid}", "method": "{method}", '
            f'"outcome": {json.dumps(outcome)}, "ms": {ms}}}\n'
        )
        if len(self._lines) >= self._max_lines:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on a loop (a synchronous caller): write now
                self.flush()
                return
            self._timer = loop.call_later(self._flush_s, self.flush)

    def flush(self) -> None:
        """Write every queued line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        stream = sys.stderr  # looked up each time, as logging's handler writes to it
        try:
            for chunk in _chunks(lines):
                stream.write(chunk)
                stream.flush()  # one write each: whole lines, atomic on a shared pipe
        except (OSError, ValueError):  # stderr closed or gone: nothing to report to
            pass


# A write of at most this many bytes to a pipe is atomic (POSIX PIPE_BUF): the processes of a
# service with GRPC_PROCESSES > 1 share one stderr, and their lines must not interleave.
PIPE_BUF = 4096


def _chunks(lines: list[str]) -> list[str]:
    """`lines` joined into as few chunks as fit PIPE_BUF bytes each (a longer line alone)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode())
        if current and size + length > PIPE_BUF:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        chunks.append("".join(current))
    return chunks
