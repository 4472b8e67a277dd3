"""The real stellar_sdk client against the Horizon stand-in."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from stellar_sdk import Account, Asset, Keypair, TransactionBuilder
from stellar_sdk.exceptions import BadRequestError, NotFoundError, SdkError

from devnet.horizon.app import DEVNET_PASSPHRASE
from tests.integration.devnet.conftest import Horizon


def builder(account: Account) -> TransactionBuilder:
    return TransactionBuilder(account, DEVNET_PASSPHRASE, base_fee=100).set_timeout(60)


def codes(err: BadRequestError) -> dict[str, object]:
    return err.extras["result_codes"]  # type: ignore[no-any-return]


def balance(horizon: Horizon, account_id: str, code: str = "native") -> Decimal:
    data = horizon.server.accounts().account_id(account_id).call()
    for entry in data["balances"]:
        if (entry["asset_type"] == "native" and code == "native") or entry.get(
            "asset_code"
        ) == code:
            return Decimal(entry["balance"])
    raise KeyError(code)


def test_friendbot_and_an_ephemeral_with_a_known_sequence(horizon: Horizon) -> None:
    funder = horizon.fund()
    ephemeral = Keypair.random()
    known = 1 << 40
    source = horizon.server.load_account(funder.public_key)
    tx = (
        builder(source)
        .append_create_account_op(ephemeral.public_key, "10")
        .append_bump_sequence_op(known, source=ephemeral.public_key)
        .build()
    )
    tx.sign(funder)
    tx.sign(ephemeral)
    horizon.server.submit_transaction(tx)
    assert horizon.server.load_account(ephemeral.public_key).sequence == known
    # Presigned later transactions with the known sequence numbers, submitted afterwards.
    payee = horizon.fund()
    pay = (
        builder(Account(ephemeral.public_key, known))
        .append_payment_op(payee.public_key, Asset.native(), "2.5")
        .add_text_memo("order-7")
        .build()
    )
    merge = (
        builder(Account(ephemeral.public_key, known + 1))
        .append_account_merge_op(funder.public_key)
        .build()
    )
    pay.sign(ephemeral)
    merge.sign(ephemeral)
    before = balance(horizon, funder.public_key)
    result = horizon.server.submit_transaction(pay)
    assert result["successful"] is True and result["memo"] == "order-7"
    horizon.server.submit_transaction(merge)
    with pytest.raises(NotFoundError):
        horizon.server.load_account(ephemeral.public_key)
    assert balance(horizon, payee.public_key) == Decimal("1002.5")
    assert balance(horizon, funder.public_key) > before + Decimal("7")  # merged back
    assert horizon.server.transactions().transaction(pay.hash_hex()).call()["memo"] == "order-7"


def test_the_network_rejects_what_stellar_rejects(horizon: Horizon) -> None:
    alice = horizon.fund()
    bob = horizon.fund()
    account = horizon.server.load_account(alice.public_key)
    wrong_signer = builder(account).append_payment_op(bob.public_key, Asset.native(), "1").build()
    wrong_signer.sign(bob)
    with pytest.raises(BadRequestError) as exc:
        horizon.server.submit_transaction(wrong_signer)
    assert codes(exc.value) == {"transaction": "tx_bad_auth"}
    current = horizon.server.load_account(alice.public_key).sequence
    stale = (
        builder(Account(alice.public_key, current - 1))
        .append_payment_op(bob.public_key, Asset.native(), "1")
        .build()
    )
    stale.sign(alice)
    with pytest.raises(BadRequestError) as exc:
        horizon.server.submit_transaction(stale)
    assert codes(exc.value) == {"transaction": "tx_bad_seq"}
    ok = (
        builder(horizon.server.load_account(alice.public_key))
        .append_payment_op(bob.public_key, Asset.native(), "1")
        .build()
    )
    ok.sign(alice)
    horizon.server.submit_transaction(ok)
    with pytest.raises(BadRequestError) as exc:
        horizon.server.submit_transaction(ok)  # replay
    assert codes(exc.value) == {"transaction": "tx_bad_seq"}
    broke = (
        builder(horizon.server.load_account(alice.public_key))
        .append_payment_op(bob.public_key, Asset.native(), "5000")
        .build()
    )
    broke.sign(alice)
    with pytest.raises(BadRequestError) as exc:
        horizon.server.submit_transaction(broke)
    assert codes(exc.value) == {"transaction": "tx_failed", "operations": ["op_underfunded"]}
    # A failed transaction still consumed its sequence number and fee, as on Stellar.
    assert horizon.server.load_account(alice.public_key).sequence == broke.transaction.sequence


def test_issued_assets_need_trustlines(horizon: Horizon) -> None:
    issuer, holder = horizon.fund(), horizon.fund()
    eurc = Asset("EURC", issuer.public_key)
    untrusted = (
        builder(horizon.server.load_account(issuer.public_key))
        .append_payment_op(holder.public_key, eurc, "10")
        .build()
    )
    untrusted.sign(issuer)
    with pytest.raises(BadRequestError) as exc:
        horizon.server.submit_transaction(untrusted)
    assert codes(exc.value)["operations"] == ["op_no_trust"]
    trust = (
        builder(horizon.server.load_account(holder.public_key)).append_change_trust_op(eurc).build()
    )
    trust.sign(holder)
    horizon.server.submit_transaction(trust)
    pay = (
        builder(horizon.server.load_account(issuer.public_key))
        .append_payment_op(holder.public_key, eurc, "10")
        .build()
    )
    pay.sign(issuer)
    horizon.server.submit_transaction(pay)
    assert balance(horizon, holder.public_key, "EURC") == Decimal("10")


def test_a_dropped_response_leaves_the_transaction_applied(horizon: Horizon) -> None:
    alice, bob = horizon.fund(), horizon.fund()
    tx = (
        builder(horizon.server.load_account(alice.public_key))
        .append_payment_op(bob.public_key, Asset.native(), "3")
        .build()
    )
    tx.sign(alice)
    httpx.post(
        f"{horizon.url}/dev/faults", json={"drop_next": 1, "paths": ["/transactions"]}, timeout=5
    )
    with pytest.raises(SdkError):
        horizon.server.submit_transaction(tx)
    found = horizon.server.transactions().transaction(tx.hash_hex()).call()
    assert found["successful"] is True
    assert balance(horizon, bob.public_key) == Decimal("1003")


def test_fail_next_answers_5xx_without_applying(horizon: Horizon) -> None:
    # More failures than the SDK's own retries on 503, so the call really fails.
    alice, bob = horizon.fund(), horizon.fund()
    tx = (
        builder(horizon.server.load_account(alice.public_key))
        .append_payment_op(bob.public_key, Asset.native(), "1")
        .build()
    )
    tx.sign(alice)
    httpx.post(
        f"{horizon.url}/dev/faults",
        json={"fail_next": 20, "fail_status": 503, "paths": ["/transactions"]},
        timeout=5,
    )
    with pytest.raises(SdkError):
        horizon.server.submit_transaction(tx)
    httpx.delete(f"{horizon.url}/dev/faults", timeout=5)
    with pytest.raises(NotFoundError):
        horizon.server.transactions().transaction(tx.hash_hex()).call()
    horizon.server.submit_transaction(tx)  # the retry applies it once
    assert balance(horizon, bob.public_key) == Decimal("1001")


def test_ledgers_close_on_a_timer(horizon: Horizon) -> None:
    import time

    first = httpx.get(f"{horizon.url}/", timeout=5).json()["history_latest_ledger"]
    time.sleep(0.5)
    assert httpx.get(f"{horizon.url}/", timeout=5).json()["history_latest_ledger"] > first
