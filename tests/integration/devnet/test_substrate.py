"""The real substrate-interface client against the Substrate stand-in."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from substrateinterface import Keypair, SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException

from tests.integration.devnet.conftest import Node

PEN = 10**12


def funded(node: Node, uri: str, pen: str = "100") -> Keypair:
    keypair = Keypair.create_from_uri(uri, ss58_format=56)
    assert node.rpc("dev_mint", keypair.ss58_address, "PEN", pen)["result"] is True
    deadline = time.monotonic() + 5
    while node.chain.native.get(bytes.fromhex(keypair.public_key.hex()), 0) == 0:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return keypair


def free(substrate: SubstrateInterface, address: str) -> int:
    return int(substrate.query("System", "Account", [address]).value["data"]["free"])


def transfer(
    substrate: SubstrateInterface,
    keypair: Keypair,
    dest: str,
    amount: int,
    nonce: int | None = None,
) -> object:
    call = substrate.compose_call(
        "Balances", "transfer_keep_alive", {"dest": dest, "value": amount}
    )
    return substrate.create_signed_extrinsic(call, keypair, nonce=nonce)


def test_the_client_connects_and_reads(node: Node) -> None:
    substrate = node.interface()
    assert substrate.chain == "Pendulum Devnet"  # type: ignore[attr-defined]
    assert substrate.ss58_format == 56  # type: ignore[attr-defined]
    alice = funded(node, "//Alice")
    assert free(substrate, alice.ss58_address) == 100 * PEN  # type: ignore[arg-type]
    assert substrate.get_account_nonce(alice.ss58_address) == 0  # type: ignore[attr-defined]


def test_transfers_with_nonces_0_1_2_in_order(node: Node) -> None:
    substrate: SubstrateInterface = node.interface()  # type: ignore[assignment]
    alice, bob = funded(node, "//Alice"), Keypair.create_from_uri("//Bob", ss58_format=56)
    receipts = [
        substrate.submit_extrinsic(
            transfer(substrate, alice, bob.ss58_address, PEN, nonce=n), wait_for_inclusion=True
        )
        for n in range(3)
    ]
    assert all(r.is_success for r in receipts)
    assert free(substrate, bob.ss58_address) == 3 * PEN
    assert substrate.get_account_nonce(alice.ss58_address) == 3


def test_the_node_rejects_what_a_node_rejects(node: Node) -> None:
    substrate: SubstrateInterface = node.interface()  # type: ignore[assignment]
    alice, mallory = funded(node, "//Alice"), funded(node, "//Mallory")
    bob = Keypair.create_from_uri("//Bob", ss58_format=56)
    good = transfer(substrate, alice, bob.ss58_address, PEN)
    forged = substrate.create_signed_extrinsic(
        substrate.compose_call(
            "Balances", "transfer_keep_alive", {"dest": bob.ss58_address, "value": PEN}
        ),
        alice,
        signature="0x" + mallory.sign(b"not the payload").hex(),
    )
    with pytest.raises(SubstrateRequestException) as exc:
        substrate.submit_extrinsic(forged)
    assert "bad signature" in str(exc.value)
    receipt = substrate.submit_extrinsic(good, wait_for_inclusion=True)
    assert receipt.is_success
    with pytest.raises(SubstrateRequestException) as exc:
        substrate.submit_extrinsic(good)  # replay: just included, so banned
    assert exc.value.args[0]["code"] == 1012
    with pytest.raises(SubstrateRequestException) as exc:
        substrate.submit_extrinsic(
            transfer(substrate, alice, bob.ss58_address, PEN, nonce=0)
        )  # stale nonce
    assert "outdated" in str(exc.value)
    broke = substrate.submit_extrinsic(
        transfer(substrate, alice, bob.ss58_address, 1000 * PEN), wait_for_inclusion=True
    )
    assert not broke.is_success  # included, failed, fee and nonce taken
    assert broke.error_message is not None
    assert substrate.get_account_nonce(alice.ss58_address) == 2
    pauper = Keypair.create_from_uri("//Pauper", ss58_format=56)
    with pytest.raises(SubstrateRequestException) as exc:
        substrate.submit_extrinsic(transfer(substrate, pauper, bob.ss58_address, 1))
    assert "Inability to pay some fees" in str(exc.value)


def test_the_pool_answers_with_a_nodes_error_codes(node: Node) -> None:
    """As substrate's author RPC answers: 1013 for an extrinsic already in the pool, 1014 for
    another one of the same signer and nonce, 1012 for one just included or found invalid (the
    pool bans both), 1010 with the reason for an invalid one."""
    substrate: SubstrateInterface = node.interface()  # type: ignore[assignment]
    alice, bob = funded(node, "//Alice"), Keypair.create_from_uri("//Bob", ss58_format=56)

    def code_of(extrinsic: object) -> tuple[int, str]:
        with pytest.raises(SubstrateRequestException) as exc:
            substrate.submit_extrinsic(extrinsic)  # type: ignore[arg-type]
        return exc.value.args[0]["code"], exc.value.args[0]["message"]

    assert node.rpc("dev_pauseBlocks")["result"] is True
    pending = transfer(substrate, alice, bob.ss58_address, PEN, nonce=0)
    substrate.submit_extrinsic(pending)
    assert code_of(pending) == (1013, "Transaction Already Imported")
    rival = transfer(substrate, alice, bob.ss58_address, 2 * PEN, nonce=0)
    assert code_of(rival)[0] == 1014
    assert "Priority is too low" in code_of(rival)[1]
    assert node.rpc("dev_resumeBlocks")["result"] is True
    deadline = time.monotonic() + 5
    while node.chain.ready:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert code_of(pending) == (1012, "Transaction is temporarily banned")
    pauper = Keypair.create_from_uri("//Pauper", ss58_format=56)
    broke = transfer(substrate, pauper, bob.ss58_address, 1)
    assert code_of(broke) == (1010, "Invalid Transaction")
    assert code_of(broke) == (1012, "Transaction is temporarily banned")  # until the ban ends


def test_a_future_nonce_waits_for_the_gap(node: Node) -> None:
    substrate: SubstrateInterface = node.interface()  # type: ignore[assignment]
    alice, bob = funded(node, "//Alice"), Keypair.create_from_uri("//Bob", ss58_format=56)
    substrate.submit_extrinsic(transfer(substrate, alice, bob.ss58_address, PEN, nonce=1))
    time.sleep(0.4)
    assert free(substrate, bob.ss58_address) == 0
    substrate.submit_extrinsic(
        transfer(substrate, alice, bob.ss58_address, PEN, nonce=0), wait_for_inclusion=True
    )
    time.sleep(0.3)
    assert free(substrate, bob.ss58_address) == 2 * PEN


def test_tokens_mint_and_paused_blocks(node: Node) -> None:
    substrate: SubstrateInterface = node.interface()  # type: ignore[assignment]
    alice = funded(node, "//Alice")
    assert node.rpc("dev_pauseBlocks")["result"] is True
    node.rpc("dev_mint", alice.ss58_address, "USDC", "250.5")
    time.sleep(0.4)
    assert substrate.query("Tokens", "Accounts", [alice.ss58_address, "USDC"]).value["free"] == 0
    node.rpc("dev_resumeBlocks")
    time.sleep(0.4)
    assert (
        substrate.query("Tokens", "Accounts", [alice.ss58_address, "USDC"]).value["free"]
        == 250_500_000
    )
    assert node.rpc("dev_mint", alice.ss58_address, "DOGE", "1")["error"]["code"] == -32602


def test_swap_follows_the_pool_formula(node: Node) -> None:
    substrate: SubstrateInterface = node.interface()  # type: ignore[assignment]
    alice = funded(node, "//Alice")
    node.rpc("dev_mint", alice.ss58_address, "USDC", "100")
    time.sleep(0.3)
    router = "0x" + bytes.fromhex("6d6f646c6e61626c61" + "00" * 23).hex()
    pool = node.chain.pools[("USDC", "EURC")]  # type: ignore[attr-defined]
    rin, rout, fee = Decimal(pool.reserve_in), Decimal(pool.reserve_out), pool.fee
    amount_in = 97_450_000  # 97.45 USDC
    expected = int(rout * (amount_in * (1 - fee)) / (rin + amount_in * (1 - fee)))
    for call in (
        substrate.compose_call(
            "Nabla", "approve", {"spender": router, "currency": "USDC", "amount": amount_in}
        ),
        substrate.compose_call(
            "Nabla",
            "swap_exact_tokens_for_tokens",
            {
                "amount_in": amount_in,
                "amount_out_min": expected,
                "path": ["USDC", "EURC"],
                "to": alice.ss58_address,
                "deadline": 10**9,
            },
        ),
    ):
        receipt = substrate.submit_extrinsic(
            substrate.create_signed_extrinsic(call, alice), wait_for_inclusion=True
        )
        assert receipt.is_success, receipt.error_message
    assert (
        substrate.query("Tokens", "Accounts", [alice.ss58_address, "EURC"]).value["free"]
        == expected
    )
    # The quote service's pricing predicts it: 97.45 USDC → EURC at 12 decimals.
    from quote_service.adapters.pricing_file import load_pricing

    _, pools = load_pricing()
    predicted = pools.output_for("USDC", "EURC", Decimal("97.45"))
    assert abs(Decimal(expected).scaleb(-12) - predicted) < Decimal("0.000001")
