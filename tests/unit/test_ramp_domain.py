"""Ramp domain rules without I/O: flows, presigned sets, request validation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ramp_service.domain.flows import (
    BUY_V1,
    FIRST_AFTER_ABORT,
    FLOWS,
    SELL_V1,
    IllegalTransition,
    Network,
)
from ramp_service.domain.presigned import check_complete, match_presigned
from ramp_service.domain.ramp import (
    AdditionalData,
    IssuedTx,
    PresignedTx,
    QuoteSnapshot,
    check_additional_data,
    is_cbu,
    is_cpf_or_cnpj,
    is_iban,
    parse_signing_accounts,
    ramp_id_for_quote,
)
from ramp_service.service import RegisterCommand
from service_kit.errors import InvalidInput


def test_flows_follow_the_architecture() -> None:
    assert SELL_V1.names() == [
        "initial",
        "awaitUserDeposit",
        "fundEphemeral",
        "nablaApprove",
        "nablaSwap",
        "spacewalkRedeem",
        "stellarPayment",
        "complete",
    ]
    assert BUY_V1.names() == [
        "initial",
        "brlaTeleport",
        "fundEphemeral",
        "nablaApprove",
        "nablaSwap",
        "pendulumToAssethub",
        "complete",
    ]
    assert set(FLOWS) == {"sell-v1", "buy-v1"}


def test_follow_up_phases_by_how_the_ramp_ended() -> None:
    assert [p.name for p in SELL_V1.follow_ups("COMPLETE")] == ["stellarCleanup", "pendulumCleanup"]
    assert [p.name for p in BUY_V1.follow_ups("COMPLETE")] == ["pendulumCleanup"]
    # A SELL that ended before its deposit keeps its deposit address watched; a BUY has none (a
    # PIX charge is unpayable once the partner says EXPIRED/CANCELLED, or an operator withdrew
    # it, and its failures after the payment go to review, not `failed`).
    for status in ("TIMED_OUT", "FAILED", "CANCELLED"):
        assert [p.name for p in SELL_V1.follow_ups(status)] == ["watchLateDeposit"]
        assert BUY_V1.follow_ups(status) == ()
    for status in ("REGISTERED", "RUNNING", "MANUAL_REVIEW"):
        assert SELL_V1.follow_ups(status) == ()
    assert FIRST_AFTER_ABORT == {"sell-v1": "watchLateDeposit"}
    assert SELL_V1.spec("watchLateDeposit").presigned_on is None


def test_only_declared_transitions_are_legal() -> None:
    SELL_V1.check_transition("initial", "awaitUserDeposit")
    SELL_V1.check_transition("nablaSwap", "failed")
    SELL_V1.check_transition("awaitUserDeposit", "timedOut")
    BUY_V1.check_transition("brlaTeleport", "timedOut")
    for current, target in [
        ("nablaSwap", "nablaApprove"),  # backwards
        ("initial", "nablaSwap"),  # skipping
        ("nablaSwap", "timedOut"),  # a submitting phase cannot time out
        ("complete", "failed"),  # terminal phases never change
        ("failed", "initial"),
    ]:
        with pytest.raises(IllegalTransition):
            SELL_V1.check_transition(current, target)


def test_presigned_requirements_in_submit_order() -> None:
    assert SELL_V1.presigned_requirements() == [
        ("fundEphemeral", Network.STELLAR),
        ("nablaApprove", Network.PENDULUM),
        ("nablaSwap", Network.PENDULUM),
        ("spacewalkRedeem", Network.PENDULUM),
        ("stellarPayment", Network.STELLAR),
        ("stellarCleanup", Network.STELLAR),
        ("pendulumCleanup", Network.PENDULUM),
    ]
    assert [p for p, _ in BUY_V1.presigned_requirements()] == [
        "nablaApprove",
        "nablaSwap",
        "pendulumToAssethub",
        "pendulumCleanup",
    ]


ISSUED = [
    IssuedTx("nablaApprove", Network.PENDULUM, "5Eph", 0, "aa"),
    IssuedTx("nablaSwap", Network.PENDULUM, "5Eph", 1, "bb"),
    IssuedTx("stellarPayment", Network.STELLAR, "GEPH", 7, "cc"),
]


def test_presigned_pairs_with_what_was_issued() -> None:
    pairs = match_presigned(
        ISSUED, [PresignedTx("nablaSwap", "pendulum", "5Eph", 1, signature="ff")]
    )
    assert pairs[0][0].phase == "nablaSwap"


@pytest.mark.parametrize(
    ("tx", "field"),
    [
        (PresignedTx("extraPhase", "pendulum", "5Eph", 0, "aa"), "presigned_txs[0]"),
        (PresignedTx("nablaSwap", "stellar", "5Eph", 1, "aa"), "presigned_txs[0]"),
        (PresignedTx("nablaSwap", "pendulum", "5Other", 1, "aa"), "presigned_txs[0].signer"),
        (PresignedTx("nablaSwap", "pendulum", "5Eph", 2, "aa"), "presigned_txs[0].nonce"),
        (PresignedTx("nablaSwap", "pendulum", "5Eph", 1), "presigned_txs[0]"),
        (PresignedTx("nablaSwap", "pendulum", "5Eph", 1, "aa", "ff"), "presigned_txs[0]"),
        (
            PresignedTx("stellarPayment", "stellar", "GEPH", 7, signature="ff"),
            "presigned_txs[0].signature",
        ),
    ],
)
def test_presigned_mismatches_are_named(tx: PresignedTx, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        match_presigned(ISSUED, [tx])
    assert [v.field for v in exc.value.violations] == [field]


def test_duplicates_and_missing_phases() -> None:
    tx = PresignedTx("nablaSwap", "pendulum", "5Eph", 1, "aa")
    with pytest.raises(InvalidInput):
        match_presigned(ISSUED, [tx, tx])
    with pytest.raises(InvalidInput) as exc:
        check_complete(ISSUED, {("nablaSwap", "pendulum")})
    assert exc.value.reason == "PRESIGNED_TX_MISSING"
    assert "nablaApprove/pendulum" in exc.value.message
    check_complete(
        ISSUED,
        {("nablaApprove", "pendulum"), ("nablaSwap", "pendulum"), ("stellarPayment", "stellar")},
    )


def test_signing_accounts_per_ramp_type() -> None:
    parsed = parse_signing_accounts("SELL", [("stellar", "G1"), ("pendulum", "5P")])
    assert set(parsed) == {Network.STELLAR, Network.PENDULUM}
    with pytest.raises(InvalidInput) as exc:
        parse_signing_accounts("BUY", [("stellar", "G1"), ("pendulum", "5P"), ("pendulum", "5Q")])
    assert {v.field for v in exc.value.violations} == {
        "signing_accounts[0].network",
        "signing_accounts[2].network",
    }
    with pytest.raises(InvalidInput) as exc:
        parse_signing_accounts("SELL", [("pendulum", "5P")])
    assert exc.value.violations[0].field == "signing_accounts"


def quote(from_network: str, to_network: str) -> QuoteSnapshot:
    return QuoteSnapshot(
        uuid.uuid4(),
        "SELL",
        from_network,
        to_network,
        Decimal(100),
        "USDC",
        Decimal(90),
        "EUR",
        Decimal(1),
        "PENDING",
        datetime.now(UTC),
    )


def test_additional_data_per_corridor() -> None:
    check_additional_data(quote("pendulum", "sepa"), AdditionalData("5W", "DE89370400440532013000"))
    check_additional_data(quote("pendulum", "cbu"), AdditionalData("5W", "2850590940090418135201"))
    check_additional_data(quote("pix", "assethub"), AdditionalData("5W", "5Dest", "529.982.247-25"))
    with pytest.raises(InvalidInput) as exc:
        check_additional_data(
            quote("pendulum", "sepa"), AdditionalData("", "DE89370400440532013001")
        )
    assert {v.field for v in exc.value.violations} == {
        "additional_data.wallet_address",
        "additional_data.destination",
    }
    with pytest.raises(InvalidInput) as exc:
        check_additional_data(quote("pix", "assethub"), AdditionalData("5W", "5Dest", "123"))
    assert [v.field for v in exc.value.violations] == ["additional_data.tax_id"]


def test_bank_and_tax_identifiers() -> None:
    assert is_iban("GB82 WEST 1234 5698 7654 32") and not is_iban("DE89370400440532013001")
    assert is_cbu("2850590940090418135201") and not is_cbu("2850590940090418135202")
    assert is_cpf_or_cnpj("529.982.247-25") and is_cpf_or_cnpj("11.222.333/0001-81")
    assert not is_cpf_or_cnpj("529.982.247-24") and not is_cpf_or_cnpj("11111111111")
    # Letters and digits of other scripts pass str.isalnum/isdigit but are no identifiers
    # (int() refuses some of them, and the answer must be a field violation, not a crash).
    assert not is_iban("GB82 WEST 1234 5698 7654 32é")
    assert not is_iban("GB82 WEST 1234 5698 7654 3²")
    assert not is_cbu("285059094009041813520²")
    assert not is_cbu("285059094009041813520٣")
    assert not is_cpf_or_cnpj("529.982.247-2⁵") and not is_cpf_or_cnpj("529.982.247-2٥")


def test_ramp_id_is_derived_from_the_quote() -> None:
    quote_id = uuid.uuid4()
    assert ramp_id_for_quote(quote_id) == ramp_id_for_quote(quote_id)
    assert ramp_id_for_quote(quote_id) != ramp_id_for_quote(uuid.uuid4())


def test_a_register_repeated_with_the_quote_id_spelled_otherwise_is_the_same_register() -> None:
    """The ramp's id derives from the quote's UUID, whatever its spelling: the fingerprint a
    repeated register is recognised by must too (a retry in capitals met QUOTE_CONSUMED)."""
    quote_id = uuid.uuid4()
    data = AdditionalData("5Wallet", "DE89370400440532013000")
    accounts = [("stellar", "GA"), ("pendulum", "5P")]
    spellings = (str(quote_id), str(quote_id).upper(), "{" + str(quote_id) + "}", quote_id.hex)
    prints = {RegisterCommand(s, accounts, data).fingerprint() for s in spellings}
    assert len(prints) == 1
    assert RegisterCommand(str(uuid.uuid4()), accounts, data).fingerprint() not in prints
    assert RegisterCommand("not-a-uuid", accounts, data).fingerprint()  # refused later, not here
