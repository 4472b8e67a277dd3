"""The Pendulum adapter against the Substrate stand-in: presign, verify, submit, find."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from substrateinterface import Keypair, KeypairType

from devnet.substrate.chain import Chain
from ramp_service.chains import pendulum as pendulum_module
from ramp_service.chains.errors import RecoverableError, UnrecoverableError
from ramp_service.chains.pendulum import IssuedCall, PendulumChain, _compact
from service_kit.errors import InvalidInput
from tests.integration.devnet.conftest import Node
from tests.support.aio import LoopThread


@pytest.fixture
def chain(node: Node) -> Iterator[PendulumChain]:
    adapter = PendulumChain(node.ws_url, timeout_s=10)
    yield adapter
    adapter.close()


def ephemeral(node: Node, uri: str) -> Keypair:
    keypair = Keypair.create_from_uri(uri, ss58_format=56)
    node.rpc("dev_mint", keypair.ss58_address, "PEN", "10")
    node.rpc("dev_mint", keypair.ss58_address, "USDC", "100")
    deadline = time.monotonic() + 5
    while not node.chain.tokens.get((bytes(keypair.public_key), "USDC")):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return keypair


ED25519 = Keypair.create_from_seed("0x" + "11" * 32, crypto_type=KeypairType.ED25519)


def sign(issued: IssuedCall, keypair: Keypair) -> str:
    return "0x" + keypair.sign(bytes.fromhex(issued.signing_payload_hex[2:])).hex()


def test_presigned_transfer_from_a_detached_signature(
    node: Node, chain: PendulumChain, aio_loop: LoopThread
) -> None:
    eph, dest = ephemeral(node, "//Eph1"), Keypair.create_from_uri("//Dest", ss58_format=56)
    issued = chain.issue(
        chain.token_transfer(dest.ss58_address, "USDC", Decimal("25.5")), eph.ss58_address, 0
    )
    signed = chain.assemble(issued, sign(issued, eph))
    assert chain.verify_presigned(issued, signed) == signed
    inclusion = aio_loop.run(chain.submit(signed))
    assert inclusion.success
    assert aio_loop.run(chain.balance(dest.ss58_address, "USDC")) == Decimal("25.5")
    assert aio_loop.run(chain.nonce(eph.ss58_address)) == 1
    # Register's freshness read (raw storage, byte layout) agrees with the runtime's decoding.
    pen = aio_loop.run(chain.balance(eph.ss58_address, "PEN"))
    assert Decimal(0) < pen < Decimal(10)  # minted 10, paid a fee
    assert aio_loop.run(chain.freshness(eph.ss58_address)) == (1, pen)
    assert aio_loop.run(chain.freshness(dest.ss58_address)) == (0, Decimal(0))
    by_hash = aio_loop.run(chain.find(inclusion.extrinsic_hash)).inclusion
    by_slot = aio_loop.run(chain.find("0x00", eph.ss58_address, 0)).inclusion
    assert by_hash is not None and by_slot is not None
    assert by_hash.extrinsic_hash == by_slot.extrinsic_hash == inclusion.extrinsic_hash
    with pytest.raises(RecoverableError) as banned:
        aio_loop.run(chain.submit(signed))  # replay: just included, the pool bans it a while
    assert banned.value.reason == "PENDULUM_TEMPORARILY_BANNED"
    stale = chain.assemble(issued, sign(issued, eph))  # the same slot, a new signature
    with pytest.raises(UnrecoverableError) as exc:
        aio_loop.run(chain.submit(stale))
    assert exc.value.reason == "PENDULUM_INVALID_TRANSACTION_IS_OUTDATED"


def test_pool_answers_are_classified_as_a_node_gives_them(
    node: Node, chain: PendulumChain, aio_loop: LoopThread
) -> None:
    """1013 (in the pool) and 1014 (its slot taken in the pool) are no reason to give up: the
    processor reconciles later; 1010 (invalid) is final."""
    eph = ephemeral(node, "//Eph6")
    dest = Keypair.create_from_uri("//Dest", ss58_format=56).ss58_address
    issued = chain.issue(chain.token_transfer(dest, "USDC", Decimal("1")), eph.ss58_address, 0)
    signed, rival = (chain.assemble(issued, sign(issued, eph)) for _ in range(2))
    node.rpc("dev_pauseBlocks")
    assert "result" in node.rpc("author_submitExtrinsic", signed)
    for payload, reason in (
        (signed, "PENDULUM_ALREADY_IMPORTED"),
        (rival, "PENDULUM_PRIORITY_TOO_LOW"),
    ):
        with pytest.raises(RecoverableError) as exc:
            aio_loop.run(chain.submit(payload))
        assert exc.value.reason == reason
    pauper = Keypair.create_from_uri("//Pauper6", ss58_format=56)
    poor = chain.issue(chain.token_transfer(dest, "USDC", Decimal("1")), pauper.ss58_address, 0)
    with pytest.raises(UnrecoverableError) as invalid:
        aio_loop.run(chain.submit(chain.assemble(poor, sign(poor, pauper))))
    assert invalid.value.reason.startswith("PENDULUM_INVALID_INABILITY_TO_PAY_SOME_FEES")


def test_verify_rejects_tampering(node: Node, chain: PendulumChain) -> None:
    eph, other = ephemeral(node, "//Eph2"), Keypair.create_from_uri("//Other", ss58_format=56)
    dest = Keypair.create_from_uri("//Dest", ss58_format=56).ss58_address
    issued = chain.issue(chain.token_transfer(dest, "USDC", Decimal("10")), eph.ss58_address, 0)

    def signed_variant(call: object, nonce: int = 0, keypair: Keypair = eph) -> str:
        variant = chain.issue(call, eph.ss58_address, nonce)
        return chain.assemble(variant, sign(variant, keypair))

    cases = {
        "another key": (chain.assemble(issued, sign(issued, other)), "PRESIGNED_TX_BAD_SIGNATURE"),
        "changed amount": (
            signed_variant(chain.token_transfer(dest, "USDC", Decimal("11"))),
            "PRESIGNED_TX_MISMATCH",
        ),
        "changed destination": (
            signed_variant(chain.token_transfer(other.ss58_address, "USDC", Decimal("10"))),
            "PRESIGNED_TX_MISMATCH",
        ),
        "changed call": (
            signed_variant(chain.swap_approve("USDC", Decimal("10"))),
            "PRESIGNED_TX_MISMATCH",
        ),
        "changed nonce": (
            signed_variant(chain.token_transfer(dest, "USDC", Decimal("10")), nonce=1),
            "PRESIGNED_TX_MISMATCH",
        ),
        "not an extrinsic": ("0xdeadbeef", "PRESIGNED_TX_MALFORMED"),
        # Bytes that are no sr25519 signature at all: the library raises on them.
        "a zero signature": (
            chain.assemble(issued, "0x" + "00" * 64),
            "PRESIGNED_TX_BAD_SIGNATURE",
        ),
        "an ed25519 signature": (
            chain.assemble(issued, "0x" + ED25519.sign(b"payload").hex()),
            "PRESIGNED_TX_BAD_SIGNATURE",
        ),
        # A wallet's signRaw signs <Bytes>payload</Bytes>; Keypair.verify accepts that, the
        # chain does not.
        "a signature of the wrapped payload": (
            chain.assemble(
                issued,
                "0x"
                + eph.sign(
                    b"<Bytes>" + bytes.fromhex(issued.signing_payload_hex[2:]) + b"</Bytes>"
                ).hex(),
            ),
            "PRESIGNED_TX_BAD_SIGNATURE",
        ),
    }
    for name, (signed, reason) in cases.items():
        with pytest.raises(InvalidInput) as exc:
            chain.verify_presigned(issued, signed)
        assert exc.value.reason == reason, name
    # What decodes and checks out field by field but is not the issued extrinsic: a tip (not
    # covered by the signature, which signs tip 0) or the Ed25519 type byte around the sr25519
    # signature. The chain would refuse both, after the ramp started.
    good = bytes.fromhex(chain.assemble(issued, sign(issued, eph)).removeprefix("0x"))
    at = {0: 1, 1: 2, 2: 4}[good[0] & 3]
    body = good[at:]
    signature_type = at + 1 + 33  # version byte, MultiAddress::Id
    era, nonce, tip = 1 + 33 + 65, 1 + 33 + 65 + 1, 1 + 33 + 65 + 2
    assert body[era] == 0 and body[nonce] == 0 and body[tip] == 0  # immortal, nonce 0, no tip
    tipped = body[:tip] + _compact(10**6) + body[tip + 1 :]
    ed25519 = bytearray(good)
    ed25519[signature_type] = 0
    # An ECDSA-typed signature (type 2, 65 bytes) decodes, and the library refuses its length.
    sig_at = signature_type - at + 1
    ecdsa = body[: signature_type - at] + b"\x02" + body[sig_at : sig_at + 64] + b"\x01"
    ecdsa += body[sig_at + 64 :]
    for name, forged, reason in (
        ("an ecdsa signature", _compact(len(ecdsa)) + ecdsa, "PRESIGNED_TX_BAD_SIGNATURE"),
        ("a tip", _compact(len(tipped)) + tipped, "PRESIGNED_TX_MISMATCH"),
        ("the ed25519 type byte", bytes(ed25519), "PRESIGNED_TX_MISMATCH"),
        ("trailing bytes", _compact(len(body) + 1) + body + b"\x00", "PRESIGNED_TX_MALFORMED"),
    ):
        with pytest.raises(InvalidInput) as exc:
            chain.verify_presigned(issued, "0x" + forged.hex())
        assert exc.value.reason == reason, name
    # Hex without 0x is accepted and handed on in the one spelling submit decodes.
    assert chain.verify_presigned(issued, good.hex()) == "0x" + good.hex()
    with pytest.raises(InvalidInput):
        chain.assemble(issued, "0x1234")
    with pytest.raises(InvalidInput):
        chain.assemble(issued, "0xnot-hex")
    assert chain._layout_ok is True  # the rejections above went through the byte fast path


def test_byte_layout_matches_scalecodec(node: Node, chain: PendulumChain) -> None:
    """The fast path builds extrinsics from bytes; they must equal scalecodec's for every
    compact width of the nonce and for mortal eras."""
    eph = Keypair.create_from_uri("//Layout", ss58_format=56)
    dest = Keypair.create_from_uri("//Dest", ss58_format=56).ss58_address
    call = chain.token_transfer(dest, "USDC", Decimal("1"))
    for nonce, era in ((0, None), (63, None), (64, None), (70_000, None), (2**31, None), (5, 64)):
        issued = chain.issue(call, eph.ss58_address, nonce, era_period=era)
        signature = bytes.fromhex(sign(issued, eph)[2:])
        assert "0x" + chain._framed(issued, signature).hex() == chain._assemble_scale(
            issued, signature
        ), (nonce, era)
        signed = chain.assemble(issued, "0x" + signature.hex())
        assert chain.verify_presigned(issued, signed) == signed
        if era is None:  # the byte-built signing payload equals substrate-interface's
            reference = chain._metadata_client().generate_signature_payload(
                call=call, era="00", nonce=nonce
            )
            assert (
                chain._immortal_payload(str(call.data), nonce) == "0x" + bytes(reference.data).hex()
            )
            assert issued.signing_payload_hex == "0x" + bytes(reference.data).hex()
    assert chain._payload_ok is True


def test_a_dropped_response_leaves_the_extrinsic_applied_and_findable(
    node: Node, chain: PendulumChain, aio_loop: LoopThread
) -> None:
    eph = ephemeral(node, "//Eph3")
    dest = Keypair.create_from_uri("//Dest", ss58_format=56).ss58_address
    issued = chain.issue(chain.token_transfer(dest, "USDC", Decimal("1")), eph.ss58_address, 0)
    signed = chain.assemble(issued, sign(issued, eph))
    httpx.post(f"{node.http_url}dev/faults", json={"drop_next": 1}, timeout=5)
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            node.http_url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "author_submitExtrinsic",
                "params": [signed],
            },
            timeout=5,
        )
    deadline = time.monotonic() + 5
    found = None
    while found is None:
        assert time.monotonic() < deadline, "the submitted extrinsic never showed up"
        found = aio_loop.run(chain.find("0x00", eph.ss58_address, 0)).inclusion
        time.sleep(0.1)
    assert found.success


def test_a_mortal_era_is_signed_checked_and_accepted(
    node: Node, chain: PendulumChain, aio_loop: LoopThread
) -> None:
    eph = ephemeral(node, "//Eph4")
    dest = Keypair.create_from_uri("//Dest", ss58_format=56).ss58_address
    issued = chain.issue(
        chain.token_transfer(dest, "USDC", Decimal("2")), eph.ss58_address, 0, era_period=64
    )
    assert issued.era is not None and issued.era["period"] == 64
    signed = chain.assemble(issued, sign(issued, eph))
    assert chain.verify_presigned(issued, signed) == signed
    immortal = chain.issue(chain.token_transfer(dest, "USDC", Decimal("2")), eph.ss58_address, 0)
    with pytest.raises(InvalidInput) as exc:
        chain.verify_presigned(immortal, signed)  # same call and nonce, other era
    assert exc.value.reason == "PRESIGNED_TX_MISMATCH"
    assert aio_loop.run(chain.submit(signed)).success


def test_a_signature_for_another_network_is_rejected(node: Node, chain: PendulumChain) -> None:
    eph = ephemeral(node, "//Eph5")
    dest = Keypair.create_from_uri("//Dest", ss58_format=56).ss58_address
    issued = chain.issue(chain.token_transfer(dest, "USDC", Decimal("2")), eph.ss58_address, 0)
    genesis = node.chain.genesis  # type: ignore[attr-defined]
    payload = bytes.fromhex(issued.signing_payload_hex[2:])
    assert genesis in payload
    other_network = payload.replace(genesis, bytes(32))  # the same transaction for another chain
    signed = chain.assemble(issued, "0x" + eph.sign(other_network).hex())
    with pytest.raises(InvalidInput) as exc:
        chain.verify_presigned(issued, signed)
    assert exc.value.reason == "PRESIGNED_TX_BAD_SIGNATURE"


def test_warm_up_loads_the_runtime_before_the_first_calls(
    node: Node, chain: PendulumChain, aio_loop: LoopThread
) -> None:
    chain.warm_up(3)
    loads = 0
    original = chain._initialized_client

    def counted() -> object:
        nonlocal loads
        loads += 1
        return original()

    chain._initialized_client = counted  # type: ignore[method-assign]

    async def three_at_once() -> list[int]:
        return list(await asyncio.gather(*(chain.head() for _ in range(3))))

    heads = aio_loop.run(three_at_once())
    assert all(h >= 0 for h in heads)
    assert loads == 0  # every concurrent call found a client with its runtime already loaded
    aio_loop.run(chain.head())
    assert loads == 0


class _HastyClock:
    """The `time` module as the scan sees it, its monotonic clock 20 ms on per reading."""

    def __init__(self) -> None:
        self._now = time.monotonic()

    def monotonic(self) -> float:
        self._now += 0.02
        return self._now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def test_finding_an_old_extrinsic_is_bounded(
    node: Node, chain: PendulumChain, aio_loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconciliation long after the intent (an operator's retry hours later) must neither
    scan every block since in one call nor leave the scan running past the call's deadline:
    an unused nonce answers at once, and a scan that runs out of time says so."""
    eph = ephemeral(node, "//Eph9")
    dest = Keypair.create_from_uri("//Dest", ss58_format=56).ss58_address
    issued = chain.issue(chain.token_transfer(dest, "USDC", Decimal("1")), eph.ss58_address, 0)
    intent = aio_loop.run(chain.head())  # the journal's since_block
    sent = aio_loop.run(chain.submit(chain.assemble(issued, sign(issued, eph))))
    devnet = node.chain
    assert isinstance(devnet, Chain)
    for _ in range(600):  # many blocks since the intent
        aio_loop.run(devnet.produce_block())
    hasty = PendulumChain(node.ws_url, timeout_s=0.5)
    try:
        hasty.warm_up(1)  # its client loaded outside the short deadline
        # Nonce 1 is unused: not in any block, known without reading one.
        unused = aio_loop.run(hasty.find("0x" + "ab" * 32, eph.ss58_address, 1, since_block=intent))
        assert (unused.inclusion, unused.applied_nonce) == (None, 1)
        # Nonce 0 is used: the blocks are read oldest first, where it landed.
        found = aio_loop.run(
            hasty.find(sent.extrinsic_hash, eph.ss58_address, 0, since_block=intent)
        ).inclusion
        assert found is not None and found.extrinsic_hash == sent.extrinsic_hash
        # Unknown hash, no nonce to go by: a scan of every block, stopped at the deadline. The
        # scan's clock runs 20 ms per reading here, so the deadline falls inside the 600 blocks
        # however fast this machine reads them (on a fast one the real scan beat 0.45 s).
        with monkeypatch.context() as patched:
            patched.setattr(pendulum_module, "time", _HastyClock())
            with pytest.raises(RecoverableError) as overdue:
                aio_loop.run(hasty.find("0x" + "cd" * 32, since_block=intent))
        assert overdue.value.reason == "PENDULUM_TIMEOUT"
        assert "took too long" in overdue.value.message  # the scan stopped, not the wait
        # The scan's client went back to the pool sound: the next call answers.
        assert aio_loop.run(hasty.head()) > intent + 600
    finally:
        hasty.close()
