"""`python -m devstack [run|migrate]`: the local system on embedded defaults.

`run` (the default) starts PostgreSQL unless DATABASE_URL is set, applies migrations, then
starts every service as a child process and supervises them until Ctrl-C or SIGTERM, which it
forwards so each child drains gracefully.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

from devnet.keys import load_or_create_keys
from devstack.database import DATA_DIR, STATE_FILE, database_url, migrate_all
from service_kit.logs import configure_logging

log = logging.getLogger("devstack")

# Where `make run` listens unless the named variable says otherwise. Every port lies below
# 32768, outside Linux's ephemeral range (32768-60999): a listener inside it can find its port
# briefly held by some outgoing connection and fail to bind.
LOCAL_PORTS = {
    "QUOTE_GRPC_PORT": "15051",
    "RAMP_GRPC_PORT": "15052",
    "GATEWAY_PORT": "8080",
    "WORKER_METRICS_PORT": "9464",
}


def _port(variable: str) -> str:
    return os.environ.get(variable, LOCAL_PORTS[variable])


def _processes(url: str) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, argv, extra environment) of every long-running process."""
    py = sys.executable
    keys = load_or_create_keys(DATA_DIR / "devnet" / "keys.json")
    quote_port = _port("QUOTE_GRPC_PORT")
    ramp_port = _port("RAMP_GRPC_PORT")
    return [
        (
            "devnet",
            [py, "-m", "devnet"],
            {"DEVNET_KEYS_FILE": str(DATA_DIR / "devnet" / "keys.json")},
        ),
        ("quote", [py, "-m", "quote_service"], {"DATABASE_URL": url, "GRPC_PORT": quote_port}),
        (
            "ramp",
            [py, "-m", "ramp_service"],
            {
                "DATABASE_URL": url,
                "GRPC_PORT": ramp_port,
                "QUOTE_SERVICE_TARGET": f"127.0.0.1:{quote_port}",
                "STELLAR_FUNDING_SECRET": keys["stellar_funding"],
                "PENDULUM_FUNDING_SEED": keys["pendulum_funding"],
            },
        ),
        (
            "worker",
            [py, "-m", "ramp_service.worker"],
            {
                "DATABASE_URL": url,
                "STELLAR_FUNDING_SECRET": keys["stellar_funding"],
                "PENDULUM_FUNDING_SEED": keys["pendulum_funding"],
                "METRICS_PORT": _port("WORKER_METRICS_PORT"),
                "WORKER_CHAIN_POLL_MS": "500",
            },
        ),
        (
            "gateway",
            [py, "-m", "gateway"],
            {
                "GATEWAY_PORT": _port("GATEWAY_PORT"),
                "GATEWAY_QUOTE_UPSTREAM": f"127.0.0.1:{quote_port}",
                "GATEWAY_RAMP_UPSTREAM": f"127.0.0.1:{ramp_port}",
            },
        ),
    ]


def _write_state(url: str, children: dict[str, subprocess.Popen[bytes]]) -> None:
    """Where the running stack listens, for `make bench` to measure it instead of its own
    (owner-only: the database URL may hold a password)."""
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    if (other := _recorded_pid()) not in (None, os.getpid()):
        log.warning("another make run is up; its record is kept", extra={"pid": other})
        return
    state = {
        "pid": os.getpid(),
        "database_url": url,
        "quote_address": f"127.0.0.1:{_port('QUOTE_GRPC_PORT')}",
        "ramp_address": f"127.0.0.1:{_port('RAMP_GRPC_PORT')}",
        "pids": {name: child.pid for name, child in children.items()},
    }
    partial = STATE_FILE.with_name(f".{STATE_FILE.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(state, out)
    partial.replace(STATE_FILE)  # whole or not at all, for a reader


def _recorded_pid() -> int | None:
    """The pid of the `make run` the record names, if that process is alive."""
    try:
        pid = int(json.loads(STATE_FILE.read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def _remove_state() -> None:
    """Remove the record if it is ours (a second `make run`, failing on the taken ports, must
    not remove the first one's)."""
    if _recorded_pid() == os.getpid():
        STATE_FILE.unlink(missing_ok=True)


def run() -> int:
    """Start everything and wait; returns the exit status."""
    url = database_url()
    migrate_all(url)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Before the first child: a Ctrl-C while starting still stops every child started so far.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: dict[str, subprocess.Popen[bytes]] = {}
    status = 0
    try:
        for name, argv, env in _processes(url):
            if stopping:
                break
            children[name] = subprocess.Popen(argv, env={**os.environ, **env})
            log.info("started", extra={"child": name, "pid": children[name].pid})
        if not stopping:
            _write_state(url, children)
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    log.error("process exited", extra={"child": name, "code": child.returncode})
                    stopping, status = True, 1
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        _remove_state()
    log.info("stopped")
    return status


def main() -> int:
    """Dispatch `run` or `migrate`."""
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "migrate":
        migrate_all(database_url())
        return 0
    if command == "run":
        return run()
    sys.stderr.write("usage: python -m devstack [run|migrate]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
