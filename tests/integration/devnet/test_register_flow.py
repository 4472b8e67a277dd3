"""The client path of both corridors up to a RUNNING ramp, against the devnet: quote →
register → sign exactly as a browser would → start; and the rejections on the way."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import Decimal

import grpc
import httpx
import psycopg
import pytest
from scalecodec.base import ScaleBytes
from stellar_sdk import Keypair as StellarKeypair
from stellar_sdk import MuxedAccount, TextMemo, TransactionEnvelope
from substrateinterface import Keypair as SubstrateKeypair

from devnet.anchor.app import AnchorConfig
from devnet.anchor.app import create_app as create_anchor
from devnet.faults import FAULTS_KEY, FaultPlan
from devnet.pix.app import DEPOSITS, PixConfig
from devnet.pix.app import Deposit as PixDeposit
from devnet.pix.app import create_app as create_pix
from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from pendulumpay.ramp.v1 import admin_pb2, admin_pb2_grpc, ramp_pb2, ramp_pb2_grpc
from service_kit.grpc_server import RunningServer
from tests.integration.conftest import start_ramp_server
from tests.integration.devnet.conftest import Horizon, Node
from tests.support.aio import FakeClock, LoopThread
from tests.support.grpc_errors import failure
from tests.support.http_apps import serve
from tests.support.quotes import sell_register_request, sell_request
from tests.support.signing import sign_all


@dataclass
class Stack:
    quotes: quote_pb2_grpc.QuoteServiceStub
    ramps: ramp_pb2_grpc.RampServiceStub
    passphrase: str
    anchor_url: str
    pix_url: str
    pix_deposits: dict[str, PixDeposit]  # every charge the PIX partner holds, by id
    admin: admin_pb2_grpc.RampAdminServiceStub
    pix_faults: FaultPlan  # the PIX partner's armed faults, read directly


@pytest.fixture
def stack(
    horizon: Horizon,
    node: Node,
    quote_server: RunningServer,
    database_url: str,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> Iterator[Stack]:
    anchor_account, funding = horizon.fund(), horizon.fund()
    anchor_runner, anchor_port = aio_loop.run(
        serve(create_anchor(AnchorConfig(horizon.url, anchor_account.public_key)))
    )
    pix = create_pix(PixConfig(node.http_url, clock=clock))
    pix_runner, pix_port = aio_loop.run(serve(pix))
    ramp = start_ramp_server(
        aio_loop,
        database_url,
        quote_server.port,
        clock,
        horizon_url=horizon.url,
        stellar_network_passphrase=horizon.config.network_passphrase,
        substrate_url=node.ws_url,
        anchor_url=f"http://127.0.0.1:{anchor_port}",
        pix_url=f"http://127.0.0.1:{pix_port}",
        # Public addresses only, as the API is deployed: it never signs for the funding accounts.
        stellar_funding_account=funding.public_key,
        pendulum_funding_account=SubstrateKeypair.create_from_uri(
            "//Funding", ss58_format=56
        ).ss58_address,
    )
    with (
        grpc.insecure_channel(f"127.0.0.1:{quote_server.port}") as qc,
        grpc.insecure_channel(f"127.0.0.1:{ramp.port}") as rc,
    ):
        yield Stack(
            quote_pb2_grpc.QuoteServiceStub(qc),
            ramp_pb2_grpc.RampServiceStub(rc),
            horizon.config.network_passphrase,
            f"http://127.0.0.1:{anchor_port}",
            f"http://127.0.0.1:{pix_port}",
            pix[DEPOSITS],
            admin_pb2_grpc.RampAdminServiceStub(rc),
            pix[FAULTS_KEY],
        )
    aio_loop.run(ramp.stop(0))
    aio_loop.run(pix_runner.cleanup())
    aio_loop.run(anchor_runner.cleanup())


def ephemeral_pendulum() -> SubstrateKeypair:
    return SubstrateKeypair.create_from_uri(f"//eph-{uuid.uuid4().hex}", ss58_format=56)


def test_sell_corridor_register_sign_start(stack: Stack) -> None:
    quote = stack.quotes.CreateQuote(sell_request("100"), timeout=5)
    stellar, pendulum = StellarKeypair.random(), ephemeral_pendulum()
    request = sell_register_request(quote.id, stellar.public_key, pendulum.ss58_address)
    ramp = stack.ramps.RegisterRamp(request, timeout=30)
    assert ramp.status == ramp_pb2.Ramp.REGISTERED
    assert {(t.phase, t.network) for t in ramp.unsigned_txs} == {
        ("fundEphemeral", "stellar"),
        ("nablaApprove", "pendulum"),
        ("nablaSwap", "pendulum"),
        ("spacewalkRedeem", "pendulum"),
        ("stellarPayment", "stellar"),
        ("stellarCleanup", "stellar"),
        ("pendulumCleanup", "pendulum"),
    }
    assert (
        stack.quotes.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id)).status
        == quote_pb2.Quote.CONSUMED
    )
    presigned = sign_all(ramp, {"stellar": stellar, "pendulum": pendulum}, stack.passphrase)
    # A transaction signed by another key is refused, naming the reason.
    forged = list(presigned)
    forged[0] = ramp_pb2.PresignedTx(
        phase=presigned[0].phase,
        network=presigned[0].network,
        signer=presigned[0].signer,
        nonce=presigned[0].nonce,
        **(
            {"signature": "0x" + ephemeral_pendulum().sign(b"x").hex()}
            if presigned[0].network == "pendulum"
            else {
                "tx_data": sign_all(
                    ramp,
                    {"stellar": StellarKeypair.random(), "pendulum": pendulum},
                    stack.passphrase,
                )[0].tx_data
            }
        ),
    )
    with pytest.raises(grpc.RpcError) as exc:
        stack.ramps.StartRamp(
            ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=forged), timeout=30
        )
    assert failure(exc.value).reason in ("PRESIGNED_TX_BAD_SIGNATURE",)
    with pytest.raises(grpc.RpcError) as exc:
        stack.ramps.StartRamp(
            ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=presigned[1:]), timeout=30
        )
    assert failure(exc.value).reason == "PRESIGNED_TX_MISSING"
    started = stack.ramps.StartRamp(
        ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=presigned),
        metadata=(("idempotency-key", "sell-start"),),
        timeout=30,
    )
    assert started.status == ramp_pb2.Ramp.RUNNING
    # The same ephemerals cannot serve another ramp.
    again = stack.quotes.CreateQuote(sell_request("100"), timeout=5)
    request.quote_id = again.id
    with pytest.raises(grpc.RpcError) as exc:
        stack.ramps.RegisterRamp(request, timeout=30)
    assert failure(exc.value).reason == "EPHEMERAL_NOT_FRESH"


def buy_quote(stack: Stack) -> quote_pb2.Quote:
    return stack.quotes.CreateQuote(
        quote_pb2.CreateQuoteRequest(
            ramp_type=quote_pb2.BUY,
            from_network="pix",
            to_network="assethub",
            input_amount="500",
            input_currency="BRL",
            output_currency="USDC",
        ),
        timeout=5,
    )


def buy_register_request(
    quote_id: str, pendulum: SubstrateKeypair, destination: str
) -> ramp_pb2.RegisterRampRequest:
    return ramp_pb2.RegisterRampRequest(
        quote_id=quote_id,
        signing_accounts=[
            ramp_pb2.SigningAccount(network="pendulum", address=pendulum.ss58_address)
        ],
        additional_data=ramp_pb2.AdditionalData(
            wallet_address=destination, destination=destination, tax_id="529.982.247-25"
        ),
    )


def test_buy_corridor_register_sign_start(stack: Stack, clock: FakeClock) -> None:
    quote = buy_quote(stack)
    pendulum = ephemeral_pendulum()
    destination = ephemeral_pendulum().ss58_address

    def register(to: str) -> ramp_pb2.Ramp:
        return stack.ramps.RegisterRamp(
            buy_register_request(quote.id, pendulum, to),
            metadata=(("idempotency-key", f"buy-register-{to}"),),
            timeout=30,
        )

    # An AssetHub destination that is no account is refused before the quote is consumed.
    for bad in ("hello", "0x" + "ab" * 32):
        with pytest.raises(grpc.RpcError) as refused:
            register(bad)
        assert failure(refused.value).reason == "INVALID_RAMP_REQUEST", bad
    pending = stack.quotes.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id), timeout=5)
    assert pending.status == quote_pb2.Quote.PENDING
    ramp = register(destination)
    # No PIX charge before start: a ramp never started leaves nothing anyone could pay.
    assert ramp.deposit_instructions.pix_copy_paste == ""
    assert not ramp.deposit_instructions.HasField("pix_expires_at")
    assert ramp.deposit_instructions.amount == "500.00"
    assert stack.pix_deposits == {}
    # A repeated register (the same body, another idempotency key) makes none either.
    assert register(destination).id == ramp.id
    assert stack.pix_deposits == {}
    assert [t.phase for t in ramp.unsigned_txs] == [
        "nablaApprove",
        "nablaSwap",
        "pendulumToAssethub",
        "pendulumCleanup",
    ]
    presigned = sign_all(ramp, {"pendulum": pendulum}, stack.passphrase)
    started = stack.ramps.StartRamp(
        ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=presigned), timeout=30
    )
    assert started.status == ramp_pb2.Ramp.RUNNING
    assert Decimal(started.quote.output_amount) > 0
    (charge,) = stack.pix_deposits.values()
    instructions = started.deposit_instructions
    assert instructions.pix_copy_paste.startswith("000201")
    assert instructions.pix_deposit_id == charge.id
    assert charge.txid == uuid.UUID(ramp.id).hex and charge.destination == pendulum.ss58_address
    assert charge.amount == Decimal("500.00") and charge.tax_id == "529.982.247-25"
    # Payable for PIX_PAYMENT_WINDOW_S (an hour by default) from the start.
    assert charge.expires_at == clock.now + timedelta(hours=1)
    assert instructions.pix_expires_at.ToDatetime(tzinfo=UTC) == charge.expires_at
    # A repeated start answers the same charge and makes no other.
    clock.advance(seconds=30)
    again = stack.ramps.StartRamp(
        ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=presigned), timeout=30
    )
    assert again.deposit_instructions == instructions
    assert len(stack.pix_deposits) == 1


def registered_buy(stack: Stack) -> tuple[ramp_pb2.Ramp, list[ramp_pb2.PresignedTx]]:
    """A registered BUY ramp and its presigned transactions."""
    pendulum = ephemeral_pendulum()
    request = buy_register_request(buy_quote(stack).id, pendulum, ephemeral_pendulum().ss58_address)
    ramp = stack.ramps.RegisterRamp(request, timeout=30)
    return ramp, sign_all(ramp, {"pendulum": pendulum}, stack.passphrase)


def test_concurrent_starts_of_a_buy_ramp_open_one_pix_charge(stack: Stack) -> None:
    ramp, presigned = registered_buy(stack)
    barrier = threading.Barrier(16)

    def start(_: int) -> ramp_pb2.Ramp:
        barrier.wait()
        return stack.ramps.StartRamp(
            ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=presigned), timeout=60
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(start, range(16)))
    (charge,) = stack.pix_deposits.values()
    assert {a.status for a in answers} == {ramp_pb2.Ramp.RUNNING}
    assert {a.deposit_instructions.pix_deposit_id for a in answers} == {charge.id}


def test_a_start_cut_off_by_the_pix_partner_stores_nothing_and_its_retry_gets_one_charge(
    stack: Stack,
) -> None:
    """The partner refuses once (5xx: no charge), then makes the charge but its answer is lost:
    each start fails UNAVAILABLE with the ramp still REGISTERED; the retry gets that charge."""
    ramp, presigned = registered_buy(stack)
    request = ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=presigned)
    for fault in ({"fail_next": 1, "fail_status": 503}, {"drop_next": 1}):
        httpx.post(
            f"{stack.pix_url}/dev/faults", json={**fault, "paths": ["/v1/pix/deposits"]}, timeout=5
        ).raise_for_status()
        with pytest.raises(grpc.RpcError) as cut:
            stack.ramps.StartRamp(request, timeout=30)
        assert cut.value.code() is grpc.StatusCode.UNAVAILABLE
        assert failure(cut.value).reason == "CHAIN_UNAVAILABLE"
        stored = stack.ramps.GetRamp(ramp_pb2.GetRampRequest(id=ramp.id), timeout=5)
        assert stored.status == ramp_pb2.Ramp.REGISTERED
        assert stored.deposit_instructions.pix_deposit_id == ""
    (made,) = stack.pix_deposits.values()  # by the start whose answer was lost
    started = stack.ramps.StartRamp(request, timeout=30)
    assert started.status == ramp_pb2.Ramp.RUNNING
    assert started.deposit_instructions.pix_deposit_id == made.id
    assert len(stack.pix_deposits) == 1


def test_a_start_cut_off_by_the_database_gets_the_same_charge_on_retry(
    stack: Stack, database_url: str
) -> None:
    """The charge is made, then StartRamp's write fails: the retry gets that charge."""
    ramp, presigned = registered_buy(stack)
    request = ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=presigned)
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(REFUSE_STARTS)
        try:
            with pytest.raises(grpc.RpcError):
                stack.ramps.StartRamp(request, timeout=30)
        finally:
            conn.execute("DROP TRIGGER refuse_starts ON ramp.ramps")
    (made,) = stack.pix_deposits.values()
    stored = stack.ramps.GetRamp(ramp_pb2.GetRampRequest(id=ramp.id), timeout=5)
    assert stored.status == ramp_pb2.Ramp.REGISTERED
    started = stack.ramps.StartRamp(request, timeout=30)
    assert started.status == ramp_pb2.Ramp.RUNNING
    assert started.deposit_instructions.pix_deposit_id == made.id
    assert len(stack.pix_deposits) == 1


def test_a_start_losing_to_a_cancel_withdraws_the_charge_it_opened(stack: Stack) -> None:
    """An operator cancels the ramp while its start waits for the PIX partner: the charge the
    start opened was never shown to anyone (the start fails), so it is cancelled at once
    instead of staying payable for its whole window."""
    ramp, presigned = registered_buy(stack)
    request = ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=presigned)
    slow = {"delay_ms": 3000, "paths": ["/v1/pix/deposits"]}
    httpx.post(f"{stack.pix_url}/dev/faults", json=slow, timeout=5).raise_for_status()
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(stack.ramps.StartRamp, request, timeout=30)
        deadline = time.monotonic() + 10
        while stack.pix_faults.held == 0:  # until the start's charge request waits at the partner
            assert time.monotonic() < deadline, "the start never reached the PIX partner"
            time.sleep(0.01)
        cancel = admin_pb2.CancelRampRequest(ramp_id=ramp.id, operator="ops", note="user left")
        auth = (("authorization", "Bearer test-admin-token"),)
        cancelled = stack.admin.CancelRamp(cancel, metadata=auth, timeout=30)
        assert cancelled.status == ramp_pb2.Ramp.CANCELLED
        assert stack.pix_deposits == {}  # the start's charge is not made yet
        httpx.delete(f"{stack.pix_url}/dev/faults", timeout=5).raise_for_status()  # held: waits on
        with pytest.raises(grpc.RpcError) as lost:
            starting.result()
    assert failure(lost.value).reason == "RAMP_NOT_INITIAL"
    (charge,) = stack.pix_deposits.values()
    assert charge.txid == uuid.UUID(ramp.id).hex
    assert charge.status == "CANCELLED"


# The database refusing StartRamp's write (a fault placed exactly there).
REFUSE_STARTS = """
CREATE OR REPLACE FUNCTION ramp.refuse_starts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'injected: the database refuses starts' USING ERRCODE = '57P01';
END $$;
CREATE TRIGGER refuse_starts BEFORE UPDATE ON ramp.ramps FOR EACH ROW
    WHEN (NEW.status = 'RUNNING') EXECUTE FUNCTION ramp.refuse_starts();
"""


def cut_off_register(stack: Stack) -> tuple[quote_pb2.Quote, ramp_pb2.RegisterRampRequest]:
    """A SELL register the anchor refuses once, after the quote was consumed for the ramp: no
    ramp is stored. The quote and the request, for the client's retry."""
    quote = stack.quotes.CreateQuote(sell_request("100"), timeout=5)
    stellar, pendulum = StellarKeypair.random(), ephemeral_pendulum()
    request = sell_register_request(quote.id, stellar.public_key, pendulum.ss58_address)
    httpx.post(
        f"{stack.anchor_url}/dev/faults",
        json={"fail_next": 1, "fail_status": 400, "paths": ["/sep24/transactions/withdraw"]},
        timeout=5,
    ).raise_for_status()
    with pytest.raises(grpc.RpcError) as refused:
        stack.ramps.RegisterRamp(request, timeout=30)
    assert failure(refused.value).reason == "CHAIN_UNAVAILABLE"  # how register names it
    return quote, request


def test_a_register_cut_off_after_consuming_its_quote_can_be_retried(stack: Stack) -> None:
    """The anchor refuses once, after the quote was consumed for the ramp: no ramp is stored,
    and the client's retry with the same body completes the registration (the quote is not
    left consumed by no ramp)."""
    quote, request = cut_off_register(stack)
    consumed = stack.quotes.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id), timeout=5)
    assert consumed.status == quote_pb2.Quote.CONSUMED
    ramp = stack.ramps.RegisterRamp(request, timeout=30)
    assert ramp.status == ramp_pb2.Ramp.REGISTERED and ramp.quote_id == quote.id
    # Another body for the same quote is still refused: the quote now has its ramp.
    other = sell_register_request(
        quote.id, StellarKeypair.random().public_key, ephemeral_pendulum().ss58_address
    )
    with pytest.raises(grpc.RpcError) as taken:
        stack.ramps.RegisterRamp(other, timeout=30)
    assert failure(taken.value).reason == "QUOTE_CONSUMED"


def test_a_cut_off_register_cannot_be_retried_after_its_quote_expired(
    stack: Stack, clock: FakeClock
) -> None:
    """The retry that finishes a cut-off registration comes before the quote's expiry like any
    register: the consumed quote must not hold its price open to its ramp id for ever."""
    quote, request = cut_off_register(stack)
    clock.advance(minutes=10)  # the quote's TTL
    with pytest.raises(grpc.RpcError) as late:
        stack.ramps.RegisterRamp(request, timeout=30)
    assert late.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert failure(late.value).reason == "QUOTE_EXPIRED"
    assert (
        stack.quotes.GetQuote(quote_pb2.GetQuoteRequest(id=quote.id), timeout=5).status
        == quote_pb2.Quote.CONSUMED
    )


def test_racing_registers_on_one_quote_make_exactly_one_ramp(stack: Stack) -> None:
    quote = stack.quotes.CreateQuote(sell_request("100"), timeout=5)
    bodies = [
        sell_register_request(quote.id, StellarKeypair.random().public_key, p.ss58_address)
        for p in (ephemeral_pendulum(), ephemeral_pendulum())
    ]
    barrier = threading.Barrier(8)

    def register(i: int) -> tuple[int, str]:
        barrier.wait()
        try:
            return i % 2, stack.ramps.RegisterRamp(bodies[i % 2], timeout=60).id
        except grpc.RpcError as exc:
            return i % 2, failure(exc).reason

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(register, range(8)))
    ramp_ids = {r for _, r in results if not r.isupper()}
    assert len(ramp_ids) == 1, results
    winners = {body for body, r in results if r in ramp_ids}
    assert len(winners) == 1  # every call with the winning body got the same ramp
    assert all(r == "QUOTE_CONSUMED" for body, r in results if body not in winners), results
    listed = stack.ramps.ListRamps(
        ramp_pb2.ListRampsRequest(
            wallet_address=bodies[winners.pop()].additional_data.wallet_address
        ),
        timeout=5,
    )
    assert [r.id for r in listed.ramps] == list(ramp_ids)


def test_start_refuses_tampered_and_malformed_transactions(stack: Stack, node: Node) -> None:
    quote = stack.quotes.CreateQuote(sell_request("100"), timeout=5)
    stellar, pendulum = StellarKeypair.random(), ephemeral_pendulum()
    ramp = stack.ramps.RegisterRamp(
        sell_register_request(quote.id, stellar.public_key, pendulum.ss58_address), timeout=30
    )
    good = sign_all(ramp, {"stellar": stellar, "pendulum": pendulum}, stack.passphrase)
    index = {(t.phase, t.network): i for i, t in enumerate(good)}
    payment_at = index[("stellarPayment", "stellar")]

    def resigned(change: Callable[[TransactionEnvelope], None]) -> str:
        envelope = TransactionEnvelope.from_xdr(
            ramp.unsigned_txs[payment_at].tx_data, stack.passphrase
        )
        change(envelope)
        envelope.sign(stellar)
        return envelope.to_xdr()

    def set_amount(e: TransactionEnvelope) -> None:
        e.transaction.operations[0].amount = Decimal("999")  # type: ignore[attr-defined]

    def set_destination(e: TransactionEnvelope) -> None:
        e.transaction.operations[0].destination = MuxedAccount(StellarKeypair.random().public_key)  # type: ignore[attr-defined]

    def set_memo(e: TransactionEnvelope) -> None:
        e.transaction.memo = TextMemo("someone-else")

    def set_sequence(e: TransactionEnvelope) -> None:
        e.transaction.sequence += 1

    client = node.interface()
    client.init_runtime()  # type: ignore[attr-defined]
    swap_at = index[("nablaSwap", "pendulum")]
    call = client.runtime_config.create_scale_object(  # type: ignore[attr-defined]
        "Call",
        data=ScaleBytes(ramp.unsigned_txs[swap_at].meta["call"]),
        metadata=client.metadata,  # type: ignore[attr-defined]
    )
    call.decode()
    wrong_nonce = str(
        client.create_signed_extrinsic(
            call, pendulum, nonce=ramp.unsigned_txs[swap_at].nonce + 1
        ).data  # type: ignore[attr-defined]
    )
    cases: list[tuple[int, dict[str, str], str]] = [
        (payment_at, {"tx_data": resigned(set_amount)}, "PRESIGNED_TX_MISMATCH"),
        (payment_at, {"tx_data": resigned(set_destination)}, "PRESIGNED_TX_MISMATCH"),
        (payment_at, {"tx_data": resigned(set_memo)}, "PRESIGNED_TX_MISMATCH"),
        (payment_at, {"tx_data": resigned(set_sequence)}, "PRESIGNED_TX_MISMATCH"),
        (payment_at, {"tx_data": "not an envelope!"}, "PRESIGNED_TX_MALFORMED"),
        (swap_at, {"tx_data": wrong_nonce}, "PRESIGNED_TX_MISMATCH"),
        (swap_at, {"tx_data": "0xzz12"}, "PRESIGNED_TX_MALFORMED"),
        (swap_at, {"tx_data": "0x" + "00" * 40}, "PRESIGNED_TX_MALFORMED"),
        (swap_at, {"signature": "0x" + "ab" * 10}, "PRESIGNED_TX_MALFORMED"),
    ]
    for at, replacement, expected in cases:
        tampered = list(good)
        original = good[at]
        tampered[at] = ramp_pb2.PresignedTx(
            phase=original.phase,
            network=original.network,
            signer=original.signer,
            nonce=original.nonce,
            **replacement,
        )
        with pytest.raises(grpc.RpcError) as exc:
            stack.ramps.StartRamp(
                ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=tampered), timeout=30
            )
        assert failure(exc.value).reason == expected, (replacement, failure(exc.value))
    # A wrong nonce in the envelope's description is a request error naming the field.
    described = list(good)
    described[swap_at] = ramp_pb2.PresignedTx(
        phase=good[swap_at].phase,
        network="pendulum",
        signer=good[swap_at].signer,
        nonce=good[swap_at].nonce + 1,
        signature=good[swap_at].signature,
    )
    with pytest.raises(grpc.RpcError) as exc:
        stack.ramps.StartRamp(
            ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=described), timeout=30
        )
    assert failure(exc.value).reason == "INVALID_RAMP_REQUEST"
    # Nothing was lost: the untampered set still starts the ramp.
    started = stack.ramps.StartRamp(
        ramp_pb2.StartRampRequest(ramp_id=ramp.id, presigned_txs=good), timeout=30
    )
    assert started.status == ramp_pb2.Ramp.RUNNING


def test_racing_registers_with_one_ephemeral_pair_make_exactly_one_ramp(stack: Stack) -> None:
    """Different quotes, the same ephemerals: all pass the early in-use check together, and the
    unique address constraint lets one ramp through; the others are told the accounts are used."""
    stellar, pendulum = StellarKeypair.random(), ephemeral_pendulum()
    bodies = [
        sell_register_request(
            stack.quotes.CreateQuote(sell_request("100"), timeout=5).id,
            stellar.public_key,
            pendulum.ss58_address,
        )
        for _ in range(6)
    ]
    barrier = threading.Barrier(len(bodies))

    def register(body: ramp_pb2.RegisterRampRequest) -> str:
        barrier.wait()
        try:
            return ramp_pb2.Ramp.Status.Name(stack.ramps.RegisterRamp(body, timeout=60).status)
        except grpc.RpcError as exc:
            return failure(exc).reason

    with ThreadPoolExecutor(len(bodies)) as pool:
        results = sorted(pool.map(register, bodies))
    assert results == ["EPHEMERAL_NOT_FRESH"] * 5 + ["REGISTERED"], results


@pytest.mark.parametrize(
    ("mint", "why"),
    [
        ("PEN", "the account already holds PEN"),
        ("USDC", None),  # tokens other than PEN do not make an ephemeral used
    ],
)
def test_a_pendulum_ephemeral_holding_pen_is_not_fresh(
    stack: Stack, node: Node, mint: str, why: str | None
) -> None:
    pendulum = ephemeral_pendulum()
    node.rpc("dev_mint", pendulum.ss58_address, mint, "1")
    who, deadline = bytes(pendulum.public_key), time.monotonic() + 5
    while not (node.chain.native.get(who) or node.chain.tokens.get((who, mint))):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the mint was not applied"
        time.sleep(0.05)
    quote = stack.quotes.CreateQuote(sell_request("100"), timeout=5)
    request = sell_register_request(
        quote.id, StellarKeypair.random().public_key, pendulum.ss58_address
    )
    if why is None:
        assert stack.ramps.RegisterRamp(request, timeout=30).status == ramp_pb2.Ramp.REGISTERED
        return
    with pytest.raises(grpc.RpcError) as exc:
        stack.ramps.RegisterRamp(request, timeout=30)
    assert failure(exc.value).reason == "EPHEMERAL_NOT_FRESH" and why in failure(exc.value).message
