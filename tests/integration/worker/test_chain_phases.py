"""The chain phase handlers under the real processor: real PostgreSQL, the real substrate-interface
client against the Substrate stand-in, and races placed with the stand-in's own hooks (paused
blocks, `dev_blockAfter`) so each one happens every time, not now and then."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from stellar_sdk import Account, Asset, Server, TransactionBuilder
from stellar_sdk import Keypair as StellarKeypair
from substrateinterface import Keypair, SubstrateInterface

from devnet.horizon.app import DEVNET_PASSPHRASE, HorizonConfig
from devnet.horizon.app import create_app as create_horizon
from devnet.pix.app import PixConfig
from devnet.pix.app import create_app as create_pix
from devnet.substrate.app import CHAIN_KEY, SubstrateConfig
from devnet.substrate.app import create_app as create_node
from devnet.substrate.chain import Chain
from ramp_service.adapters.registration import TOKEN_FOR, ChainRegistration
from ramp_service.admin import RampAdmin
from ramp_service.chains.errors import UnrecoverableError
from ramp_service.chains.partners import AnchorClient, PixClient, PixDeposit
from ramp_service.chains.pendulum import PendulumChain, account_storage_key
from ramp_service.chains.stellar import StellarChain, SubmitResult
from ramp_service.db.models import OperationRow, RampErrorRow, RampRow
from ramp_service.domain.flows import WATCH_LATE_DEPOSIT, Network
from ramp_service.domain.outcomes import Advance, Outcome, RetryPolicy, Wait
from ramp_service.domain.ramp import IssuedTx, RampRecord, SigningAccount, StoredTx
from ramp_service.worker.engine import PhaseProcessor, ProcessorConfig
from ramp_service.worker.handlers import PhaseContext, PhaseHandler
from ramp_service.worker.handlers.phases import (
    FUNDING_ERA_BLOCKS,
    AwaitUserDeposit,
    BrlaTeleport,
    Chains,
    FundEphemeral,
    FundingLock,
    StellarCleanup,
    SubmitPresignedPendulum,
    WatchLateDeposit,
    create_stellar_ephemeral,
)
from ramp_service.worker.loader import RecordLoader
from ramp_service.worker.metrics import WorkerMetrics
from ramp_service.worker.queue import WorkQueue
from service_kit.config import ServiceSettings
from service_kit.db import DirectPool, create_engine
from service_kit.errors import Conflict, PreconditionFailed
from tests.integration.devnet.conftest import Node
from tests.support.aio import FakeClock, LoopThread, eventually
from tests.support.http_apps import serve
from tests.support.ramps import buy_record, error_reasons, insert_at, sell_record

FUNDING = Keypair.create_from_uri("//PendulumFunding", ss58_format=56)
CHAIN_TIMEOUT_S = 2.0  # a submit waiting for a block that never comes gives up after this


class Parked:
    """The phase after the one under test: it only waits, so the ramp stays where it got to."""

    async def run(self, ctx: PhaseContext) -> Outcome:
        return Wait(timedelta(hours=1), "PARKED")


@pytest.fixture
def node(aio_loop: LoopThread) -> Iterator[Node]:
    """A Substrate stand-in with an endowed funding account; its pool bans for 5 blocks."""
    config = SubstrateConfig(
        block_time_s=0.1, endowed={FUNDING.ss58_address: {"PEN": Decimal(1000)}}, ban_blocks=5
    )
    app = create_node(config)
    runner, port = aio_loop.run(serve(app))
    yield Node(port, app[CHAIN_KEY])
    aio_loop.run(runner.cleanup())


@pytest.fixture
def engine(database_url: str, aio_loop: LoopThread) -> Iterator[AsyncEngine]:
    async def make() -> AsyncEngine:
        return create_engine(ServiceSettings(database_url=database_url), "test-funding")

    made = aio_loop.run(make())
    yield made
    aio_loop.run(made.dispose())


@pytest.fixture
def chains(node: Node, engine: AsyncEngine, aio_loop: LoopThread) -> Iterator[Chains]:
    """The handlers' adapters; only Pendulum is used here (the others point nowhere)."""
    pendulum = PendulumChain(node.ws_url, timeout_s=CHAIN_TIMEOUT_S)
    pendulum.warm_up(1)
    unused = "http://127.0.0.1:1"
    yield Chains(
        stellar=StellarChain(unused, "unused"),
        pendulum=pendulum,
        anchor=AnchorClient(unused),
        pix=PixClient(unused),
        stellar_funding=StellarKeypair.random(),
        pendulum_funding=FUNDING,
        funding_lock=FundingLock(engine),
        poll=timedelta(seconds=1),
    )
    pendulum.close()


def processor(
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    handlers: dict[str, PhaseHandler],
    policies: dict[str, RetryPolicy] | None = None,
    metrics: WorkerMetrics | None = None,
) -> PhaseProcessor:
    queue = WorkQueue(sessions, direct, "w1", timedelta(seconds=30), clock)
    return PhaseProcessor(
        queue,
        RecordLoader(direct),
        handlers,
        ProcessorConfig(default_policy=RetryPolicy(), policies=policies or {}),
        metrics or WorkerMetrics(),
    )


def ephemeral(node: Node, pen: str = "10") -> Keypair:
    """A fresh Pendulum ephemeral holding `pen` PEN (none when "0")."""
    keypair = Keypair.create_from_uri(f"//Eph{uuid.uuid4().hex}", ss58_format=56)
    if pen != "0":
        node.rpc("dev_mint", keypair.ss58_address, "PEN", pen)
        devnet = chain_of(node)
        eventually(lambda: devnet.native.get(keypair.public_key, 0) > 0, "the PEN mint")
    return keypair


def chain_of(node: Node) -> Chain:
    assert isinstance(node.chain, Chain)
    return node.chain


def presign(chains: Chains, eph: Keypair, nonce: int = 0) -> str:
    """What the browser presigns: a transfer out of the ephemeral at `nonce`."""
    pendulum = chains.pendulum
    dest = Keypair.create_from_uri("//Dest", ss58_format=56).ss58_address
    issued = pendulum.issue(
        pendulum.token_transfer(dest, "PEN", Decimal("0.5")), eph.ss58_address, nonce
    )
    signature = "0x" + eph.sign(bytes.fromhex(issued.signing_payload_hex[2:])).hex()
    return pendulum.assemble(issued, signature)


def at_presigned_approve(
    chains: Chains,
    eph: Keypair,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> tuple[uuid.UUID, PhaseProcessor]:
    """A BUY ramp at nablaApprove with `eph`'s presigned approval (nonce 0), and a processor
    that submits it and parks the ramp at nablaSwap."""
    record = buy_record(clock.now, eph.ss58_address, {"nablaApprove": (0, presign(chains, eph))})
    ramp_id = aio_loop.run(insert_at(sessions, record, "nablaApprove", clock.now))
    proc = processor(
        sessions,
        direct,
        clock,
        {"nablaApprove": SubmitPresignedPendulum(chains), "nablaSwap": Parked()},
    )
    return ramp_id, proc


def row(
    sessions: async_sessionmaker[AsyncSession], aio_loop: LoopThread, ramp_id: uuid.UUID
) -> RampRow:
    async def read() -> RampRow:
        async with sessions.begin() as session:
            found = await session.get(RampRow, ramp_id)
            assert found is not None
            return found

    return aio_loop.run(read())


def journal_state(
    sessions: async_sessionmaker[AsyncSession], aio_loop: LoopThread, ramp_id: uuid.UUID, op: str
) -> str | None:
    async def read() -> str | None:
        async with sessions.begin() as session:
            return await session.scalar(
                select(OperationRow.state).where(
                    OperationRow.ramp_id == ramp_id, OperationRow.operation == op
                )
            )

    return aio_loop.run(read())


def test_a_presigned_extrinsic_already_in_the_pool_is_waited_for_not_retried(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A submit that timed out while its extrinsic waits in the pool (a Pendulum block takes
    longer than the chain timeout) is re-sent by the next run; the node answers 1013 "already
    imported", which is no error: the run waits for the block and burns no attempt."""
    eph = ephemeral(node)
    ramp_id, proc = at_presigned_approve(chains, eph, sessions, direct, clock, aio_loop)
    node.rpc("dev_pauseBlocks")
    aio_loop.run(proc.run_once())  # sent; no block comes: the wait for inclusion times out
    assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["PENDULUM_TIMEOUT"]
    assert len(chain_of(node).ready) == 1
    clock.advance(minutes=5)
    aio_loop.run(proc.run_once())  # nonce unused: the same bytes again, already in the pool
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase, current.attempts) == (
        "RUNNING",
        "nablaApprove",
        1,
    )
    assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["PENDULUM_TIMEOUT"]
    node.rpc("dev_resumeBlocks")
    eventually(lambda: not chain_of(node).ready, "the block with the extrinsic")
    clock.advance(minutes=5)
    aio_loop.run(proc.run_once())
    assert row(sessions, aio_loop, ramp_id).current_phase == "nablaSwap"
    assert journal_state(sessions, aio_loop, ramp_id, "submit") == "confirmed"


def block_after_nonce_read(node: Node, address: str) -> None:
    """The next read of `address`'s account (its nonce) is followed by a block, sealed before
    the answer leaves the node: whatever waits in the pool lands right after that read."""
    node.rpc("dev_blockAfter", "state_getStorage", account_storage_key(address))


def test_a_funding_transfer_landing_during_reconciliation_is_not_sent_twice(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """The PEN funding transfer F1 (nonce N) waits in the pool when its submit times out. The
    retry reconciles, and the block with F1 lands right after it read the funding account's
    nonce. Deciding from that one reading (N unused) re-sends F1's bytes; a second reading
    (N+1: "used by another transaction") signed and sent a second transfer at N+1."""
    eph = ephemeral(node, pen="0")
    record = buy_record(clock.now, eph.ss58_address, {})
    ramp_id = aio_loop.run(insert_at(sessions, record, "fundEphemeral", clock.now))
    proc = processor(
        sessions, direct, clock, {"fundEphemeral": FundEphemeral(chains), "nablaApprove": Parked()}
    )
    devnet = chain_of(node)
    node.rpc("dev_pauseBlocks")
    aio_loop.run(proc.run_once())  # F1 sent; no block comes: the submit times out
    assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["PENDULUM_TIMEOUT"]
    assert len(devnet.ready) == 1
    block_after_nonce_read(node, FUNDING.ss58_address)
    clock.advance(minutes=5)
    aio_loop.run(proc.run_once())  # reconciles while F1 lands
    node.rpc("dev_resumeBlocks")
    eventually(lambda: not devnet.ready and not devnet.future, "an empty pool")
    clock.advance(minutes=5)
    aio_loop.run(proc.run_once())
    assert row(sessions, aio_loop, ramp_id).current_phase == "nablaApprove"
    assert devnet.native.get(eph.public_key, 0) == 10**12  # one transfer of ephemeral_pen
    assert devnet.nonces[FUNDING.public_key] == 1


@dataclass
class Funding:
    """A BUY ramp in fundEphemeral, its processor (fundEphemeral, then parked) and the node."""

    ramp_id: uuid.UUID
    eph: Keypair
    proc: PhaseProcessor
    devnet: Chain


def funding_ramp(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> Funding:
    eph = ephemeral(node, pen="0")
    record = buy_record(clock.now, eph.ss58_address, {})
    ramp_id = aio_loop.run(insert_at(sessions, record, "fundEphemeral", clock.now))
    proc = processor(
        sessions, direct, clock, {"fundEphemeral": FundEphemeral(chains), "nablaApprove": Parked()}
    )
    return Funding(ramp_id, eph, proc, chain_of(node))


def lose_the_first_transfer(node: Node, funding: Funding, aio_loop: LoopThread) -> None:
    """F1 is sent while no block comes (its submit times out), then lost from the pool (a node
    restarted with an empty pool); blocks stay paused."""
    node.rpc("dev_pauseBlocks")
    aio_loop.run(funding.proc.run_once())
    assert len(funding.devnet.ready) == 1
    funding.devnet.ready.clear()


def take_funding_nonce_0(node: Node, chains: Chains) -> str:
    """Another transfer of the funding account at nonce 0, submitted: its bytes."""
    other = Keypair.create_from_uri(f"//Other{uuid.uuid4().hex}", ss58_format=56)
    taken = chains.pendulum.sign_with(
        chains.pendulum.token_transfer(other.ss58_address, "PEN", Decimal(1)),
        chains.pendulum_funding,
        0,
    )
    node.rpc("author_submitExtrinsic", taken)
    return taken


def count_block_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each block the Pendulum adapter reads from now on appends to the list returned."""
    reads: list[int] = []
    original = SubstrateInterface.get_block

    def counting(self: SubstrateInterface, *args: object, **kwargs: object) -> object:
        reads.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SubstrateInterface, "get_block", counting)
    return reads


def funded_once(
    funding: Funding,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """The ramp went on to nablaApprove (further runs settle a replacement's wait for its block,
    which may time out on a busy machine) with one transfer of ephemeral_pen in all."""
    for _ in range(3):
        if row(sessions, aio_loop, funding.ramp_id).current_phase != "fundEphemeral":
            break
        clock.advance(minutes=5)
        aio_loop.run(funding.proc.run_once())
    found = row(sessions, aio_loop, funding.ramp_id)
    assert (found.status, found.current_phase) == ("RUNNING", "nablaApprove")
    assert funding.devnet.native.get(funding.eph.public_key, 0) == 10**12


def test_a_lost_funding_transfer_is_searched_for_in_its_era_only_then_replaced(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PEN funding transfer F1 is lost from the pool; the funding account's nonce moves on
    (another ramp's transfer) and hundreds of blocks pass before the retry (an operator's,
    after a top-up). Searching every block since F1 was sent took longer than the chain
    timeout at every retry: the ramp could never go on. F1 is mortal now, so only its era's
    blocks are searched, and it is replaced."""
    funding = funding_ramp(node, chains, sessions, direct, clock, aio_loop)
    lose_the_first_transfer(node, funding, aio_loop)
    take_funding_nonce_0(node, chains)  # F1's nonce goes to another transfer
    for _ in range(300):
        aio_loop.run(funding.devnet.produce_block(force=True))
    assert funding.devnet.nonces[FUNDING.public_key] == 1
    node.rpc("dev_resumeBlocks")
    reads = count_block_reads(monkeypatch)
    clock.advance(minutes=5)
    aio_loop.run(funding.proc.run_once())
    # F1's era (its first block to its last), and the block its replacement landed in: not
    # the 300 blocks since F1 was sent.
    assert len(reads) <= FUNDING_ERA_BLOCKS + 2, len(reads)
    funded_once(funding, sessions, clock, aio_loop)
    assert journal_state(sessions, aio_loop, funding.ramp_id, "fund_pen") == "confirmed"


def test_a_lost_funding_transfer_at_the_end_of_its_era_is_signed_anew_not_resent(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """F1 is lost from the pool with its nonce unused, and its era's last block is the head:
    the next block is past its era, where the node refuses its bytes (their birth block is no
    longer the one the era names). Resent, the refusal sent the ramp to review; it is signed
    anew instead."""
    funding = funding_ramp(node, chains, sessions, direct, clock, aio_loop)
    lose_the_first_transfer(node, funding, aio_loop)
    born = aio_loop.run(chains.pendulum.finalized_head())
    while funding.devnet.head.number < born + FUNDING_ERA_BLOCKS - 1:
        aio_loop.run(funding.devnet.produce_block(force=True))
    clock.advance(minutes=5)
    aio_loop.run(funding.proc.run_once())  # decided at that head: blocks still paused
    node.rpc("dev_resumeBlocks")
    funded_once(funding, sessions, clock, aio_loop)


def test_a_funding_transfer_that_failed_on_chain_is_replaced_without_a_search(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Included and failed, a transfer never applies: its entry (whose detail now holds the
    failure, not the block it was sent at) was searched for in the 200 latest blocks at every
    retry, which a remote node could not answer in time."""
    funding = funding_ramp(node, chains, sessions, direct, clock, aio_loop)
    spent = take_funding_nonce_0(node, chains)  # stands for the failed transfer: nonce 0 used
    eventually(lambda: funding.devnet.nonces.get(FUNDING.public_key) == 1, "nonce 0 used")

    async def failed_entry() -> None:
        async with sessions.begin() as session:
            session.add(
                OperationRow(
                    ramp_id=funding.ramp_id,
                    phase="fundEphemeral",
                    operation="fund_pen",
                    network="pendulum",
                    state="failed",
                    tx_hash="0x" + "ab" * 32,
                    signer=FUNDING.ss58_address,
                    nonce=0,
                    payload=spent,
                    detail="Module error: balances.InsufficientBalance",
                    generation=1,
                    created_at=clock.now,
                    updated_at=clock.now,
                )
            )

    aio_loop.run(failed_entry())
    reads = count_block_reads(monkeypatch)
    aio_loop.run(funding.proc.run_once())
    assert len(reads) <= 1, len(reads)  # the replacement's own block, nothing searched
    funded_once(funding, sessions, clock, aio_loop)


def test_a_presigned_extrinsic_landing_during_reconciliation_is_not_reviewed_as_lost(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Likewise for a presigned extrinsic: landing between the search and a second nonce
    reading made it look like "nonce used, extrinsic not on chain" (EFFECT_NOT_FOUND, manual
    review) although it was applied."""
    eph = ephemeral(node)
    ramp_id, proc = at_presigned_approve(chains, eph, sessions, direct, clock, aio_loop)
    node.rpc("dev_pauseBlocks")
    aio_loop.run(proc.run_once())  # sent; the submit times out
    block_after_nonce_read(node, eph.ss58_address)
    clock.advance(minutes=5)
    aio_loop.run(proc.run_once())  # reconciles while it lands
    assert row(sessions, aio_loop, ramp_id).status == "RUNNING"
    node.rpc("dev_resumeBlocks")
    clock.advance(minutes=5)
    aio_loop.run(proc.run_once())
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase) == ("RUNNING", "nablaSwap")
    # The first submit timed out; the reconciling run's re-send of the same bytes, waiting for
    # a block while blocks are paused, may time out too on a busy machine: a retry, never a
    # verdict. What must not appear is the lost-effect review.
    reasons = aio_loop.run(error_reasons(sessions, ramp_id))
    assert reasons[0] == "PENDULUM_TIMEOUT" and set(reasons) == {"PENDULUM_TIMEOUT"}, reasons


class LandsAfterFirstRead(StellarChain):
    """The real Horizon client; once armed with an envelope, the network applies that envelope
    (the earlier submission, still pending in the core's queue) right after the first read a
    reconciliation makes, whichever read that is."""

    held: str | None = None

    async def _land(self) -> None:
        if self.held is not None:
            envelope, self.held = self.held, None
            async with httpx.AsyncClient() as client:
                landed = await client.post(
                    f"{self.horizon_url}/transactions", data={"tx": envelope}
                )
            assert landed.status_code == 200, landed.text

    async def account(self, account_id: str) -> object:  # type: ignore[override]
        state = await super().account(account_id)
        await self._land()
        return state

    async def find(self, tx_hash: str) -> object:  # type: ignore[override]
        found = await super().find(tx_hash)
        await self._land()
        return found


class LandsBeforeResend(LandsAfterFirstRead):
    """As LandsAfterFirstRead, but the earlier submission applies after the reconciliation's
    reads (which found nothing, the sequence unused) and right before its own resend, which
    Horizon then refuses (tx_bad_seq) although the payment went through."""

    async def account(self, account_id: str) -> object:  # type: ignore[override]
        return await StellarChain.account(self, account_id)

    async def find(self, tx_hash: str) -> object:  # type: ignore[override]
        return await StellarChain.find(self, tx_hash)

    async def submit(self, payload: str) -> object:  # type: ignore[override]
        await self._land()
        return await super().submit(payload)


class LandsThenTooLate(LandsBeforeResend):
    """As LandsBeforeResend, but Horizon answers the resend tx_too_late (its time bounds just
    passed) and has not indexed the landed transaction yet when it is first searched for."""

    lagging = False

    async def submit(self, payload: str) -> object:  # type: ignore[override]
        landing = self.held is not None
        await self._land()
        self.lagging = landing
        raise UnrecoverableError("TX_TOO_LATE", "tx_too_late")

    async def find(self, tx_hash: str) -> object:  # type: ignore[override]
        if self.lagging:
            self.lagging = False
            return None
        return await StellarChain.find(self, tx_hash)


@pytest.mark.parametrize("lands", [LandsAfterFirstRead, LandsBeforeResend, LandsThenTooLate])
def test_a_stellar_transaction_landing_during_reconciliation_is_not_reviewed_as_lost(
    lands: type[LandsAfterFirstRead],
    chains: Chains,
    aio_loop: LoopThread,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
) -> None:
    """A presigned Stellar transaction whose submit got a 504 (still pending in the core) lands
    during the next run's reconciliation. Searching first and reading the sequence second made
    it "sequence used, transaction not on the ledger": EFFECT_NOT_FOUND, although it applied.
    Landing just before the resend, it made the resend's tx_bad_seq STELLAR_TX_FAILED, whose
    runbook step is a refund by hand: a second payment."""
    config = HorizonConfig(DEVNET_PASSPHRASE, ledger_close_s=0.2, friendbot_amount=Decimal(100))
    runner, port = aio_loop.run(serve(create_horizon(config)))
    url = f"http://127.0.0.1:{port}"
    stellar = lands(url, DEVNET_PASSPHRASE, timeout_s=5)
    try:
        eph = StellarKeypair.random()
        httpx.get(f"{url}/friendbot", params={"addr": eph.public_key}, timeout=5).raise_for_status()
        account = Server(url).load_account(eph.public_key)
        merge = (
            TransactionBuilder(account, DEVNET_PASSPHRASE, base_fee=100)
            .append_payment_op(config.friendbot.public_key, Asset.native(), "1")
            .set_timeout(3600)
            .build()
        )
        merge.sign(eph)
        record = sell_record(clock.now)
        pen = next(a for a in record.accounts if a.network is Network.PENDULUM)
        cleanup = StoredTx(
            IssuedTx(
                "stellarCleanup", Network.STELLAR, eph.public_key, merge.transaction.sequence, "u"
            ),
            merge.to_xdr(),
            "PRESIGNED",
        )
        record = replace(
            record,
            accounts=(SigningAccount(Network.STELLAR, eph.public_key), pen),
            txs=(*(t for t in record.txs if t.issued.phase != "stellarCleanup"), cleanup),
        )
        chains.stellar = stellar
        ramp_id = aio_loop.run(
            insert_at(sessions, record, "complete", clock.now, "COMPLETE", "stellarCleanup")
        )
        proc = processor(
            sessions,
            direct,
            clock,
            {"stellarCleanup": StellarCleanup(chains), "pendulumCleanup": Parked()},
        )
        faults = {"fail_next": 1, "fail_status": 504, "paths": ["/transactions"]}
        httpx.post(f"{url}/dev/faults", json=faults, timeout=5).raise_for_status()
        aio_loop.run(proc.run_once())  # 504: pending as far as anyone knows
        assert journal_state(sessions, aio_loop, ramp_id, "submit") == "submitted"
        stellar.held = merge.to_xdr()
        clock.advance(minutes=5)
        aio_loop.run(proc.run_once())  # reconciles while it lands
        for _ in range(2):  # a resend refused for its used sequence settles on the next run
            if journal_state(sessions, aio_loop, ramp_id, "submit") != "confirmed":
                clock.advance(minutes=5)
                aio_loop.run(proc.run_once())
        assert journal_state(sessions, aio_loop, ramp_id, "submit") == "confirmed"
        assert "CLEANUP_ABANDONED" not in aio_loop.run(error_reasons(sessions, ramp_id))
        assert row(sessions, aio_loop, ramp_id).cleanup_phase == "pendulumCleanup"
    finally:
        aio_loop.run(stellar.close())
        aio_loop.run(runner.cleanup())


class CreatesEphemeral:
    """fundEphemeral's Stellar part alone: the funding account creates the ephemeral."""

    def __init__(self, chains: Chains) -> None:
        self._chains = chains

    async def run(self, ctx: PhaseContext) -> Outcome:
        await create_stellar_ephemeral(self._chains, ctx)
        return Advance()


class FundingSequenceTaken(StellarChain):
    """Horizon as seen while someone else uses the funding account: before our first submit,
    another transaction from it (an operator's payment) takes the sequence we built with."""

    funding: StellarKeypair
    payee: str
    raced = False

    async def submit(self, envelope_xdr: str) -> SubmitResult:
        if not self.raced:
            self.raced = True
            state = await self.account(self.funding.public_key)
            assert state is not None
            other = (
                TransactionBuilder(
                    Account(self.funding.public_key, state.sequence), DEVNET_PASSPHRASE, 100
                )
                .append_payment_op(self.payee, Asset.native(), "1")
                .set_timeout(3600)
                .build()
            )
            other.sign(self.funding)
            await super().submit(other.to_xdr())
        return await super().submit(envelope_xdr)


def test_a_stellar_funding_sequence_taken_by_another_transaction_is_rebuilt_not_reviewed(
    chains: Chains,
    aio_loop: LoopThread,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
) -> None:
    """The create-account transaction built at the funding account's sequence meets tx_bad_seq
    because another transaction from that account landed first. Nothing was paid, and a rebuild
    at the new sequence succeeds: the phase reconciles and rebuilds on its next attempt instead
    of sending the ramp (holding the user's funds) to MANUAL_REVIEW."""
    config = HorizonConfig(DEVNET_PASSPHRASE, ledger_close_s=0.2, friendbot_amount=Decimal(100))
    runner, port = aio_loop.run(serve(create_horizon(config)))
    url = f"http://127.0.0.1:{port}"
    stellar = FundingSequenceTaken(url, DEVNET_PASSPHRASE, timeout_s=5)
    try:
        funding = StellarKeypair.random()
        httpx.get(
            f"{url}/friendbot", params={"addr": funding.public_key}, timeout=5
        ).raise_for_status()
        stellar.funding, stellar.payee = funding, config.friendbot.public_key
        chains.stellar, chains.stellar_funding = stellar, funding
        eph = StellarKeypair.random()
        record = sell_record(clock.now)
        pen = next(a for a in record.accounts if a.network is Network.PENDULUM)
        record = replace(record, accounts=(SigningAccount(Network.STELLAR, eph.public_key), pen))
        ramp_id = aio_loop.run(insert_at(sessions, record, "fundEphemeral", clock.now))
        proc = processor(
            sessions,
            direct,
            clock,
            {"fundEphemeral": CreatesEphemeral(chains), "nablaApprove": Parked()},
        )
        aio_loop.run(proc.run_once())  # tx_bad_seq: the operator's payment took the sequence
        assert stellar.raced
        first = row(sessions, aio_loop, ramp_id)
        assert (first.status, first.current_phase) == ("RUNNING", "fundEphemeral")
        assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["FUNDING_PENDING"]
        assert journal_state(sessions, aio_loop, ramp_id, "create_account") == "submitted"
        assert aio_loop.run(stellar.account(eph.public_key)) is None
        clock.advance(minutes=5)
        aio_loop.run(proc.run_once())  # reconciles: sequence used, not ours: rebuilt and sent
        done = row(sessions, aio_loop, ramp_id)
        assert (done.status, done.current_phase) == ("RUNNING", "nablaApprove")
        assert journal_state(sessions, aio_loop, ramp_id, "create_account") == "confirmed"
        created = aio_loop.run(stellar.account(eph.public_key))
        assert created is not None
    finally:
        aio_loop.run(stellar.close())
        aio_loop.run(runner.cleanup())


def test_a_pool_refusal_is_sent_again_after_an_operators_retry(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """The pool refuses the presigned extrinsic (1010: the ephemeral cannot pay the fee), so
    the ramp, holding the user's money, goes to MANUAL_REVIEW. Nothing went on chain and the
    nonce is unused: once an operator tops the ephemeral up and retries, the same bytes are
    sent again (after the pool's ban on them ends) and the ramp goes on."""
    eph = ephemeral(node, pen="0")
    ramp_id, proc = at_presigned_approve(chains, eph, sessions, direct, clock, aio_loop)
    aio_loop.run(proc.run_once())
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase) == ("MANUAL_REVIEW", "nablaApprove")
    assert current.status_reason.startswith("PENDULUM_INVALID_INABILITY_TO_PAY_SOME_FEES")
    ephemeral_topped_up = node.rpc("dev_mint", eph.ss58_address, "PEN", "10")
    assert ephemeral_topped_up["result"] is True
    devnet = chain_of(node)
    eventually(lambda: devnet.native.get(eph.public_key, 0) > 0, "the top-up")
    admin = RampAdmin(sessions, clock, registration(chains))
    aio_loop.run(admin.retry(str(ramp_id), "alice", "topped up PEN"))

    def moved_on() -> bool:
        clock.advance(seconds=2)
        aio_loop.run(proc.run_once())
        return row(sessions, aio_loop, ramp_id).status != "RUNNING" or (
            row(sessions, aio_loop, ramp_id).current_phase != "nablaApprove"
        )

    eventually(moved_on, "the retried ramp leaving nablaApprove")
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase) == ("RUNNING", "nablaSwap")
    assert devnet.nonces[eph.public_key] == 1  # sent once, applied once


@dataclass
class PixPartner:
    """The PIX stand-in on its own clock (it starts as the worker's; tests move them apart)."""

    url: str
    clock: FakeClock


@pytest.fixture
def pix_partner(chains: Chains, clock: FakeClock, aio_loop: LoopThread) -> Iterator[PixPartner]:
    partner_clock = FakeClock(clock.now)
    # Mints never land: a paid charge stays PAID / MINT_FAILED, so the ramp stays in the phase.
    app = create_pix(PixConfig(substrate_rpc_url="http://127.0.0.1:1/", clock=partner_clock))
    runner, port = aio_loop.run(serve(app))
    url = f"http://127.0.0.1:{port}"
    chains.pix = PixClient(url)
    yield PixPartner(url, partner_clock)
    aio_loop.run(chains.pix.close())
    aio_loop.run(runner.cleanup())


def registration(chains: Chains) -> ChainRegistration:
    """Start's and the admin's partner work over the handlers' adapters."""
    return ChainRegistration(chains.stellar, chains.pendulum, chains.anchor, chains.pix, "", "")


def buy_in_brla_teleport(
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> tuple[uuid.UUID, PixDeposit]:
    """A BUY ramp started now, in brlaTeleport, with its PIX charge (payable for an hour) open
    as StartRamp opens it."""
    eph = Keypair.create_from_uri(f"//Eph{uuid.uuid4().hex}", ss58_format=56)
    record = buy_record(clock.now, eph.ss58_address, {})
    record = replace(record, additional_data=replace(record.additional_data, tax_id=CPF))
    charge = aio_loop.run(registration(chains).open_payment(record, clock.now))
    deposit = aio_loop.run(chains.pix.deposit(charge["pix_deposit_id"]))
    ramp_id = aio_loop.run(
        insert_at(sessions, replace(record, partner_data=charge), "brlaTeleport", clock.now)
    )
    return ramp_id, deposit


CPF = "529.982.247-25"
# brlaTeleport's budget, as the worker sets it from PIX_TIMEOUT_S: beyond the charge's hour.
PIX_BUDGET = {"brlaTeleport": RetryPolicy(time_budget=timedelta(hours=2))}


@pytest.mark.parametrize("partner_says", ["EXPIRED", "CANCELLED"])
def test_an_unpaid_pix_charge_times_the_ramp_out_only_on_the_partners_word(
    partner_says: str,
    chains: Chains,
    pix_partner: PixPartner,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Past the charge's expiry the partner reports it EXPIRED (its clock agrees with ours), or
    still PENDING (its clock lags): then the worker cancels it. Either way the charge can no
    longer be paid when the ramp times out."""
    ramp_id, deposit = buy_in_brla_teleport(chains, sessions, clock, aio_loop)
    proc = processor(sessions, direct, clock, {"brlaTeleport": BrlaTeleport(chains)}, PIX_BUDGET)
    clock.advance(minutes=59, seconds=59)
    pix_partner.clock.advance(minutes=59, seconds=59)
    aio_loop.run(proc.run_once())
    assert row(sessions, aio_loop, ramp_id).status == "RUNNING"  # still payable: waiting
    clock.advance(seconds=1)
    if partner_says == "EXPIRED":
        pix_partner.clock.advance(seconds=1)
    aio_loop.run(proc.run_once())
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase) == ("TIMED_OUT", "timedOut")
    assert current.status_reason.startswith(f"PIX_{partner_says}")
    assert aio_loop.run(chains.pix.deposit(deposit.id)).status == partner_says
    paid = httpx.post(f"{pix_partner.url}/dev/pix/{deposit.id}/pay", timeout=5)
    assert paid.status_code == 409  # a late payment is refused by the partner


def test_a_pix_payment_landing_just_before_the_cancel_carries_the_ramp_on(
    chains: Chains,
    pix_partner: PixPartner,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """The worker reads the charge PENDING past its expiry; the bank's payment lands before its
    cancel, which the partner refuses (`deposit_paid`): the ramp waits for the mint."""
    ramp_id, deposit = buy_in_brla_teleport(chains, sessions, clock, aio_loop)

    class PaidFirst(PixClient):
        async def cancel_deposit(self, deposit_id: str) -> PixDeposit:
            async with httpx.AsyncClient(timeout=5) as bank:
                (await bank.post(f"{pix_partner.url}/dev/pix/{deposit_id}/pay")).raise_for_status()
            return await super().cancel_deposit(deposit_id)

    racing = replace(chains, pix=PaidFirst(pix_partner.url))
    proc = processor(sessions, direct, clock, {"brlaTeleport": BrlaTeleport(racing)}, PIX_BUDGET)
    clock.advance(hours=1)
    aio_loop.run(proc.run_once())
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase) == ("RUNNING", "brlaTeleport")
    assert aio_loop.run(chains.pix.deposit(deposit.id)).paid
    aio_loop.run(racing.pix.close())


def test_the_processors_time_budget_never_times_out_a_payable_pix_charge(
    chains: Chains,
    pix_partner: PixPartner,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A phase budget that runs out before the charge does (misconfigured) sends the ramp to
    MANUAL_REVIEW: the charge is still payable, so the processor alone must not time it out."""
    ramp_id, deposit = buy_in_brla_teleport(chains, sessions, clock, aio_loop)
    short = {"brlaTeleport": RetryPolicy(time_budget=timedelta(minutes=10))}
    proc = processor(sessions, direct, clock, {"brlaTeleport": BrlaTeleport(chains)}, short)
    clock.advance(minutes=10)
    pix_partner.clock.advance(minutes=10)
    aio_loop.run(proc.run_once())
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase) == ("MANUAL_REVIEW", "brlaTeleport")
    assert current.status_reason.startswith("PIX_PENDING")
    assert aio_loop.run(chains.pix.deposit(deposit.id)).status == "PENDING"


@pytest.mark.parametrize("paid", [True, False], ids=["after-payment", "before-payment"])
def test_a_pix_partner_refusal_goes_to_manual_review_never_failed(
    paid: bool,
    chains: Chains,
    pix_partner: PixPartner,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """The PIX partner answers a 4xx (404 in an incident, 401 after a credential rotation) while
    brlaTeleport polls the charge. The user has paid, or may pay any moment (the charge stays
    payable): the ramp goes to MANUAL_REVIEW, not to the terminal `failed`."""
    url = pix_partner.url
    ramp_id, deposit = buy_in_brla_teleport(chains, sessions, clock, aio_loop)
    proc = processor(sessions, direct, clock, {"brlaTeleport": BrlaTeleport(chains)})
    if paid:
        httpx.post(f"{url}/dev/pix/{deposit.id}/pay", timeout=5).raise_for_status()
    aio_loop.run(proc.run_once())
    assert row(sessions, aio_loop, ramp_id).status == "RUNNING"  # waiting (paid: for the mint)
    faults = {"fail_next": 1, "fail_status": 404, "paths": ["/v1/pix/deposits"]}
    httpx.post(f"{url}/dev/faults", json=faults, timeout=5).raise_for_status()
    clock.advance(seconds=5)
    aio_loop.run(proc.run_once())
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase) == ("MANUAL_REVIEW", "brlaTeleport")
    assert current.status_reason.startswith("PARTNER_REJECTED")


@pytest.mark.parametrize("paid", [False, True], ids=["unpaid", "paid"])
def test_an_operators_cancel_withdraws_the_pix_charge_or_is_refused_once_paid(
    paid: bool,
    chains: Chains,
    pix_partner: PixPartner,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A cancelled ramp is watched by nobody: its charge is cancelled with it. A charge the user
    has paid makes the ramp not cancellable (their money is on its way)."""
    ramp_id, deposit = buy_in_brla_teleport(chains, sessions, clock, aio_loop)
    if paid:
        httpx.post(f"{pix_partner.url}/dev/pix/{deposit.id}/pay", timeout=5).raise_for_status()
    admin = RampAdmin(sessions, clock, registration(chains))
    if paid:
        with pytest.raises(PreconditionFailed) as refused:
            aio_loop.run(admin.cancel(str(ramp_id), "bob", "user asked"))
        assert refused.value.reason == "RAMP_NOT_CANCELLABLE"
        assert row(sessions, aio_loop, ramp_id).status == "RUNNING"
        return
    assert aio_loop.run(admin.cancel(str(ramp_id), "bob", "user asked")).status.value == "CANCELLED"
    assert aio_loop.run(chains.pix.deposit(deposit.id)).status == "CANCELLED"


def test_a_buy_past_its_payment_is_not_cancellable_and_its_charge_is_left_alone(
    chains: Chains,
    pix_partner: PixPartner,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A started BUY keeps its charge's id; once it is past the phases where nothing moved,
    a cancel is refused as such (RAMP_NOT_CANCELLABLE), not as a race to try again."""
    ramp_id, deposit = buy_in_brla_teleport(chains, sessions, clock, aio_loop)
    httpx.post(f"{pix_partner.url}/dev/pix/{deposit.id}/pay", timeout=5).raise_for_status()

    async def swapping() -> None:
        async with sessions.begin() as session:
            await session.execute(
                update(RampRow).where(RampRow.id == ramp_id).values(current_phase="nablaSwap")
            )

    aio_loop.run(swapping())
    admin = RampAdmin(sessions, clock, registration(chains))
    with pytest.raises(PreconditionFailed) as refused:
        aio_loop.run(admin.cancel(str(ramp_id), "bob", "user asked"))
    assert refused.value.reason == "RAMP_NOT_CANCELLABLE"
    assert row(sessions, aio_loop, ramp_id).status == "RUNNING"


class StartWinsDuringCancel(ChainRegistration):
    """The admin's partner work, with a StartRamp that wins the race in the middle of a cancel:
    after the cancel read the ramp (REGISTERED, no charge) and before it locks the row."""

    def __init__(self, chains: Chains, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(chains.stellar, chains.pendulum, chains.anchor, chains.pix, "", "")
        self._sessions = sessions
        self.charge: dict[str, str] | None = None

    async def withdraw_payment(self, record: RampRecord) -> bool:
        if self.charge is None:  # the start: opens the charge, stores it with RUNNING
            self.charge = await self.open_payment(record, record.created_at)
            async with self._sessions.begin() as session:
                await session.execute(
                    update(RampRow)
                    .where(RampRow.id == record.id)
                    .values(status="RUNNING", partner_data=self.charge)
                )
        return await super().withdraw_payment(record)


def test_a_cancel_that_a_start_overtakes_is_refused_then_withdraws_the_charge_on_retry(
    chains: Chains,
    pix_partner: PixPartner,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """A start wins between the cancel's read (no charge then, so none withdrawn) and its lock.
    Cancelling anyway would leave the charge the user was just shown payable on a cancelled
    ramp; the cancel is refused as a lost race, and the operator's retry withdraws it."""
    eph = Keypair.create_from_uri(f"//Eph{uuid.uuid4().hex}", ss58_format=56)
    record = buy_record(clock.now, eph.ss58_address, {})
    record = replace(record, additional_data=replace(record.additional_data, tax_id=CPF))
    ramp_id = aio_loop.run(insert_at(sessions, record, "initial", clock.now, "REGISTERED"))
    partner = StartWinsDuringCancel(chains, sessions)
    admin = RampAdmin(sessions, clock, partner)
    with pytest.raises(Conflict) as lost:
        aio_loop.run(admin.cancel(str(ramp_id), "bob", "user asked"))
    assert lost.value.reason == "RAMP_CHANGED"
    assert partner.charge is not None
    charge = aio_loop.run(chains.pix.deposit(partner.charge["pix_deposit_id"]))
    assert (row(sessions, aio_loop, ramp_id).status, charge.status) == ("RUNNING", "PENDING")
    assert aio_loop.run(admin.cancel(str(ramp_id), "bob", "user asked")).status.value == "CANCELLED"
    assert aio_loop.run(chains.pix.deposit(charge.id)).status == "CANCELLED"


def sell_of(eph: Keypair, clock: FakeClock) -> RampRecord:
    """A SELL ramp whose Pendulum ephemeral (its deposit address) is `eph`."""
    record = sell_record(clock.now)
    stellar = next(a for a in record.accounts if a.network is Network.STELLAR)
    return replace(record, accounts=(stellar, SigningAccount(Network.PENDULUM, eph.ss58_address)))


def where(
    sessions: async_sessionmaker[AsyncSession], aio_loop: LoopThread, ramp_id: uuid.UUID
) -> tuple[str, str, str | None]:
    """The ramp's status, phase and pending follow-up phase."""
    found = row(sessions, aio_loop, ramp_id)
    return found.status, found.current_phase, found.cleanup_phase


def test_a_deposit_arriving_after_the_time_out_is_reported_and_the_ramp_stays_timed_out(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """Nothing arrives within the deposit timeout: the ramp times out and its deposit address
    stays watched. The user's transfer lands an hour later, on an account only the user's key
    can move: the watch reports it once (LATE_DEPOSIT, and the metric to alert on), stops,
    and the ramp stays TIMED_OUT."""
    eph = ephemeral(node, pen="0")
    ramp_id = aio_loop.run(insert_at(sessions, sell_of(eph, clock), "awaitUserDeposit", clock.now))
    metrics = WorkerMetrics()
    proc = processor(
        sessions,
        direct,
        clock,
        {
            "awaitUserDeposit": AwaitUserDeposit(chains),
            WATCH_LATE_DEPOSIT: WatchLateDeposit(chains),
        },
        policies={"awaitUserDeposit": RetryPolicy(time_budget=timedelta(minutes=10))},
        metrics=metrics,
    )
    aio_loop.run(proc.run_once())
    assert row(sessions, aio_loop, ramp_id).status == "RUNNING"  # waiting for the deposit
    clock.advance(minutes=11)
    aio_loop.run(proc.run_once())
    assert where(sessions, aio_loop, ramp_id) == ("TIMED_OUT", "timedOut", WATCH_LATE_DEPOSIT)
    token = TOKEN_FOR["USDC"]
    node.rpc("dev_mint", eph.ss58_address, token, "100")
    eventually(
        lambda: aio_loop.run(chains.pendulum.balance(eph.ss58_address, token)) > 0, "the mint"
    )
    clock.advance(hours=1)
    aio_loop.run(proc.run_once())
    assert where(sessions, aio_loop, ramp_id) == ("TIMED_OUT", "timedOut", None)
    assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["TIMED_OUT", "LATE_DEPOSIT"]
    # Operators find it by its reason (ListRampsForReview with status and reason).
    admin = RampAdmin(sessions, clock, registration(chains))
    listed = aio_loop.run(admin.list_for_review("TIMED_OUT", "", None, 10, "LATE_DEPOSIT"))
    assert [r.id for r in listed] == [ramp_id]
    assert row(sessions, aio_loop, ramp_id).status_reason.startswith(
        f"LATE_DEPOSIT: 100.000000 {token}"
    )
    late = metrics.registry.get_sample_value(
        "ramp_reviews_after_abort_total", {"reason": "LATE_DEPOSIT"}
    )
    assert late == 1
    clock.advance(days=1)
    aio_loop.run(proc.run_once())  # reported once: the watch is over
    assert aio_loop.run(error_reasons(sessions, ramp_id)) == ["TIMED_OUT", "LATE_DEPOSIT"]


def test_the_late_deposit_watch_reads_less_and_less_often_and_ends_on_time(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """With nothing ever arriving, a six-hour watch reads the balance a few dozen times, not
    every poll interval (21600 reads), and ends within its window with nothing recorded."""
    chains.late_deposit_watch = timedelta(hours=6)
    eph = ephemeral(node, pen="0")
    started = clock.now
    ramp_id = aio_loop.run(
        insert_at(
            sessions, sell_of(eph, clock), "timedOut", clock.now, "TIMED_OUT", WATCH_LATE_DEPOSIT
        )
    )
    proc = processor(
        sessions,
        direct,
        clock,
        {WATCH_LATE_DEPOSIT: WatchLateDeposit(chains)},
        policies={WATCH_LATE_DEPOSIT: RetryPolicy.for_watch(chains.late_deposit_watch)},
    )
    reads = 0
    while (current := row(sessions, aio_loop, ramp_id)).cleanup_phase is not None:
        assert reads < 80, "the watch never ended"
        assert current.next_attempt_at is not None
        clock.now = max(clock.now, current.next_attempt_at)
        aio_loop.run(proc.run_once())
        reads += 1
    assert 20 <= reads <= 60, reads
    assert timedelta(hours=6) <= clock.now - started <= timedelta(hours=6, minutes=1)
    assert (current.status, current.current_phase) == ("TIMED_OUT", "timedOut")
    assert aio_loop.run(error_reasons(sessions, ramp_id)) == []


def test_a_deposit_above_the_quote_is_recorded_and_the_ramp_goes_on(
    node: Node,
    chains: Chains,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectPool,
    clock: FakeClock,
    aio_loop: LoopThread,
) -> None:
    """The swap and the cleanup move the quoted amount only: what the user sent beyond it stays
    on the ephemeral, the user's. Nothing recorded it (the handler's note was dropped): now a
    USER_OVERPAID entry says how much and where, and the ramp goes on. An exact deposit records
    nothing."""
    token = TOKEN_FOR["USDC"]
    ramps = {}
    for name, extra in (("overpaid", "2.5"), ("exact", "0")):
        eph = ephemeral(node, pen="0")
        record = sell_of(eph, clock)
        ramps[name] = (
            aio_loop.run(insert_at(sessions, record, "awaitUserDeposit", clock.now)),
            eph,
        )
        amount = record.quote.input_amount + Decimal(extra)
        node.rpc("dev_mint", eph.ss58_address, token, str(amount))
        eventually(
            lambda e=eph, a=amount: (
                aio_loop.run(chains.pendulum.balance(e.ss58_address, token)) == a
            ),
            "the deposit",
        )
    proc = processor(
        sessions,
        direct,
        clock,
        {"awaitUserDeposit": AwaitUserDeposit(chains), "fundEphemeral": Parked()},
    )
    aio_loop.run(proc.run_once())
    overpaid, eph = ramps["overpaid"]
    exact, _ = ramps["exact"]
    for ramp_id in (overpaid, exact):
        # The recorded errors name why a ramp stayed (it failed once in CI, not reproduced).
        assert row(sessions, aio_loop, ramp_id).current_phase == "fundEphemeral", aio_loop.run(
            error_reasons(sessions, ramp_id)
        )
    assert aio_loop.run(error_reasons(sessions, exact)) == []
    assert aio_loop.run(error_reasons(sessions, overpaid)) == ["USER_OVERPAID"]

    async def finding() -> tuple[str, bool]:
        async with sessions.begin() as session:
            found = await session.scalar(
                select(RampErrorRow).where(RampErrorRow.ramp_id == overpaid)
            )
            assert found is not None
            return found.message, found.recoverable

    message, recoverable = aio_loop.run(finding())
    assert message.startswith(f"2.500000 {token} more than the quote's")
    assert eph.ss58_address in message and not recoverable
