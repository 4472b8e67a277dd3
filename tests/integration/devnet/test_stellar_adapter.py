"""The Stellar adapter against the Horizon stand-in: the SELL ramp's Stellar side, for real."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest
from stellar_sdk import Account, Asset, Keypair, TransactionBuilder, TransactionEnvelope

from ramp_service.chains.errors import RecoverableError, UnrecoverableError
from ramp_service.chains.stellar import EPHEMERAL_START_SEQUENCE, StellarChain
from tests.integration.devnet.conftest import Horizon
from tests.support.aio import LoopThread

UNTIL = int(time.time()) + 3600


def presign(chain: StellarChain, xdr: str, keypair: Keypair) -> str:
    envelope = TransactionEnvelope.from_xdr(xdr, chain.network_passphrase)
    envelope.sign(keypair)
    return chain.verify_presigned(xdr, envelope.to_xdr(), keypair.public_key)


def test_ephemeral_lifecycle_with_presigned_transactions(
    horizon: Horizon, aio_loop: LoopThread
) -> None:
    chain = StellarChain(horizon.url, horizon.config.network_passphrase, timeout_s=5)
    funding, issuer, anchor = horizon.fund(), horizon.fund(), horizon.fund()
    eurc = Asset("EURC", issuer.public_key)
    ephemeral = Keypair.random()
    # What register issues (and the browser signs) before the ephemeral exists:
    setup = presign(
        chain, chain.build_ephemeral_setup(ephemeral.public_key, [eurc], UNTIL), ephemeral
    )
    payment = presign(
        chain,
        chain.build_payment(
            ephemeral.public_key,
            1,
            anchor.public_key,
            eurc,
            Decimal("25.50"),
            "withdrawal-42",
            UNTIL,
        ),
        ephemeral,
    )
    merge = presign(
        chain,
        chain.build_merge(ephemeral.public_key, 2, funding.public_key, [eurc], UNTIL),
        ephemeral,
    )
    anchor_account = horizon.server.load_account(anchor.public_key)
    tx = (
        TransactionBuilder(anchor_account, chain.network_passphrase)
        .append_change_trust_op(eurc)
        .set_timeout(60)
        .build()
    )
    tx.sign(anchor)
    horizon.server.submit_transaction(tx)

    assert aio_loop.run(chain.account(ephemeral.public_key)) is None  # fresh
    state = aio_loop.run(chain.account(funding.public_key))
    assert state is not None
    create = chain.sign(
        chain.build_create_ephemeral(
            Account(funding.public_key, state.sequence), ephemeral.public_key, Decimal(5), UNTIL
        ),
        funding,
    )
    assert aio_loop.run(chain.submit(create)).successful
    assert aio_loop.run(chain.submit(setup)).successful
    assert aio_loop.run(chain.account(ephemeral.public_key)).sequence == EPHEMERAL_START_SEQUENCE  # type: ignore[union-attr]
    # The bridge pays EURC to the ephemeral (here: the issuer, as the redeem would).
    fund_tx = (
        TransactionBuilder(horizon.server.load_account(issuer.public_key), chain.network_passphrase)
        .append_payment_op(ephemeral.public_key, eurc, "25.50")
        .set_timeout(60)
        .build()
    )
    fund_tx.sign(issuer)
    horizon.server.submit_transaction(fund_tx)
    paid = aio_loop.run(chain.submit(payment))
    assert paid.successful
    found = aio_loop.run(chain.find(paid.hash))
    assert found is not None and found.hash == chain.tx_hash(payment)
    anchor_state = aio_loop.run(chain.account(anchor.public_key))
    assert anchor_state is not None and anchor_state.balances[
        f"EURC:{issuer.public_key}"
    ] == Decimal("25.5")
    assert aio_loop.run(chain.submit(merge)).successful
    assert aio_loop.run(chain.account(ephemeral.public_key)) is None
    aio_loop.run(chain.close())


def test_errors_are_classified(horizon: Horizon, aio_loop: LoopThread) -> None:
    chain = StellarChain(horizon.url, horizon.config.network_passphrase, timeout_s=2)
    funding = horizon.fund()
    state = aio_loop.run(chain.account(funding.public_key))
    assert state is not None
    create = chain.sign(
        chain.build_create_ephemeral(
            Account(funding.public_key, state.sequence),
            Keypair.random().public_key,
            Decimal(5),
            UNTIL,
        ),
        funding,
    )
    aio_loop.run(chain.submit(create))
    with pytest.raises(UnrecoverableError) as exc:
        aio_loop.run(chain.submit(create))  # replay: its sequence is used
    assert exc.value.reason == "TX_BAD_SEQ" and not exc.value.recoverable
    assert aio_loop.run(chain.find("00" * 32)) is None
    httpx.post(f"{horizon.url}/dev/faults", json={"fail_next": 5, "fail_status": 503}, timeout=5)
    with pytest.raises(RecoverableError):
        aio_loop.run(chain.account(funding.public_key))
    unreachable = StellarChain("http://127.0.0.1:1", horizon.config.network_passphrase, timeout_s=1)
    with pytest.raises(RecoverableError) as exc2:
        aio_loop.run(unreachable.find("00" * 32))
    assert exc2.value.recoverable
    aio_loop.run(chain.close())
    aio_loop.run(unreachable.close())
