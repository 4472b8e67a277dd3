"""The Stellar adapter's presigned checks reject every kind of tampering, offline."""

from __future__ import annotations

import hashlib
import time
from decimal import Decimal

import pytest
from stellar_sdk import Asset, Keypair, TransactionEnvelope

from ramp_service.chains import stellar_bytes
from ramp_service.chains.stellar import EPHEMERAL_START_SEQUENCE, StellarChain
from service_kit.errors import InvalidInput

NETWORK = "Pendulum Pay Devnet ; November 2026"
NETWORK_ID = hashlib.sha256(NETWORK.encode()).digest()
CHAIN = StellarChain("http://unused", NETWORK)
EPHEMERAL = Keypair.random()
ANCHOR = Keypair.random().public_key
EURC = Asset("EURC", Keypair.random().public_key)
UNTIL = int(time.time()) + 86400


def issued_payment(
    amount: str = "90.00", destination: str = ANCHOR, memo: str = "w-1", offset: int = 1
) -> str:
    return CHAIN.build_payment(
        EPHEMERAL.public_key, offset, destination, EURC, Decimal(amount), memo, UNTIL
    )


def signed(xdr: str, keypair: Keypair = EPHEMERAL, network: str = NETWORK) -> str:
    envelope = TransactionEnvelope.from_xdr(xdr, network)
    envelope.sign(keypair)
    return envelope.to_xdr()


def test_the_issued_transaction_signed_by_the_ephemeral_passes() -> None:
    issued = issued_payment()
    result = CHAIN.verify_presigned(issued, signed(issued), EPHEMERAL.public_key)
    envelope = TransactionEnvelope.from_xdr(result, NETWORK)
    assert len(envelope.signatures) == 1
    assert envelope.transaction.sequence == EPHEMERAL_START_SEQUENCE + 1


def test_extra_signatures_are_dropped() -> None:
    issued = issued_payment()
    both = signed(signed(issued), Keypair.random())
    result = CHAIN.verify_presigned(issued, both, EPHEMERAL.public_key)
    assert len(TransactionEnvelope.from_xdr(result, NETWORK).signatures) == 1


@pytest.mark.parametrize(
    ("tampered", "reason"),
    [
        (lambda: signed(issued_payment(), Keypair.random()), "PRESIGNED_TX_BAD_SIGNATURE"),
        (
            lambda: signed(
                issued_payment(), network="Public Global Stellar Network ; September 2015"
            ),
            "PRESIGNED_TX_BAD_SIGNATURE",
        ),
        (lambda: signed(issued_payment(amount="900.00")), "PRESIGNED_TX_MISMATCH"),
        (
            lambda: signed(issued_payment(destination=Keypair.random().public_key)),
            "PRESIGNED_TX_MISMATCH",
        ),
        (lambda: signed(issued_payment(memo="w-2")), "PRESIGNED_TX_MISMATCH"),
        (lambda: signed(issued_payment(offset=2)), "PRESIGNED_TX_MISMATCH"),
        (
            lambda: TransactionEnvelope.from_xdr(issued_payment(), NETWORK).to_xdr(),
            "PRESIGNED_TX_BAD_SIGNATURE",
        ),
        (
            lambda: signed(CHAIN.build_merge(EPHEMERAL.public_key, 2, ANCHOR, [EURC], UNTIL)),
            "PRESIGNED_TX_MISMATCH",
        ),
        (lambda: signed(issued_payment())[:-8], "PRESIGNED_TX_MALFORMED"),
        (lambda: signed(issued_payment()) + "AAAA", "PRESIGNED_TX_MALFORMED"),
        (lambda: "bm90IHhkcg==", "PRESIGNED_TX_MALFORMED"),
        (lambda: "%%%", "PRESIGNED_TX_MALFORMED"),
    ],
    ids=[
        "other-key",
        "other-network",
        "amount",
        "destination",
        "memo",
        "sequence",
        "unsigned",
        "other-tx",
        "cut",
        "trailing",
        "not-xdr",
        "not-base64",
    ],
)
def test_tampering_is_rejected(tampered: object, reason: str) -> None:
    """Refused with its reason, and by stellar-sdk: the byte reader (stellar_bytes) declines
    every tampered envelope, so the reason is the SDK path's."""
    issued, envelope = issued_payment(), tampered()  # type: ignore[operator]
    assert stellar_bytes.verified(NETWORK_ID, issued, envelope, EPHEMERAL.public_key) is None
    with pytest.raises(InvalidInput) as exc:
        CHAIN.verify_presigned(issued, envelope, EPHEMERAL.public_key)
    assert exc.value.reason == reason


def test_setup_is_valid_at_any_starting_sequence() -> None:
    setup = TransactionEnvelope.from_xdr(
        CHAIN.build_ephemeral_setup(EPHEMERAL.public_key, [EURC], UNTIL), NETWORK
    )
    assert setup.transaction.sequence == EPHEMERAL_START_SEQUENCE
    assert setup.transaction.preconditions.min_sequence_number == 0
