"""Three worker processes on fifty ramps: every ramp completes, no phase is entered twice, and
the devnet shows no duplicate submission (every ephemeral signed exactly its presigned
extrinsics, every funding transfer and account creation happened once per ramp)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
from substrateinterface import Keypair as SubstrateKeypair

from pendulumpay_client.journeys import Journey, pay_pix, start_buy, start_sell
from tests.integration.e2e.conftest import System

RAMPS = 50


def test_three_workers_fifty_ramps(system: System) -> None:
    def open_ramp(i: int) -> Journey:
        if i % 2 == 0:
            journey = start_sell(system.rest, system.wallet, system.passphrase, "50")
            # The user's deposit (the faucet pays the ephemeral directly here).
            system.wallet.mint(journey.keys.pendulum.ss58_address, "USDC", Decimal("50"))
        else:
            journey = start_buy(system.rest, system.wallet, system.passphrase, "300")
            pay_pix(system.wallet, journey)
        return journey

    with ThreadPoolExecutor(8) as pool:
        journeys = list(pool.map(open_ramp, range(RAMPS)))
    workers = [system.start_worker(WORKER_BATCH_SIZE="5") for _ in range(3)]
    url = system.worker_env["DATABASE_URL"].replace("+psycopg", "")
    deadline = time.monotonic() + 240
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            open_count = conn.execute(
                "SELECT count(*) FROM ramp.ramps WHERE status = 'RUNNING'"
                " OR (status = 'COMPLETE' AND cleanup_phase IS NOT NULL)"
            ).fetchone()
            if open_count is not None and open_count[0] == 0:
                break
            time.sleep(0.5)
        statuses = dict(
            conn.execute("SELECT status, count(*) FROM ramp.ramps GROUP BY status").fetchall()
        )
        assert statuses == {"COMPLETE": RAMPS}, (statuses, system.worker_logs())
        duplicates = conn.execute(
            "SELECT ramp_id, to_phase, status, count(*) FROM ramp.phase_events"
            " GROUP BY ramp_id, to_phase, status HAVING count(*) > 1"
        ).fetchall()
        assert duplicates == []
        # Work was shared: every worker process claimed ramps.
        owners = conn.execute(
            "SELECT count(DISTINCT split_part(actor, ':', 3)) FROM ramp.phase_events"
            " WHERE actor LIKE 'worker:%'"
        ).fetchone()
    assert all(w.poll() is None for w in workers)
    chain = system.chain
    for journey in journeys:
        signer = chain.account_id(journey.keys.pendulum.ss58_address)
        assert chain.nonces.get(signer) == 4, journey.id
        assert system.wallet.balance(journey.keys.pendulum.ss58_address, "PEN") == Decimal("0.96")
        if journey.keys.stellar is not None:
            sent = [
                t
                for t in system.horizon_ledger.transactions.values()
                if t["source_account"] == journey.keys.stellar.public_key
            ]
            assert len(sent) == 3
    funding = SubstrateKeypair.create_from_uri(
        system.worker_env["PENDULUM_FUNDING_SEED"], ss58_format=56
    )
    assert chain.nonces.get(chain.account_id(funding.ss58_address)) == RAMPS
    assert owners is not None and owners[0] >= 2
