"""Stellar envelopes read by byte layout agree with stellar-sdk: where `stellar_bytes` answers,
it answers what the SDK answers; where it cannot tell, it says None and the SDK decides (the
tampered envelopes it declines: tests/unit/test_stellar_verify.py)."""

from __future__ import annotations

import base64
import hashlib
import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stellar_sdk import (
    Account,
    Asset,
    Keypair,
    MuxedAccount,
    TransactionBuilder,
    TransactionEnvelope,
)

from ramp_service.chains import stellar_bytes
from ramp_service.chains.stellar import StellarChain
from service_kit.errors import InvalidInput

NETWORK = "Pendulum Pay Devnet ; November 2026"
NETWORK_ID = hashlib.sha256(NETWORK.encode()).digest()
CHAIN = StellarChain("http://unused", NETWORK)
EPHEMERAL = Keypair.random()
OTHER = Keypair.random()
ANCHOR = Keypair.random().public_key
EURC = Asset("EURC", Keypair.random().public_key)
UNTIL = int(time.time()) + 86400


def issued_kinds() -> dict[str, str]:
    """One envelope of each kind register issues, and a muxed-source one."""
    muxed = TransactionBuilder(
        Account(MuxedAccount(EPHEMERAL.public_key, 7).account_muxed, 41), NETWORK, base_fee=100
    )
    muxed.add_time_bounds(0, UNTIL).append_payment_op(ANCHOR, EURC, "1.5")
    return {
        "setup": CHAIN.build_ephemeral_setup(EPHEMERAL.public_key, [EURC], UNTIL),
        "payment": CHAIN.build_payment(
            EPHEMERAL.public_key, 1, ANCHOR, EURC, Decimal("90.00"), "w-1", UNTIL
        ),
        "payment-no-memo": CHAIN.build_payment(
            EPHEMERAL.public_key, 1, ANCHOR, EURC, Decimal("90.00"), "", UNTIL
        ),
        "merge": CHAIN.build_merge(EPHEMERAL.public_key, 2, ANCHOR, [EURC], UNTIL),
        "create": CHAIN.build_create_ephemeral(
            Account(ANCHOR, 123456789), EPHEMERAL.public_key, Decimal("3"), UNTIL
        ),
        "muxed-source": muxed.build().to_xdr(),
    }


ISSUED = issued_kinds()


def sign(xdr: str, *keys: Keypair, network: str = NETWORK) -> str:
    envelope = TransactionEnvelope.from_xdr(xdr, network)
    for key in keys:
        envelope.sign(key)
    return envelope.to_xdr()


def sdk(issued: str, signed: str, signer: str = EPHEMERAL.public_key) -> str:
    """The SDK's verdict: the envelope to submit, or the reason code it refused with."""
    try:
        return CHAIN.verify_presigned_sdk(issued, signed, signer)
    except InvalidInput as exc:
        return exc.reason


@pytest.mark.parametrize("kind", sorted(ISSUED))
def test_sequence_agrees_with_the_sdk(kind: str) -> None:
    xdr = ISSUED[kind]
    expected = TransactionEnvelope.from_xdr(xdr, NETWORK).transaction.sequence
    raw = stellar_bytes.decode(xdr)
    assert raw is not None
    assert stellar_bytes.sequence(raw) == expected
    assert CHAIN.sequence_of(xdr) == expected


@pytest.mark.parametrize("kind", sorted(ISSUED))
@pytest.mark.parametrize(
    "keys",
    [(EPHEMERAL,), (OTHER, EPHEMERAL), (EPHEMERAL, OTHER)],
    ids=["alone", "second", "first"],
)
def test_a_signed_envelope_gives_what_the_sdk_gives(kind: str, keys: tuple[Keypair]) -> None:
    issued = ISSUED[kind]
    signed = sign(issued, *keys)
    fast = stellar_bytes.verified(NETWORK_ID, issued, signed, EPHEMERAL.public_key)
    assert fast is not None
    assert fast == sdk(issued, signed)
    assert len(TransactionEnvelope.from_xdr(fast, NETWORK).signatures) == 1


def test_the_signers_valid_signature_is_kept_after_a_bad_one_with_its_hint() -> None:
    issued = ISSUED["payment"]
    elsewhere = TransactionEnvelope.from_xdr(
        sign(issued, EPHEMERAL, network="Test SDF Network ; September 2015"), NETWORK
    )
    envelope = TransactionEnvelope.from_xdr(sign(issued, EPHEMERAL), NETWORK)
    envelope.signatures = elsewhere.signatures + envelope.signatures
    signed = envelope.to_xdr()
    fast = stellar_bytes.verified(NETWORK_ID, issued, signed, EPHEMERAL.public_key)
    assert fast is not None and fast == sdk(issued, signed)
    assert TransactionEnvelope.from_xdr(fast, NETWORK).signatures == envelope.signatures[1:]


def test_a_signer_that_is_not_an_account_id_is_left_to_the_sdk() -> None:
    issued = ISSUED["payment"]
    signed = sign(issued, EPHEMERAL)
    assert stellar_bytes.verified(NETWORK_ID, issued, signed, "GNOTANACCOUNT") is None


SIGNED = sign(ISSUED["payment"], OTHER, EPHEMERAL)
RAW = base64.b64decode(SIGNED)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(RAW) - 1), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(0, 8),
)
def test_a_damaged_envelope_is_never_accepted_where_the_sdk_refuses(
    flips: list[tuple[int, int]], cut: int
) -> None:
    """Bytes changed anywhere (the transaction, the list's length, a hint, a length word, a
    signature) and the tail cut: whatever the byte reader accepts, the SDK accepts the same."""
    damaged = bytearray(RAW)
    for at, value in flips:
        damaged[at] = value
    signed = base64.b64encode(bytes(damaged[: len(damaged) - cut])).decode()
    fast = stellar_bytes.verified(NETWORK_ID, ISSUED["payment"], signed, EPHEMERAL.public_key)
    if fast is not None:
        assert fast == sdk(ISSUED["payment"], signed)
