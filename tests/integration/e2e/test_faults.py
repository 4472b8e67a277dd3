"""Faults from the devnet knobs, with a real worker process: dropped responses, partner 5xx,
a paused chain, timeouts, a pool that moved below the soft minimum, a deposit that never
comes. Each ends in COMPLETE after recovery, or in MANUAL_REVIEW / timedOut with a clear
reason — never stuck without one, never backwards, never paying twice."""

from __future__ import annotations

import time
from decimal import Decimal

import grpc
import httpx

from pendulumpay.ramp.v1 import admin_pb2, admin_pb2_grpc
from pendulumpay_client.journeys import deposit, fund_user, pay_pix, start_buy, start_sell
from tests.integration.e2e.conftest import System


def reasons(system: System, ramp_id: str) -> set[str]:
    return {e["reason"] for e in system.rest.errors(ramp_id)}


def wait_phase(system: System, ramp_id: str, phases: set[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while system.rest.get(ramp_id)["currentPhase"] not in phases:
        assert time.monotonic() < deadline, (system.rest.get(ramp_id), system.worker_logs())
        time.sleep(0.1)


def test_dropped_horizon_responses_and_anchor_5xx_recover(system: System) -> None:
    sell = start_sell(system.rest, system.wallet, system.passphrase, "100")
    fund_user(system.wallet, sell)
    deposit(system.wallet, sell)
    # Horizon applies the next three submissions but the client never hears back; the anchor
    # answers its status endpoint with 503 four times.
    system.fault("horizon", drop_next=3, paths=["/transactions"])
    system.fault("anchor", fail_next=4, fail_status=503, paths=["/sep24/transaction"])
    system.start_worker()
    done = system.rest.wait(sell.id, timeout_s=120)
    assert done["status"] == "COMPLETE", (done, system.rest.errors(sell.id))
    seen = reasons(system, sell.id)
    assert "PARTNER_UNAVAILABLE" in seen and seen & {"HORIZON_UNREACHABLE", "HORIZON_ERROR"}
    ephemeral = sell.keys.stellar.public_key  # type: ignore[union-attr]
    ledger = system.horizon_ledger
    paid = [p for p in ledger.payments if p["from"] == ephemeral and p["type"] == "payment"]
    assert len(paid) == 1 and Decimal(str(paid[0]["amount"])) == Decimal(sell.quote["outputAmount"])


def test_paused_chain_and_pix_5xx_recover(system: System) -> None:
    buy = start_buy(system.rest, system.wallet, system.passphrase, "500")
    system.fault("pix", fail_next=3, fail_status=502, paths=["/v1/pix/deposits"])
    system.start_worker(CHAIN_TIMEOUT_S="1.5")
    pay_pix(system.wallet, buy)
    wait_phase(system, buy.id, {"nablaApprove", "nablaSwap"})
    system.rpc("dev_pauseBlocks")
    time.sleep(5)  # submissions time out while no block is produced
    system.rpc("dev_resumeBlocks")
    done = system.rest.wait(buy.id, timeout_s=120)
    assert done["status"] == "COMPLETE", (done, system.rest.errors(buy.id))
    seen = reasons(system, buy.id)
    assert "PENDULUM_TIMEOUT" in seen and "PARTNER_UNAVAILABLE" in seen, seen
    assert system.wallet.assethub_balance(buy.destination, "USDC") == Decimal(
        buy.quote["outputAmount"]
    )
    signer = system.chain.account_id(buy.keys.pendulum.ss58_address)
    deadline = time.monotonic() + 30
    while system.chain.nonces.get(signer) != 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert system.chain.nonces.get(signer) == 4


def test_slippage_goes_to_manual_review_and_an_operator_retry_completes(system: System) -> None:
    buy = start_buy(system.rest, system.wallet, system.passphrase, "500")
    pay_pix(system.wallet, buy)
    # The BRLA price fell 5%: the swap would give less than quoted, so it must not be sent.
    system.rpc("dev_setPool", "BRLA", "USDC", "5500000", "950000")
    system.start_worker(WORKER_MAX_ATTEMPTS="2")
    review = system.rest.wait(buy.id, timeout_s=60)
    assert (review["status"], review["currentPhase"]) == ("MANUAL_REVIEW", "nablaSwap")
    assert "SLIPPAGE_ABOVE_TOLERANCE" in reasons(system, buy.id)
    signer = system.chain.account_id(buy.keys.pendulum.ss58_address)
    assert system.chain.nonces.get(signer) == 1  # approved, never swapped
    system.rpc("dev_setPool", "BRLA", "USDC", "5500000", "1000000")
    with grpc.insecure_channel(system.ramp_target) as channel:
        admin_pb2_grpc.RampAdminServiceStub(channel).RetryRamp(
            admin_pb2.RetryRampRequest(ramp_id=buy.id, operator="alice", note="price recovered"),
            metadata=(("authorization", f"Bearer {system.admin_token}"),),
            timeout=10,
        )
    done = system.rest.wait(buy.id, timeout_s=60)
    assert done["status"] == "COMPLETE", (done, system.rest.errors(buy.id))
    assert system.wallet.assethub_balance(buy.destination, "USDC") == Decimal(
        buy.quote["outputAmount"]
    )


def test_a_deposit_or_pix_payment_that_never_comes_times_out_without_moving_funds(
    system: System,
) -> None:
    """...while a deposit that came in part is never timed out: the user's money is on the
    ephemeral, so the ramp goes to MANUAL_REVIEW for an operator. An unpaid PIX charge times
    the BUY out once the partner reports it expired (its clock is moved past the charge's
    PIX_PAYMENT_WINDOW_S), and can no longer be paid then."""
    sell = start_sell(system.rest, system.wallet, system.passphrase, "100")
    buy = start_buy(system.rest, system.wallet, system.passphrase, "500")  # PIX never paid
    partial = start_sell(system.rest, system.wallet, system.passphrase, "100")
    fund_user(system.wallet, partial)
    half = Decimal(partial.quote["inputAmount"]) / 2
    system.wallet.transfer(partial.user, partial.keys.pendulum.ss58_address, "USDC", half)
    httpx.post(f"{system.urls['pix']}/dev/clock", json={"advance_s": 3600}, timeout=5)
    system.start_worker(DEPOSIT_TIMEOUT_S="10")
    held = system.rest.wait(partial.id, timeout_s=60)
    assert (held["status"], held["currentPhase"]) == ("MANUAL_REVIEW", "awaitUserDeposit")
    errors = system.rest.errors(partial.id)
    assert any(e["message"].startswith("PARTIAL_USER_DEPOSIT") for e in errors), errors
    assert system.wallet.balance(partial.keys.pendulum.ss58_address, "USDC") == half
    done = system.rest.wait(sell.id, timeout_s=60)
    assert (done["status"], done["currentPhase"]) == ("TIMED_OUT", "timedOut")
    assert system.rest.errors(sell.id)[-1]["reason"] == "TIMED_OUT"
    unpaid = system.rest.wait(buy.id, timeout_s=60)
    assert (unpaid["status"], unpaid["currentPhase"]) == ("TIMED_OUT", "timedOut")
    assert system.rest.errors(buy.id)[0]["message"].startswith("PIX_EXPIRED")
    charge = buy.ramp["depositInstructions"]["pixDepositId"]
    late = httpx.post(f"{system.urls['pix']}/dev/pix/{charge}/pay", timeout=5)
    assert (late.status_code, late.json()) == (409, {"error": "deposit_expired"})
    assert system.wallet.balance(buy.keys.pendulum.ss58_address, "PEN") == 0
    assert sell.keys.stellar.public_key not in system.horizon_ledger.accounts  # type: ignore[union-attr]
    assert system.wallet.balance(sell.keys.pendulum.ss58_address, "PEN") == 0
