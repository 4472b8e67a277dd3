"""The Stellar adapter's presigned checks reject every kind of tampering, offline."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from stellar_sdk import Asset, Keypair, TransactionEnvelope

from ramp_service.chains.stellar import EPHEMERAL_START_SEQUENCE, StellarChain
from service_kit.errors import InvalidInput

NETWORK = "Pendulum Pay Devnet ; November 2026"
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
        "not-xdr",
        "not-base64",
    ],
)
def test_tampering_is_rejected(tampered: object, reason: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        CHAIN.verify_presigned(issued_payment(), tampered(), EPHEMERAL.public_key)  # type: ignore[operator]
    assert exc.value.reason == reason


def test_setup_is_valid_at_any_starting_sequence() -> None:
    setup = TransactionEnvelope.from_xdr(
        CHAIN.build_ephemeral_setup(EPHEMERAL.public_key, [EURC], UNTIL), NETWORK
    )
    assert setup.transaction.sequence == EPHEMERAL_START_SEQUENCE
    assert setup.transaction.preconditions.min_sequence_number == 0
