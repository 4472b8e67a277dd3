"""`make demo`: one SELL and one BUY ramp end to end against `make run`'s stack, over REST.

Prints each phase as it happens with a progress bar, then the final balances. Needs the
stack up (`make run` in another terminal); every URL can be overridden by environment.
"""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal
from typing import Any

import httpx

from devnet.horizon.app import DEVNET_PASSPHRASE
from devnet.wallet import DevnetWallet
from pendulumpay_client import RampApiError, RampClient
from pendulumpay_client.journeys import Journey, deposit, fund_user, pay_pix, start_buy, start_sell
from ramp_service.domain.flows import BUY_V1, SELL_V1, Flow

GATEWAY = os.environ.get("DEMO_GATEWAY_URL", "http://127.0.0.1:8080")
SUBSTRATE = os.environ.get("DEMO_SUBSTRATE_URL", "http://127.0.0.1:9944/")
HORIZON = os.environ.get("DEMO_HORIZON_URL", "http://127.0.0.1:8000")
PIX = os.environ.get("DEMO_PIX_URL", "http://127.0.0.1:8002")
WIDTH = 30


def bar(flow: Flow, phase: str) -> str:
    """A progress bar over the flow's phases (cleanup counts as done)."""
    names = flow.names()
    done = names.index(phase) + 1 if phase in names else len(names)
    filled = WIDTH * done // len(names)
    return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{len(names)}"


def follow(rest: RampClient, journey: Journey, flow: Flow, label: str) -> dict[str, Any]:
    """Poll the ramp, printing every phase change, until it is terminal."""
    started = time.monotonic()

    def show(ramp: dict[str, Any]) -> None:
        elapsed = time.monotonic() - started
        print(
            f"  {label} {bar(flow, ramp['currentPhase'])} {ramp['currentPhase']:<20}"
            f" {ramp['status']:<14} +{elapsed:5.1f}s",
            flush=True,
        )

    return rest.wait(journey.id, timeout_s=300, interval_s=0.3, on_change=show)


def check_stack() -> None:
    """Fail with a clear message when `make run` is not up."""
    try:
        httpx.get(f"{GATEWAY}/healthz", timeout=3).raise_for_status()
        httpx.get(f"{HORIZON}/", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        sys.exit(f"the stack is not reachable ({exc}); start it with `make run` first")


def stellar_payments(account: str) -> list[dict[str, Any]]:
    """Payments an account sent (read from Horizon, also after the account merged away)."""
    answer = httpx.get(f"{HORIZON}/accounts/{account}/payments", timeout=5).json()
    return [p for p in answer["_embedded"]["records"] if p["from"] == account]


def main() -> int:
    """Run both corridors."""
    check_stack()
    wallet = DevnetWallet(SUBSTRATE, HORIZON, PIX)
    with RampClient(GATEWAY) as rest:
        try:
            print("SELL 100 USDC (Pendulum) -> EUR (SEPA)")
            sell = start_sell(rest, wallet, DEMO_PASSPHRASE, "100")
            print(
                f"  quote {sell.quote['id']}: 100 USDC -> {sell.quote['outputAmount']} EUR"
                f" (fees {sell.quote.get('fee', {}).get('total', '?')} USDC)"
            )
            print(f"  ramp {sell.id} started; the user's wallet sends the USDC")
            fund_user(wallet, sell)
            deposit(wallet, sell)
            sold = follow(rest, sell, SELL_V1, "SELL")

            print("BUY 500 BRL (PIX) -> USDC (AssetHub)")
            buy = start_buy(rest, wallet, DEMO_PASSPHRASE, "500")
            print(f"  quote {buy.quote['id']}: 500 BRL -> {buy.quote['outputAmount']} USDC")
            pix = buy.ramp["depositInstructions"]
            print(f"  PIX copy-and-paste: {pix['pixCopyPaste'][:48]}...")
            print(f"  payable until {pix['pixExpiresAt']}")
            pay_pix(wallet, buy)
            bought = follow(rest, buy, BUY_V1, "BUY ")
        except RampApiError as exc:
            print(f"request refused: {exc}", file=sys.stderr)
            return 1

        print("\nFinal balances")
        eph = sell.keys.stellar.public_key if sell.keys.stellar else ""
        to_anchor = sum(
            (Decimal(p["amount"]) for p in stellar_payments(eph) if p["type"] == "payment"),
            Decimal(0),
        )
        user_usdc = wallet.balance(sell.user.ss58_address, "USDC")
        print(f"  SELL {sold['status']}: user's wallet now holds {user_usdc} USDC;")
        print(f"       anchor received {to_anchor} EURC for the SEPA payout to {sell.destination}")
        received = wallet.assethub_balance(buy.destination, "USDC")
        print(f"  BUY  {bought['status']}: {buy.destination} holds {received} USDC on AssetHub")
        ok = sold["status"] == bought["status"] == "COMPLETE"
        return 0 if ok else 1


DEMO_PASSPHRASE = os.environ.get("DEMO_NETWORK_PASSPHRASE", DEVNET_PASSPHRASE)

if __name__ == "__main__":
    sys.exit(main())
