"""The client path of both corridors up to a RUNNING ramp, against the devnet: quote →
register → sign exactly as a browser would → start; and the rejections on the way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import grpc
import pytest
from stellar_sdk import Keypair as StellarKeypair
from stellar_sdk import TransactionEnvelope
from substrateinterface import Keypair as SubstrateKeypair

from devnet.anchor.app import AnchorConfig
from devnet.anchor.app import create_app as create_anchor
from devnet.pix.app import PixConfig
from devnet.pix.app import create_app as create_pix
from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from pendulumpay.ramp.v1 import ramp_pb2, ramp_pb2_grpc
from service_kit.grpc_server import RunningServer
from tests.integration.conftest import start_ramp_server
from tests.integration.devnet.conftest import Horizon, Node
from tests.support.aio import FakeClock, LoopThread
from tests.support.grpc_errors import failure
from tests.support.http_apps import serve
from tests.support.quotes import sell_request


@dataclass
class Stack:
    quotes: quote_pb2_grpc.QuoteServiceStub
    ramps: ramp_pb2_grpc.RampServiceStub
    passphrase: str


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
    pix_runner, pix_port = aio_loop.run(serve(create_pix(PixConfig(node.http_url))))
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
        stellar_funding_secret=funding.secret,
        pendulum_funding_seed="//Funding",
    )
    with (
        grpc.insecure_channel(f"127.0.0.1:{quote_server.port}") as qc,
        grpc.insecure_channel(f"127.0.0.1:{ramp.port}") as rc,
    ):
        yield Stack(
            quote_pb2_grpc.QuoteServiceStub(qc),
            ramp_pb2_grpc.RampServiceStub(rc),
            horizon.config.network_passphrase,
        )
    aio_loop.run(ramp.stop(0))
    aio_loop.run(pix_runner.cleanup())
    aio_loop.run(anchor_runner.cleanup())


def ephemeral_pendulum() -> SubstrateKeypair:
    return SubstrateKeypair.create_from_uri(f"//eph-{uuid.uuid4().hex}", ss58_format=56)


def sign_all(
    ramp: ramp_pb2.Ramp, keys: dict[str, object], passphrase: str
) -> list[ramp_pb2.PresignedTx]:
    """What the browser does with each unsigned transaction."""
    signed = []
    for tx in ramp.unsigned_txs:
        presigned = ramp_pb2.PresignedTx(
            phase=tx.phase, network=tx.network, signer=tx.signer, nonce=tx.nonce
        )
        if tx.network == "stellar":
            envelope = TransactionEnvelope.from_xdr(tx.tx_data, passphrase)
            envelope.sign(keys["stellar"])  # type: ignore[arg-type]
            presigned.tx_data = envelope.to_xdr()
        else:
            signature = keys["pendulum"].sign(bytes.fromhex(tx.tx_data[2:]))  # type: ignore[attr-defined]
            presigned.signature = "0x" + signature.hex()
        signed.append(presigned)
    return signed


def test_sell_corridor_register_sign_start(stack: Stack) -> None:
    quote = stack.quotes.CreateQuote(sell_request("100"), timeout=5)
    stellar, pendulum = StellarKeypair.random(), ephemeral_pendulum()
    request = ramp_pb2.RegisterRampRequest(
        quote_id=quote.id,
        signing_accounts=[
            ramp_pb2.SigningAccount(network="stellar", address=stellar.public_key),
            ramp_pb2.SigningAccount(network="pendulum", address=pendulum.ss58_address),
        ],
        additional_data=ramp_pb2.AdditionalData(
            wallet_address=pendulum.ss58_address, destination="DE89370400440532013000"
        ),
    )
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


def test_buy_corridor_register_sign_start(stack: Stack) -> None:
    quote = stack.quotes.CreateQuote(
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
    pendulum = ephemeral_pendulum()
    destination = ephemeral_pendulum().ss58_address
    ramp = stack.ramps.RegisterRamp(
        ramp_pb2.RegisterRampRequest(
            quote_id=quote.id,
            signing_accounts=[
                ramp_pb2.SigningAccount(network="pendulum", address=pendulum.ss58_address)
            ],
            additional_data=ramp_pb2.AdditionalData(
                wallet_address=destination, destination=destination, tax_id="529.982.247-25"
            ),
        ),
        timeout=30,
    )
    assert ramp.deposit_instructions.pix_copy_paste.startswith("000201")
    assert ramp.deposit_instructions.amount == "500.00"
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
