"""`python -m devnet`: the local stand-ins on their ports until SIGTERM.

Horizon on DEVNET_HORIZON_PORT (8000), the anchor on DEVNET_ANCHOR_PORT (8001), the PIX partner
on DEVNET_PIX_PORT (8002), which mints BRLA through the Substrate node on DEVNET_SUBSTRATE_PORT
(9944), whose bridge redeems pay out on Horizon from the anchor's issuing account. The anchor's
issuing account and a Stellar funding account exist from genesis; their keys are written to
DEVNET_KEYS_FILE (default .data/devnet/keys.json, ignored by git) for the local services.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from decimal import Decimal
from pathlib import Path

from aiohttp import web
from stellar_sdk import Keypair
from substrateinterface import Keypair as SubstrateKeypair

from devnet.anchor.app import AnchorConfig
from devnet.anchor.app import create_app as create_anchor
from devnet.bridge import bridge_payout
from devnet.horizon.app import LEDGER_KEY, HorizonConfig
from devnet.horizon.app import create_app as create_horizon
from devnet.keys import load_or_create_keys
from devnet.pix.app import PixConfig
from devnet.pix.app import create_app as create_pix
from devnet.substrate.app import SubstrateConfig
from devnet.substrate.app import create_app as create_substrate
from service_kit.logs import configure_logging

log = logging.getLogger("devnet")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = {"horizon": "8000", "anchor": "8001", "pix": "8002", "substrate": "9944"}


def _keys(path: Path) -> dict[str, str]:
    """Reuse the keys of an earlier run so accounts stay the same across restarts."""
    return load_or_create_keys(path)


async def _site(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def main() -> None:
    """Serve every stand-in until a signal arrives."""
    host = os.environ.get("DEVNET_HOST", "127.0.0.1")
    ports = {
        name: int(os.environ.get(f"DEVNET_{name.upper()}_PORT", port))
        for name, port in DEFAULT_PORTS.items()
    }
    keys = _keys(Path(os.environ.get("DEVNET_KEYS_FILE", ROOT / ".data" / "devnet" / "keys.json")))
    anchor = Keypair.from_secret(keys["anchor"])
    funding = Keypair.from_secret(keys["stellar_funding"])
    horizon_url = f"http://{host}:{ports['horizon']}"
    genesis = {anchor.public_key: Decimal(10_000), funding.public_key: Decimal(1_000_000)}
    horizon = create_horizon(HorizonConfig(genesis=genesis))
    payout = bridge_payout(horizon[LEDGER_KEY], anchor)
    pendulum_funding = SubstrateKeypair.create_from_uri(keys["pendulum_funding"], ss58_format=56)
    substrate = create_substrate(
        SubstrateConfig(
            stellar_payout=payout,
            endowed={pendulum_funding.ss58_address: {"PEN": Decimal(1_000_000)}},
        )
    )
    runners = [
        await _site(horizon, host, ports["horizon"]),
        await _site(substrate, host, ports["substrate"]),
        await _site(
            create_anchor(AnchorConfig(horizon_url, anchor.public_key)), host, ports["anchor"]
        ),
        await _site(
            create_pix(PixConfig(f"http://{host}:{ports['substrate']}/")), host, ports["pix"]
        ),
    ]
    log.info(
        "devnet up",
        extra={
            "ports": ports,
            "anchor_account": anchor.public_key,
            "stellar_funding_account": funding.public_key,
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


if __name__ == "__main__":
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    asyncio.run(main())
