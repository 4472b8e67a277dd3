"""The whole system for end-to-end tests: the devnet on loopback, the quote service, the ramp
service and phase-processor workers as real processes, and real Envoy in front."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from stellar_sdk import Keypair as StellarKeypair
from substrateinterface import Keypair as SubstrateKeypair

from devnet.anchor.app import AnchorConfig
from devnet.anchor.app import create_app as create_anchor
from devnet.bridge import bridge_payout
from devnet.horizon.app import DEVNET_PASSPHRASE, LEDGER_KEY, HorizonConfig
from devnet.horizon.app import create_app as create_horizon
from devnet.pix.app import PixConfig
from devnet.pix.app import create_app as create_pix
from devnet.substrate.app import CHAIN_KEY, SubstrateConfig
from devnet.substrate.app import create_app as create_substrate
from devnet.substrate.chain import Chain
from devnet.wallet import DevnetWallet
from pendulumpay_client import RampClient
from quote_service.main import SERVICE_NAME as QUOTE_SERVICE
from ramp_service.main import SERVICE_NAME as RAMP_SERVICE
from tests.support.aio import LoopThread
from tests.support.envoy import Gateway, start_gateway
from tests.support.http_apps import serve
from tests.support.processes import free_port, wait_serving

ADMIN_TOKEN = "e2e-admin-token-0123456789"


@dataclass
class System:
    """A running system and the handles a test needs."""

    rest: RampClient
    wallet: DevnetWallet
    chain: Chain
    horizon_ledger: Any
    passphrase: str
    worker_env: dict[str, str]
    workdir: Path
    node_http_url: str
    ramp_target: str
    admin_token: str
    urls: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        """Another phase-processor process (`python -m ramp_service.worker`)."""
        log = (self.workdir / f"worker-{len(self.workers)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "ramp_service.worker"],
            env={**os.environ, **self.worker_env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(process)
        return process

    def fault(self, service: str, **plan: object) -> None:
        """Arm a devnet fault plan on `service` (horizon, anchor, pix)."""
        httpx.post(f"{self.urls[service]}/dev/faults", json=plan, timeout=5).raise_for_status()

    def rpc(self, method: str, *params: object) -> object:
        """A JSON-RPC call to the Substrate devnet."""
        answer = httpx.post(
            self.node_http_url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
            timeout=5,
        ).json()
        assert "error" not in answer, answer
        return answer["result"]

    def wait_settled(self, ramp_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """Wait until the ramp is terminal with no cleanup pending; the ramp as REST shows it."""
        url = self.worker_env["DATABASE_URL"].replace("+psycopg", "")
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT status, cleanup_phase FROM ramp.ramps WHERE id = %s", (ramp_id,)
                ).fetchone()
                if row is not None and row[0] != "RUNNING" and row[1] is None:
                    return self.rest.get(ramp_id)
                time.sleep(0.2)
        raise AssertionError(
            f"{self.rest.get(ramp_id)}\n{self.rest.errors(ramp_id)}\n{self.worker_logs()}"
        )

    def kill_workers(self) -> None:
        """SIGKILL every worker: no drain, no cleanup, as a crashed node."""
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)

    def worker_logs(self, tail: int = 3000) -> str:
        """Every worker's output, the last `tail` characters of each (for failure messages)."""
        logs = sorted(self.workdir.glob("worker-*.log"))
        return "\n".join(p.read_text()[-tail:] for p in logs)

    def wait_worker_log(self, text: str, timeout_s: float = 90) -> str:
        """The workers' whole output once it contains `text` (it is written beside the
        processing, so it may come after the ramps); AssertionError with the tail if not."""
        deadline = time.monotonic() + timeout_s
        while text not in (logs := self.worker_logs(tail=10**9)):
            assert time.monotonic() < deadline, (text, self.worker_logs())
            time.sleep(0.2)
        return logs


def _start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def system(database_url: str, aio_loop: LoopThread, tmp_path: Path) -> Iterator[System]:
    """Everything `make run` starts, on free ports and a fresh database, with fast blocks."""
    anchor = StellarKeypair.random()
    stellar_funding = StellarKeypair.random()
    pendulum_seed = f"//e2e-funding-{free_port()}"
    pendulum_funding = SubstrateKeypair.create_from_uri(pendulum_seed, ss58_format=56)
    horizon_app = create_horizon(
        HorizonConfig(
            ledger_close_s=0.2,
            genesis={
                anchor.public_key: Decimal(10_000),
                stellar_funding.public_key: Decimal(1_000_000),
            },
        )
    )
    node_app = create_substrate(
        SubstrateConfig(
            0.1,
            bridge_payout(horizon_app[LEDGER_KEY], anchor),
            endowed={pendulum_funding.ss58_address: {"PEN": Decimal(1_000_000)}},
        )
    )
    horizon_runner, horizon_port = aio_loop.run(serve(horizon_app))
    node_runner, node_port = aio_loop.run(serve(node_app))
    horizon_url = f"http://127.0.0.1:{horizon_port}"
    node_http = f"http://127.0.0.1:{node_port}/"
    anchor_runner, anchor_port = aio_loop.run(
        serve(create_anchor(AnchorConfig(horizon_url, anchor.public_key)))
    )
    pix_runner, pix_port = aio_loop.run(serve(create_pix(PixConfig(node_http))))
    pix_url = f"http://127.0.0.1:{pix_port}"
    quote_port, ramp_port = free_port(), free_port()
    common = {"DATABASE_URL": database_url, "LOG_LEVEL": "INFO", "LOG_RPCS": "false"}
    chains = {
        "HORIZON_URL": horizon_url,
        "STELLAR_NETWORK_PASSPHRASE": DEVNET_PASSPHRASE,
        "SUBSTRATE_URL": f"ws://127.0.0.1:{node_port}",
        "ANCHOR_URL": f"http://127.0.0.1:{anchor_port}",
        "PIX_URL": pix_url,
        "STELLAR_FUNDING_SECRET": stellar_funding.secret,
        "PENDULUM_FUNDING_SEED": pendulum_seed,
        # Clients load on first use: each loaded at start decodes the runtime's metadata.
        "PENDULUM_WARM_CLIENTS": "0",
    }
    quote = _start(
        "quote_service", {**common, "GRPC_PORT": str(quote_port)}, tmp_path / "quote.log"
    )
    ramp = _start(
        "ramp_service",
        {
            **common,
            **chains,
            "GRPC_PORT": str(ramp_port),
            "QUOTE_SERVICE_TARGET": f"127.0.0.1:{quote_port}",
            "ADMIN_TOKEN": ADMIN_TOKEN,
        },
        tmp_path / "ramp.log",
    )
    gateway: Gateway | None = None
    running: System | None = None
    try:
        # The services' own health names: the port answers for the right service, ready.
        wait_serving(f"127.0.0.1:{quote_port}", QUOTE_SERVICE)
        wait_serving(f"127.0.0.1:{ramp_port}", RAMP_SERVICE)
        gateway = start_gateway(
            tmp_path,
            quote_upstream=f"127.0.0.1:{quote_port}",
            ramp_upstream=f"127.0.0.1:{ramp_port}",
            rate_limit_per_s=10_000,
            rate_limit_tokens=10_000,
        )
        running = System(
            rest=RampClient(gateway.url),
            wallet=DevnetWallet(node_http, horizon_url, pix_url),
            chain=node_app[CHAIN_KEY],
            horizon_ledger=horizon_app[LEDGER_KEY],
            passphrase=DEVNET_PASSPHRASE,
            worker_env={
                **common,
                **chains,
                "METRICS_PORT": "0",
                "WORKER_POLL_INTERVAL_MS": "100",
                "WORKER_CHAIN_POLL_MS": "200",
                "WORKER_LEASE_S": "3",
            },
            workdir=tmp_path,
            node_http_url=node_http,
            ramp_target=f"127.0.0.1:{ramp_port}",
            admin_token=ADMIN_TOKEN,
            urls={"horizon": horizon_url, "anchor": chains["ANCHOR_URL"], "pix": pix_url},
        )
        yield running
    finally:
        if running is not None:
            running.rest.close()
            for worker in running.workers:
                _stop(worker)
        if gateway is not None:
            gateway.stop()
        for process in (ramp, quote):
            _stop(process)
        for runner in (pix_runner, anchor_runner, node_runner, horizon_runner):
            aio_loop.run(runner.cleanup())
