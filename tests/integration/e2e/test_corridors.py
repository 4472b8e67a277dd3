"""Both corridors end to end through REST with a real worker process: quote → register → sign
→ start → the user's part → poll → COMPLETE, with devnet balances exactly as the quote said."""

from __future__ import annotations

from decimal import Decimal

from pendulumpay_client.journeys import deposit, fund_user, pay_pix, start_buy, start_sell
from ramp_service.domain.flows import SELL_V1
from tests.integration.e2e.conftest import System

FEE_PER_EXTRINSIC = Decimal("0.01")


def pendulum_extrinsics_by(system: System, address: str) -> int:
    """How many extrinsics `address` signed that were applied in blocks."""
    who = system.chain.account_id(address)
    return system.chain.nonces.get(who, 0)


def test_sell_and_buy_complete_with_the_quoted_amounts(system: System) -> None:
    system.start_worker()
    sell = start_sell(system.rest, system.wallet, system.passphrase, "100")
    buy = start_buy(system.rest, system.wallet, system.passphrase, "500")
    # The PIX charge comes with the start, as REST shows it: the code and until when to pay.
    pix = buy.ramp["depositInstructions"]
    assert pix["pixCopyPaste"].startswith("000201") and pix["pixExpiresAt"].endswith("Z")
    fund_user(system.wallet, sell)
    phases: list[str] = []
    deposit(system.wallet, sell)
    pay_pix(system.wallet, buy)
    done = system.rest.wait(
        sell.id, timeout_s=90, on_change=lambda r: phases.append(r["currentPhase"])
    )
    assert done["status"] == "COMPLETE", (done, system.rest.errors(sell.id), system.worker_logs())
    bought = system.rest.wait(buy.id, timeout_s=90)
    assert bought["status"] == "COMPLETE", (bought, system.rest.errors(buy.id))
    # Phases were seen in flow order and never went backwards.
    order = SELL_V1.names()
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases)
    history = [h["phase"] for h in done["phaseHistory"]]
    assert history[: len(order)] == order
    assert set(history[len(order) :]) <= {"stellarCleanup", "pendulumCleanup"}
    # The worker loaded the Pendulum runtime beside the processing, then froze its heap.
    logs = system.wait_worker_log('"msg": "start-up heap frozen"')
    assert "warm-up failed" not in logs, system.worker_logs()

    # SELL: the anchor was paid exactly the quoted output, once, with its memo.
    output = Decimal(sell.quote["outputAmount"])
    stellar_eph = sell.keys.stellar.public_key  # type: ignore[union-attr]
    to_anchor = [
        p
        for p in system.horizon_ledger.payments
        if p["from"] == stellar_eph and p["type"] == "payment"
    ]
    assert len(to_anchor) == 1 and Decimal(str(to_anchor[0]["amount"])) == output
    # BUY: AssetHub received exactly the quoted USDC.
    assert system.wallet.assethub_balance(buy.destination, "USDC") == Decimal(
        buy.quote["outputAmount"]
    )
    # Each Pendulum ephemeral signed exactly its four presigned extrinsics, was funded once,
    # and its swept fee reached the platform.
    for journey in (sell, buy):
        address = journey.keys.pendulum.ss58_address
        system.wait_settled(journey.id)
        assert pendulum_extrinsics_by(system, address) == 4
        assert system.wallet.balance(address, "PEN") == Decimal(1) - 4 * FEE_PER_EXTRINSIC
        token = "USDC" if journey is sell else "BRLA"
        assert system.wallet.balance(address, token) == 0
    # Post-complete cleanup merged the Stellar ephemeral back.
    assert stellar_eph not in system.horizon_ledger.accounts
