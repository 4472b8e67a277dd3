"""RampService over real gRPC on real PostgreSQL: reads, start, update, idempotency, register
checks that come before any chain work."""

from __future__ import annotations

import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
import sqlalchemy
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from substrateinterface import Keypair
from substrateinterface.utils.ss58 import ss58_encode

from pendulumpay.quote.v1 import quote_pb2_grpc
from pendulumpay.ramp.v1 import admin_pb2, admin_pb2_grpc, ramp_pb2, ramp_pb2_grpc
from ramp_service.db.cleanup import time_out_unstarted
from ramp_service.db.models import RampErrorRow, RampRow
from ramp_service.domain.ramp import AdditionalData, RampRecord
from service_kit.grpc_server import RunningServer
from tests.integration.conftest import start_ramp_server
from tests.support.aio import FakeClock, LoopThread
from tests.support.grpc_errors import failure
from tests.support.processes import free_port
from tests.support.quotes import sell_request
from tests.support.ramps import buy_record, insert_registered, sell_record

Stub = ramp_pb2_grpc.RampServiceStub


def start(stub: Stub, ramp_id: object, key: str | None = None, wallet: str = "") -> ramp_pb2.Ramp:
    metadata = (("idempotency-key", key),) if key else ()
    request = ramp_pb2.StartRampRequest(
        ramp_id=str(ramp_id), additional_data=ramp_pb2.AdditionalData(wallet_address=wallet)
    )
    return stub.StartRamp(request, metadata=metadata, timeout=10)


def test_get_ramp_shows_what_register_stored(ramp_stub: Stub, registered: RampRecord) -> None:
    ramp = ramp_stub.GetRamp(ramp_pb2.GetRampRequest(id=str(registered.id)), timeout=5)
    assert ramp.status == ramp_pb2.Ramp.REGISTERED and ramp.current_phase == "initial"
    assert ramp.quote_id == str(registered.quote.id) and ramp.ramp_type == ramp_pb2.SELL
    assert ramp.quote.input_amount == "100.000000" and ramp.quote.output_amount == "90.00"
    assert [t.phase for t in ramp.unsigned_txs] and all(t.tx_data for t in ramp.unsigned_txs)
    assert ramp.deposit_instructions.network == "pendulum"
    assert [p.phase for p in ramp.phase_history] == ["initial"]
    assert ramp.flow_version == "sell-v1" and ramp.corridor == "SELL:pendulum:sepa:USDC:EUR"


@pytest.mark.parametrize(
    ("ramp_id", "code", "reason"),
    [
        (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND, "RAMP_NOT_FOUND"),
        ("nope", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RAMP_ID"),
    ],
)
def test_unknown_and_malformed_ids(
    ramp_stub: Stub, ramp_id: str, code: grpc.StatusCode, reason: str
) -> None:
    for call in (
        lambda: ramp_stub.GetRamp(ramp_pb2.GetRampRequest(id=ramp_id), timeout=5),
        lambda: ramp_stub.GetRampErrors(ramp_pb2.GetRampErrorsRequest(id=ramp_id), timeout=5),
        lambda: start(ramp_stub, ramp_id),
    ):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert (failure(exc.value).code, failure(exc.value).reason) == (code, reason)


def test_start_makes_the_ramp_running_once(ramp_stub: Stub, registered: RampRecord) -> None:
    started = start(ramp_stub, registered.id, wallet="5NewWallet")
    assert started.status == ramp_pb2.Ramp.RUNNING and started.current_phase == "initial"
    assert started.additional_data.wallet_address == "5NewWallet"
    again = start(ramp_stub, registered.id)
    assert again.status == ramp_pb2.Ramp.RUNNING  # same transactions: a no-op
    with pytest.raises(grpc.RpcError) as exc:
        ramp_stub.UpdateRamp(ramp_pb2.UpdateRampRequest(ramp_id=str(registered.id)), timeout=5)
    assert failure(exc.value).reason == "RAMP_NOT_INITIAL"


def test_start_after_the_deadline(
    ramp_stub: Stub, registered: RampRecord, clock: FakeClock
) -> None:
    clock.advance(minutes=15)
    with pytest.raises(grpc.RpcError) as exc:
        start(ramp_stub, registered.id)
    assert (failure(exc.value).code, failure(exc.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "START_DEADLINE_PASSED",
    )


def test_start_needs_every_presigned_transaction(
    ramp_stub: Stub,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    record = sell_record(clock.now)
    missing = dataclasses.replace(
        record,
        txs=tuple(
            dataclasses.replace(t, presigned_payload=None) if t.issued.phase == "nablaSwap" else t
            for t in record.txs
        ),
    )
    aio_loop.run(insert_registered(sessions, missing))
    with pytest.raises(grpc.RpcError) as exc:
        start(ramp_stub, record.id)
    err = failure(exc.value)
    assert err.reason == "PRESIGNED_TX_MISSING" and "nablaSwap/pendulum" in err.message
    extra = ramp_pb2.PresignedTx(
        phase="teleport", network="pendulum", signer="5X", nonce=9, tx_data="00"
    )
    with pytest.raises(grpc.RpcError) as exc:
        ramp_stub.StartRamp(
            ramp_pb2.StartRampRequest(ramp_id=str(record.id), presigned_txs=[extra]), timeout=5
        )
    assert failure(exc.value).fields == ["presigned_txs[0]"]


def test_a_pendulum_signature_checked_with_the_node_unreachable_is_chain_unavailable(
    quote_server: RunningServer,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Checking a Pendulum signature needs the runtime's metadata; a process that could not
    load it (no node at its start, none now) answers UNAVAILABLE/CHAIN_UNAVAILABLE, which a
    client retries, not INTERNAL."""
    nowhere = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    server = start_ramp_server(
        aio_loop, database_url, quote_server.port, clock, substrate_url=nowhere
    )
    made = sell_record(clock.now)
    signer = Keypair.create_from_uri("//Ephemeral", ss58_format=56).ss58_address
    record = dataclasses.replace(  # a swap issued as register issues it: a call, a real signer
        made,
        txs=tuple(
            dataclasses.replace(
                t,
                issued=dataclasses.replace(
                    t.issued, signer=signer, meta={**t.issued.meta, "call": "0x0000"}
                ),
            )
            if t.issued.phase == "nablaSwap"
            else t
            for t in made.txs
        ),
    )
    aio_loop.run(insert_registered(sessions, record))
    swap = next(t.issued for t in record.txs if t.issued.phase == "nablaSwap")
    presigned = ramp_pb2.PresignedTx(
        phase=swap.phase,
        network=swap.network.value,
        signer=swap.signer,
        nonce=swap.nonce,
        tx_data="0x1234",
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = ramp_pb2_grpc.RampServiceStub(channel)
            for call, request_type in (
                (stub.UpdateRamp, ramp_pb2.UpdateRampRequest),
                (stub.StartRamp, ramp_pb2.StartRampRequest),
            ):
                with pytest.raises(grpc.RpcError) as exc:
                    call(
                        request_type(ramp_id=str(record.id), presigned_txs=[presigned]), timeout=30
                    )
                assert (failure(exc.value).code, failure(exc.value).reason) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "CHAIN_UNAVAILABLE",
                ), exc.value.details()
    finally:
        aio_loop.run(server.stop(0))


@pytest.mark.parametrize(
    "key",
    [
        "start-key-1",  # the idempotency store lets one through
        None,  # no key: all sixteen race for the ramp row itself
    ],
)
def test_sixteen_concurrent_identical_starts_start_once(
    ramp_stub: Stub,
    registered: RampRecord,
    sessions: async_sessionmaker[AsyncSession],
    aio_loop: LoopThread,
    key: str | None,
) -> None:
    def attempt(_: int) -> object:
        try:
            return start(ramp_stub, registered.id, key=key).SerializeToString()
        except grpc.RpcError as err:
            return failure(err).reason

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    replies = {o for o in outcomes if isinstance(o, bytes)}
    assert len(replies) == 1, "every success is the same response, byte for byte"
    assert set(outcomes) - replies <= ({"IDEMPOTENCY_REQUEST_IN_PROGRESS"} if key else set())
    from sqlalchemy import func, select

    from ramp_service.db.models import PhaseEventRow

    async def starts() -> int:
        async with sessions.begin() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(PhaseEventRow)
                    .where(PhaseEventRow.ramp_id == registered.id, PhaseEventRow.note == "started")
                )
                or 0
            )

    assert aio_loop.run(starts()) == 1


def test_idempotent_replay_survives_a_restart_and_rejects_other_bodies(
    database_url: str,
    quote_server: RunningServer,
    ramp_server: RunningServer,
    ramp_stub: Stub,
    registered: RampRecord,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    first = start(ramp_stub, registered.id, key="k-restart")
    aio_loop.run(ramp_server.stop(0))
    restarted = start_ramp_server(aio_loop, database_url, quote_server.port, clock)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
            stub = ramp_pb2_grpc.RampServiceStub(channel)
            assert (
                start(stub, registered.id, key="k-restart").SerializeToString()
                == first.SerializeToString()
            )
            with pytest.raises(grpc.RpcError) as exc:
                start(stub, registered.id, key="k-restart", wallet="5Other")
            assert (failure(exc.value).code, failure(exc.value).reason) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "IDEMPOTENCY_KEY_REUSED",
            )
    finally:
        aio_loop.run(restarted.stop(0))


def test_history_is_paginated_newest_first(
    ramp_stub: Stub,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    ids = []
    for i in range(5):
        record = dataclasses.replace(sell_record(clock.now + timedelta(minutes=i)))
        aio_loop.run(insert_registered(sessions, record))
        ids.append(str(record.id))
    seen, token = [], ""
    while True:
        page = ramp_stub.ListRamps(
            ramp_pb2.ListRampsRequest(wallet_address="5Wallet", page_size=2, page_token=token),
            timeout=5,
        )
        seen += [r.id for r in page.ramps]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    with pytest.raises(grpc.RpcError) as exc:
        ramp_stub.ListRamps(
            ramp_pb2.ListRampsRequest(wallet_address="5Wallet", page_token="garbage"), timeout=5
        )
    assert failure(exc.value).reason == "INVALID_PAGE_TOKEN"
    assert not ramp_stub.ListRamps(
        ramp_pb2.ListRampsRequest(wallet_address="5Nobody"), timeout=5
    ).ramps


def test_readers_see_the_user_s_tax_id_and_bank_account_masked(
    ramp_stub: Stub,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Anyone can ask for any wallet's history (its address is public and proves nothing about
    the caller), and it names each ramp's id: the history and GetRamp show the tax id and the
    destination to their last characters only, the history no PIX charge code. The answers to
    register, update and start (to the caller who sent the data) show them whole."""
    sell = dataclasses.replace(
        sell_record(clock.now),
        additional_data=AdditionalData("5History", "DE89370400440532013000"),
    )
    record = dataclasses.replace(
        buy_record(clock.now + timedelta(minutes=1), f"5{uuid.uuid4().hex}", {}),
        additional_data=AdditionalData("5History", "5DestinationOnAssetHub", "529.982.247-25"),
    )
    for ramp in (sell, record):
        aio_loop.run(insert_registered(sessions, ramp))

    async def with_charge() -> None:
        async with sessions.begin() as session:
            await session.execute(
                update(RampRow)
                .where(RampRow.id == record.id)
                .values(partner_data={"pix_copy_paste": "00020126BR.GOV.BCB.PIX"})
            )

    aio_loop.run(with_charge())
    listed_buy, listed_sell = ramp_stub.ListRamps(
        ramp_pb2.ListRampsRequest(wallet_address="5History"), timeout=5
    ).ramps
    assert listed_sell.additional_data.destination == "*" * 18 + "3000"
    assert listed_buy.additional_data.destination == "*" * 18 + "tHub"
    assert listed_buy.additional_data.tax_id == "*" * 12 + "25"
    assert listed_buy.additional_data.wallet_address == "5History"
    assert listed_buy.deposit_instructions.pix_copy_paste == ""
    assert listed_buy.deposit_instructions.amount  # the rest of the instructions stays
    polled = ramp_stub.GetRamp(ramp_pb2.GetRampRequest(id=str(record.id)), timeout=5)
    assert polled.additional_data.destination == "*" * 18 + "tHub"
    assert polled.additional_data.tax_id == "*" * 12 + "25"
    assert polled.deposit_instructions.pix_copy_paste == "00020126BR.GOV.BCB.PIX"  # the payer's
    # The data as sent, in the answer to the caller who sent it.
    same = ramp_pb2.AdditionalData(destination="DE89370400440532013000")
    updated = ramp_stub.UpdateRamp(
        ramp_pb2.UpdateRampRequest(ramp_id=str(sell.id), additional_data=same), timeout=5
    )
    assert updated.additional_data.destination == "DE89370400440532013000"


async def add_errors(
    sessions: async_sessionmaker[AsyncSession],
    ramp_id: uuid.UUID,
    reasons: tuple[str, ...],
    message: str,
    clock: FakeClock,
) -> None:
    """Recorded errors of `ramp_id`, one a second from now, in the order given."""
    async with sessions.begin() as session:
        for i, reason in enumerate(reasons):
            session.add(
                RampErrorRow(
                    ramp_id=ramp_id,
                    phase="fundEphemeral",
                    reason=reason,
                    message=message,
                    recoverable=True,
                    created_at=clock.now + timedelta(seconds=i),
                )
            )


def test_errors_newest_first(
    ramp_stub: Stub,
    registered: RampRecord,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    aio_loop.run(add_errors(sessions, registered.id, ("HORIZON_5XX", "NOT_YET"), "m", clock))
    errors = ramp_stub.GetRampErrors(
        ramp_pb2.GetRampErrorsRequest(id=str(registered.id)), timeout=5
    ).errors
    assert [e.reason for e in errors] == ["NOT_YET", "HORIZON_5XX"]
    assert (
        ramp_stub.GetRamp(
            ramp_pb2.GetRampRequest(id=str(registered.id)), timeout=5
        ).last_error.reason
        == "NOT_YET"
    )


def test_the_public_errors_show_no_internals_of_our_own_failures(
    ramp_stub: Stub,
    registered: RampRecord,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """An exception's text from our own code (a processor or handler bug) is for operators:
    the unauthenticated errors endpoint and GetRamp show its reason and a fixed message."""
    internals = "KeyError: 'anchor_token' at /srv/ramp_service/worker/engine.py"

    reasons = ("HANDLER_ERROR", "PROCESSOR_ERROR")
    aio_loop.run(add_errors(sessions, registered.id, reasons, internals, clock))
    errors = ramp_stub.GetRampErrors(
        ramp_pb2.GetRampErrorsRequest(id=str(registered.id)), timeout=5
    ).errors
    assert [e.reason for e in errors] == ["PROCESSOR_ERROR", "HANDLER_ERROR"]
    assert all("anchor_token" not in e.message and e.message for e in errors)
    last = ramp_stub.GetRamp(ramp_pb2.GetRampRequest(id=str(registered.id)), timeout=5).last_error
    assert last.reason == "PROCESSOR_ERROR" and "anchor_token" not in last.message


def register_request(quote_id: str) -> ramp_pb2.RegisterRampRequest:
    return ramp_pb2.RegisterRampRequest(
        quote_id=quote_id,
        signing_accounts=[
            ramp_pb2.SigningAccount(
                network="stellar",
                address="GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7",
            ),
            ramp_pb2.SigningAccount(
                network="pendulum", address="6ftBYTotU4mmCuvUqJvk6qEP7uCzzz771pTMoxcbHFb9rcPv"
            ),
        ],
        additional_data=ramp_pb2.AdditionalData(
            wallet_address="6ftBYTotU4mmCuvUqJvk6qEP7uCzzz771pTMoxcbHFb9rcPv",
            destination="DE89370400440532013000",
        ),
    )


def test_register_rejections_before_any_chain_work(
    ramp_stub: Stub, quote_server: RunningServer, clock: FakeClock
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{quote_server.port}") as channel:
        quotes = quote_pb2_grpc.QuoteServiceStub(channel)
        quote = quotes.CreateQuote(
            sell_request(),
            timeout=5,
        )
    cases = [
        (register_request("not-a-uuid"), "INVALID_QUOTE_ID"),
        (register_request(str(uuid.uuid4())), "QUOTE_NOT_FOUND"),
    ]
    bad_accounts = register_request(quote.id)
    bad_accounts.signing_accounts[0].address = "GNOTAKEY"
    bad_accounts.signing_accounts[1].address = "5NotSS58"
    cases.append((bad_accounts, "INVALID_RAMP_REQUEST"))
    bad_iban = register_request(quote.id)
    bad_iban.additional_data.destination = "DE00000000000000000000"
    cases.append((bad_iban, "INVALID_RAMP_REQUEST"))
    # Pendulum ephemerals: only Pendulum's SS58 format, one spelling per key. Hex passes
    # ss58_decode unchecked, and another format of the same key would dodge the uniqueness.
    key = Keypair.create_from_uri("//Probe", ss58_format=56)
    for spelling in ("0x" + key.public_key.hex(), "0xzz", ss58_encode(key.public_key, 0)):
        other_format = register_request(quote.id)
        other_format.signing_accounts[1].address = spelling
        cases.append((other_format, "INVALID_RAMP_REQUEST"))
    # Text a database column cannot hold, or an index row cannot: refused up front.
    for field in ("wallet_address", "destination", "tax_id"):
        with_nul = register_request(quote.id)
        setattr(with_nul.additional_data, field, "DE89\x00370400440532013000")
        cases.append((with_nul, "INVALID_TEXT"))
    huge = register_request(quote.id)
    huge.additional_data.wallet_address = "6" * 5000
    cases.append((huge, "INVALID_RAMP_REQUEST"))
    for request, reason in cases:
        with pytest.raises(grpc.RpcError) as exc:
            ramp_stub.RegisterRamp(request, timeout=10)
        assert failure(exc.value).reason == reason, request
    # An address of 60,000 characters is refused for its length, before base58 decodes it
    # (in time quadratic in its length: over a second of the event loop).
    long_address = register_request(quote.id)
    long_address.signing_accounts[1].address = "5" + "z" * 60_000
    with pytest.raises(grpc.RpcError) as exc:
        ramp_stub.RegisterRamp(long_address, timeout=10)
    assert failure(exc.value).reason == "INVALID_RAMP_REQUEST"
    refused = failure(exc.value)
    assert (refused.fields, refused.descriptions) == (
        ["signing_accounts[1].address"],
        ["at most 256 characters"],
    )
    clock.advance(minutes=11)
    with pytest.raises(grpc.RpcError) as exc:
        ramp_stub.RegisterRamp(register_request(quote.id), timeout=10)
    assert (failure(exc.value).code, failure(exc.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "QUOTE_EXPIRED",
    )


def test_a_ramp_timed_out_before_its_start_cannot_be_started(
    ramp_stub: Stub, registered: RampRecord, clock: FakeClock, database_url: str
) -> None:
    """A start on a ramp the cleanup job timed out is not the replay of a start that
    succeeded: it is refused, with or without transactions."""
    clock.advance(minutes=15)
    url = make_url(database_url).set(drivername="postgresql+psycopg")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        assert time_out_unstarted(conn, clock.now, 100) == 1

    def refused() -> None:
        for request in (
            ramp_pb2.StartRampRequest(ramp_id=str(registered.id)),
            ramp_pb2.StartRampRequest(ramp_id=str(registered.id), presigned_txs=[]),
        ):
            with pytest.raises(grpc.RpcError) as exc:
                ramp_stub.StartRamp(request, timeout=10)
            assert failure(exc.value).reason == "START_DEADLINE_PASSED"

    refused()
    # Its deposit address was watched; the watch's end is in its history. Still never ran.
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO ramp.phase_events (ramp_id, from_phase, to_phase, status, actor,"
                " note, created_at) VALUES (:id, 'watchLateDeposit', 'watchLateDeposit',"
                " 'TIMED_OUT', 'worker', 'done', :now)"
            ),
            {"id": registered.id, "now": clock.now},
        )
    engine.dispose()
    shown = ramp_stub.GetRamp(ramp_pb2.GetRampRequest(id=str(registered.id)), timeout=5)
    assert "watchLateDeposit" in [p.phase for p in shown.phase_history]
    refused()


def test_the_payout_is_fixed_at_register(ramp_stub: Stub, registered: RampRecord) -> None:
    """The anchor withdrawal (or PIX charge and XCM call) was made with the registered
    destination: another one is refused, not shown and silently not paid to."""
    for call in (ramp_stub.UpdateRamp, ramp_stub.StartRamp):
        other = ramp_pb2.AdditionalData(destination="GB82WEST12345698765432")
        request_type = (
            ramp_pb2.UpdateRampRequest
            if call == ramp_stub.UpdateRamp
            else ramp_pb2.StartRampRequest
        )
        with pytest.raises(grpc.RpcError) as exc:
            call(request_type(ramp_id=str(registered.id), additional_data=other), timeout=10)
        assert failure(exc.value).reason == "INVALID_RAMP_REQUEST"
    same = ramp_pb2.AdditionalData(destination=registered.additional_data.destination)
    started = ramp_stub.StartRamp(
        ramp_pb2.StartRampRequest(ramp_id=str(registered.id), additional_data=same), timeout=10
    )
    assert started.status == ramp_pb2.Ramp.RUNNING
    assert started.additional_data.destination == registered.additional_data.destination


def test_list_by_wallet_refuses_what_no_wallet_address_looks_like(ramp_stub: Stub) -> None:
    for wallet, reason in (("6" * 300, "INVALID_RAMP_REQUEST"), ("6ft\x00", "INVALID_TEXT")):
        with pytest.raises(grpc.RpcError) as exc:
            ramp_stub.ListRamps(ramp_pb2.ListRampsRequest(wallet_address=wallet), timeout=5)
        assert (failure(exc.value).code, failure(exc.value).reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            reason,
        )


def test_a_body_that_does_not_parse_is_refused_with_a_reason(ramp_server: RunningServer) -> None:
    """Bad UTF-8 in a string field (a REST path parameter like /v1/ramp/%FF arrives so) and
    bytes that are not protobuf at all: INVALID_ARGUMENT with a reason, not UNKNOWN with the
    parser's exception text."""
    with grpc.insecure_channel(f"127.0.0.1:{ramp_server.port}") as channel:
        get_ramp = channel.unary_unary(
            "/pendulumpay.ramp.v1.RampService/GetRamp",
            request_serializer=lambda raw: raw,
            response_deserializer=ramp_pb2.Ramp.FromString,
        )
        for body, reason in (
            (b"\x0a\x02\xc3\x28", "INVALID_TEXT"),  # field 1 (id): an invalid UTF-8 sequence
            (b"\x0a\xff", "MALFORMED_REQUEST"),  # a length running past the end
        ):
            with pytest.raises(grpc.RpcError) as exc:
                get_ramp(body, timeout=5)
            assert (failure(exc.value).code, failure(exc.value).reason) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                reason,
            ), exc.value.details()
            assert "DecodeError" not in (exc.value.details() or "")


def test_review_listing_refuses_an_unrepresentable_time(
    ramp_stub: Stub, ramp_server: RunningServer, registered: RampRecord
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{ramp_server.port}") as channel:
        admin = admin_pb2_grpc.RampAdminServiceStub(channel)
        auth = (("authorization", "Bearer test-admin-token"),)
        listed = admin.ListRampsForReview(
            admin_pb2.ListRampsForReviewRequest(status="REGISTERED"), metadata=auth, timeout=5
        )
        assert str(registered.id) in {r.id for r in listed.ramps}
        for seconds in (10**12, -(10**11)):
            request = admin_pb2.ListRampsForReviewRequest(updated_before=Timestamp(seconds=seconds))
            with pytest.raises(grpc.RpcError) as exc:
                admin.ListRampsForReview(request, metadata=auth, timeout=5)
            assert (failure(exc.value).code, failure(exc.value).reason) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_TIMESTAMP",
            )
