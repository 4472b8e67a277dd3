"""The chain phase handlers under the real processor: real PostgreSQL, the real substrate-interface
client against the Substrate stand-in, and races placed with the stand-in's own hooks (paused
blocks, `dev_blockAfter`) so each one happens every time, not now and then."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from stellar_sdk import Keypair as StellarKeypair
from substrateinterface import Keypair

from devnet.substrate.app import CHAIN_KEY, SubstrateConfig
from devnet.substrate.app import create_app as create_node
from devnet.substrate.chain import Chain
from ramp_service.chains.partners import AnchorClient, PixClient
from ramp_service.chains.pendulum import PendulumChain
from ramp_service.chains.stellar import StellarChain
from ramp_service.db.models import OperationRow, RampErrorRow, RampRow
from ramp_service.domain.outcomes import Outcome, RetryPolicy, Wait
from ramp_service.worker.engine import PhaseProcessor, ProcessorConfig
from ramp_service.worker.handlers import PhaseContext, PhaseHandler
from ramp_service.worker.handlers.phases import (
    Chains,
    FundingLock,
    SubmitPresignedPendulum,
)
from ramp_service.worker.loader import RecordLoader
from ramp_service.worker.metrics import WorkerMetrics
from ramp_service.worker.queue import WorkQueue
from service_kit.config import ServiceSettings
from service_kit.db import DirectPool, create_engine
from tests.integration.devnet.conftest import Node
from tests.support.aio import FakeClock, LoopThread
from tests.support.http_apps import serve
from tests.support.ramps import buy_record, insert_at

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
) -> PhaseProcessor:
    queue = WorkQueue(sessions, direct, "w1", timedelta(seconds=30), clock)
    return PhaseProcessor(
        queue,
        RecordLoader(direct),
        handlers,
        ProcessorConfig(default_policy=RetryPolicy()),
        WorkerMetrics(),
    )


def eventually(done: Callable[[], bool], what: str, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


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


def row(
    sessions: async_sessionmaker[AsyncSession], aio_loop: LoopThread, ramp_id: uuid.UUID
) -> RampRow:
    async def read() -> RampRow:
        async with sessions.begin() as session:
            found = await session.get(RampRow, ramp_id)
            assert found is not None
            return found

    return aio_loop.run(read())


def error_reasons(
    sessions: async_sessionmaker[AsyncSession], aio_loop: LoopThread, ramp_id: uuid.UUID
) -> list[str]:
    async def read() -> list[str]:
        async with sessions.begin() as session:
            found = await session.scalars(
                select(RampErrorRow.reason)
                .where(RampErrorRow.ramp_id == ramp_id)
                .order_by(RampErrorRow.id)
            )
            return list(found)

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
    record = buy_record(clock.now, eph.ss58_address, {"nablaApprove": (0, presign(chains, eph))})
    ramp_id = aio_loop.run(insert_at(sessions, record, "nablaApprove", clock.now))
    proc = processor(
        sessions,
        direct,
        clock,
        {"nablaApprove": SubmitPresignedPendulum(chains), "nablaSwap": Parked()},
    )
    node.rpc("dev_pauseBlocks")
    aio_loop.run(proc.run_once())  # sent; no block comes: the wait for inclusion times out
    assert error_reasons(sessions, aio_loop, ramp_id) == ["PENDULUM_TIMEOUT"]
    assert len(chain_of(node).ready) == 1
    clock.advance(minutes=5)
    aio_loop.run(proc.run_once())  # nonce unused: the same bytes again, already in the pool
    current = row(sessions, aio_loop, ramp_id)
    assert (current.status, current.current_phase, current.attempts) == (
        "RUNNING",
        "nablaApprove",
        1,
    )
    assert error_reasons(sessions, aio_loop, ramp_id) == ["PENDULUM_TIMEOUT"]
    node.rpc("dev_resumeBlocks")
    eventually(lambda: not chain_of(node).ready, "the block with the extrinsic")
    clock.advance(minutes=5)
    aio_loop.run(proc.run_once())
    assert row(sessions, aio_loop, ramp_id).current_phase == "nablaSwap"
    assert journal_state(sessions, aio_loop, ramp_id, "submit") == "confirmed"
