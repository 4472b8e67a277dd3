"""Crash recovery with real processes: a worker SIGKILLs itself at a named crash point (each
phase boundary, after an intent is journaled, and between a chain call returning and its result
being recorded); a new worker takes the ramp over once the lease expires and finishes it. The
devnet then shows every transaction applied exactly once."""

from __future__ import annotations

import signal
from decimal import Decimal

from stellar_sdk import CreateAccount, TransactionEnvelope

from pendulumpay_client.journeys import Journey, deposit, fund_user, pay_pix, start_buy, start_sell
from tests.integration.e2e.conftest import System

SELL_POINTS = [
    "initial:advanced",
    "awaitUserDeposit:advanced",
    "fundEphemeral:fund_pen:intent",
    "fundEphemeral:fund_pen:sent",
    "fundEphemeral:create_account:intent",
    "fundEphemeral:create_account:sent",
    "fundEphemeral:setup:sent",
    "fundEphemeral:advanced",
    "nablaApprove:submit:intent",
    "nablaApprove:submit:sent",
    "nablaApprove:advanced",
    "nablaSwap:submit:sent",
    "nablaSwap:advanced",
    "spacewalkRedeem:submit:sent",
    "spacewalkRedeem:advanced",
    "stellarPayment:submit:intent",
    "stellarPayment:submit:sent",
    "stellarPayment:advanced",
    "stellarCleanup:submit:sent",
    "pendulumCleanup:submit:sent",
]
BUY_POINTS = [
    "brlaTeleport:advanced",
    "fundEphemeral:fund_pen:sent",
    "nablaSwap:submit:intent",
    "pendulumToAssethub:submit:sent",
    "pendulumToAssethub:advanced",
    "pendulumCleanup:submit:intent",
]


def crash_through(system: System, journey: Journey, points: list[str]) -> None:
    """One worker per crash point, each killed there; then a clean worker finishes."""
    for point in points:
        worker = system.start_worker(WORKER_CRASH_AT=point)
        try:
            code = worker.wait(timeout=60)
        except Exception as exc:
            raise AssertionError(
                f"worker never reached {point}: {system.rest.get(journey.id)}\n"
                f"{system.worker_logs()}"
            ) from exc
        assert code == -signal.SIGKILL, (point, code, system.worker_logs())
    system.start_worker()


def test_sell_survives_a_crash_at_every_point(system: System) -> None:
    sell = start_sell(system.rest, system.wallet, system.passphrase, "100")
    fund_user(system.wallet, sell)
    deposit(system.wallet, sell)
    crash_through(system, sell, SELL_POINTS)
    ramp = system.wait_settled(sell.id)
    assert ramp["status"] == "COMPLETE"
    history = [h["phase"] for h in ramp["phaseHistory"]]
    assert len(history) == len(set(history)), history  # no phase entered twice
    ephemeral = sell.keys.stellar.public_key  # type: ignore[union-attr]
    ledger = system.horizon_ledger
    # Exactly once on Stellar: one account creation, one setup, one payment, one merge.
    created = [
        t
        for t in ledger.transactions.values()
        if t["successful"]
        and any(
            isinstance(op, CreateAccount) and op.destination == ephemeral
            for op in TransactionEnvelope.from_xdr(
                str(t["envelope_xdr"]), system.passphrase
            ).transaction.operations
        )
    ]
    by_ephemeral = [t for t in ledger.transactions.values() if t["source_account"] == ephemeral]
    assert len(by_ephemeral) == 3  # setup, payment, merge: nothing sent twice, nothing failed
    paid = [p for p in ledger.payments if p["from"] == ephemeral and p["type"] == "payment"]
    merged = [p for p in ledger.payments if p["from"] == ephemeral and p["type"] == "account_merge"]
    assert (len(created), len(paid), len(merged)) == (1, 1, 1)
    assert Decimal(str(paid[0]["amount"])) == Decimal(sell.quote["outputAmount"])
    # Exactly once on Pendulum: four presigned extrinsics and one PEN funding transfer.
    address = sell.keys.pendulum.ss58_address
    assert system.wallet.balance(address, "PEN") == Decimal("0.96")
    assert system.wallet.balance(address, "USDC") == 0


def test_buy_survives_crashes(system: System) -> None:
    buy = start_buy(system.rest, system.wallet, system.passphrase, "500")
    pay_pix(system.wallet, buy)
    crash_through(system, buy, BUY_POINTS)
    ramp = system.wait_settled(buy.id)
    assert ramp["status"] == "COMPLETE"
    assert system.wallet.assethub_balance(buy.destination, "USDC") == Decimal(
        buy.quote["outputAmount"]
    )
    assert system.wallet.balance(buy.keys.pendulum.ss58_address, "PEN") == Decimal("0.96")
