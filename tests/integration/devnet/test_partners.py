"""The anchor and PIX partner stand-ins through the partner clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from aiohttp import web
from stellar_sdk import Asset, Keypair, TransactionBuilder

from devnet.anchor.app import AnchorConfig
from devnet.anchor.app import create_app as create_anchor
from devnet.pix.app import PixConfig, crc16_ccitt
from devnet.pix.app import create_app as create_pix
from ramp_service.adapters.registration import ChainRegistration
from ramp_service.chains.errors import RecoverableError, UnrecoverableError
from ramp_service.chains.partners import AnchorClient, PixClient, PixDeposit
from ramp_service.chains.pendulum import PendulumChain
from ramp_service.chains.stellar import StellarChain
from ramp_service.domain.errors import ChainUnavailable
from tests.integration.devnet.conftest import Horizon
from tests.support.aio import FakeClock, LoopThread
from tests.support.http_apps import serve
from tests.support.ramps import buy_record


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_the_anchor_pays_out_when_the_memo_payment_arrives(
    horizon: Horizon, aio_loop: LoopThread
) -> None:
    issuer, user = horizon.fund(), horizon.fund()
    eurc = Asset("EURC", issuer.public_key)
    trust = (
        TransactionBuilder(
            horizon.server.load_account(user.public_key), horizon.config.network_passphrase
        )
        .append_change_trust_op(eurc)
        .set_timeout(60)
        .build()
    )
    trust.sign(user)
    horizon.server.submit_transaction(trust)
    mint = (
        TransactionBuilder(
            horizon.server.load_account(issuer.public_key), horizon.config.network_passphrase
        )
        .append_payment_op(user.public_key, eurc, "200")
        .set_timeout(60)
        .build()
    )
    mint.sign(issuer)
    horizon.server.submit_transaction(mint)
    runner, port = aio_loop.run(serve(create_anchor(AnchorConfig(horizon.url, issuer.public_key))))
    anchor = AnchorClient(f"http://127.0.0.1:{port}", timeout_s=5)
    try:
        withdrawal = aio_loop.run(
            anchor.start_withdrawal("EURC", Decimal("40.00"), "DE89370400440532013000")
        )
        assert (
            withdrawal.status == "pending_user_transfer_start"
            and withdrawal.account == issuer.public_key
        )

        def pay(amount: str, memo: str) -> str:
            tx = (
                TransactionBuilder(
                    horizon.server.load_account(user.public_key), horizon.config.network_passphrase
                )
                .append_payment_op(issuer.public_key, eurc, amount)
                .add_text_memo(memo)
                .set_timeout(60)
                .build()
            )
            tx.sign(user)
            return str(horizon.server.submit_transaction(tx)["hash"])

        pay("40.00", "not-the-memo")
        pay("39.99", withdrawal.memo)  # short: no payout
        time.sleep(0.6)
        assert (
            aio_loop.run(anchor.withdrawal(withdrawal.id)).status == "pending_user_transfer_start"
        )
        paid = pay("40.00", withdrawal.memo)
        wait_for(lambda: aio_loop.run(anchor.withdrawal(withdrawal.id)).status == "completed")
        assert aio_loop.run(anchor.withdrawal(withdrawal.id)).stellar_transaction_id == paid
        with pytest.raises(UnrecoverableError):
            aio_loop.run(anchor.start_withdrawal("DOGE", Decimal(1), "x"))
        httpx.post(
            f"http://127.0.0.1:{port}/dev/faults",
            json={"fail_next": 1, "fail_status": 502},
            timeout=5,
        )
        with pytest.raises(RecoverableError):
            aio_loop.run(anchor.withdrawal(withdrawal.id))
    finally:
        aio_loop.run(runner.cleanup())


class MintRecorder:
    """Speaks JSON-RPC like the Substrate devnet's dev_mint, failing the first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[list[str]] = []

    def app(self) -> web.Application:
        async def rpc(request: web.Request) -> web.Response:
            body = await request.json()
            self.calls.append(body["params"])
            if self.failures > 0:
                self.failures -= 1
                return web.json_response(
                    {
                        "jsonrpc": "2.0",
                        "id": body["id"],
                        "error": {"code": -32000, "message": "node busy"},
                    }
                )
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": "0x01"})

        app = web.Application()
        app.router.add_post("/", rpc)
        return app


CPF = "529.982.247-25"


@pytest.fixture
def pix(aio_loop: LoopThread, clock: FakeClock) -> Iterator[tuple[PixClient, MintRecorder, str]]:
    """The PIX stand-in on the test's clock, minting through a recorder that fails twice."""
    recorder = MintRecorder(failures=2)
    chain_runner, chain_port = aio_loop.run(serve(recorder.app()))
    runner, port = aio_loop.run(
        serve(create_pix(PixConfig(f"http://127.0.0.1:{chain_port}/", 0.05, clock)))
    )
    yield PixClient(f"http://127.0.0.1:{port}", timeout_s=5), recorder, f"http://127.0.0.1:{port}"
    aio_loop.run(runner.cleanup())
    aio_loop.run(chain_runner.cleanup())


def txid() -> str:
    return uuid.uuid4().hex


def in_an_hour(clock: FakeClock) -> datetime:
    return clock.now + timedelta(hours=1)


def test_a_paid_pix_deposit_mints_brla_after_retries(
    pix: tuple[PixClient, MintRecorder, str], aio_loop: LoopThread, clock: FakeClock
) -> None:
    client, recorder, url = pix
    destination = Keypair.random().public_key  # any address string; the chain validates it
    deposit = aio_loop.run(
        client.create_deposit(txid(), Decimal("150.50"), CPF, destination, in_an_hour(clock))
    )
    assert deposit.status == "PENDING" and deposit.amount == Decimal("150.50")
    code = deposit.copy_paste
    assert "br.gov.bcb.pix" in code and "5406150.50" in code
    assert int(code[-4:], 16) == crc16_ccitt(code[:-4].encode())
    assert httpx.post(f"{url}/dev/pix/{deposit.id}/pay", timeout=5).status_code == 200
    wait_for(lambda: aio_loop.run(client.deposit(deposit.id)).status == "MINTED")
    assert recorder.calls == [[destination, "BRLA", "150.50"]] * 3  # two failures, then success


def test_pix_rejections(
    pix: tuple[PixClient, MintRecorder, str], aio_loop: LoopThread, clock: FakeClock
) -> None:
    client, _, url = pix
    until = in_an_hour(clock)

    def reason(call: Awaitable[object]) -> str:
        with pytest.raises((RecoverableError, UnrecoverableError)) as exc:
            aio_loop.run(call)
        return f"{exc.value.reason}:{exc.value.recoverable}"

    assert (
        reason(client.create_deposit(txid(), Decimal("10"), "111.111.111-11", "5Dest", until))
        == "PARTNER_REJECTED:False"
    )
    assert reason(client.deposit("nope")) == "PARTNER_REJECTED:False"
    # Stored with the ramp and shown by the public errors endpoint: the call's method and
    # path, never the partner's address, a query string or its response body.
    with pytest.raises(UnrecoverableError) as refused:
        aio_loop.run(client.deposit("nope?token=s3cret"))
    assert refused.value.message.startswith("GET /") and "HTTP 404" in refused.value.message
    assert "127.0.0.1" not in refused.value.message and "s3cret" not in refused.value.message
    assert "{" not in refused.value.message  # no body
    httpx.post(f"{url}/dev/faults", json={"fail_next": 1, "fail_status": 503}, timeout=5)
    assert reason(client.create_deposit(txid(), Decimal("10"), CPF, "5Dest", until)) == (
        "PARTNER_UNAVAILABLE:True"
    )
    # A POST is not resent on a dropped response (aiohttp resends only idempotent methods).
    httpx.post(f"{url}/dev/faults", json={"drop_next": 1}, timeout=5)
    assert reason(client.create_deposit(txid(), Decimal("10"), CPF, "5Dest", until)) == (
        "PARTNER_UNREACHABLE:True"
    )
    slow = PixClient(url, timeout_s=0.2)
    httpx.post(f"{url}/dev/faults", json={"delay_ms": 1000}, timeout=5)
    assert reason(slow.deposit("nope")) == "PARTNER_TIMEOUT:True"
    httpx.delete(f"{url}/dev/faults", timeout=5)
    unreachable = PixClient("http://127.0.0.1:1", timeout_s=1)
    assert reason(unreachable.deposit("x")) == "PARTNER_UNREACHABLE:True"

    async def not_json(_: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    # JSON of another shape (a field missing, a number that is none): the partner's fault,
    # retried, not INTERNAL (a KeyError or decimal's InvalidOperation escaped before).
    shapes = {
        "x": {"id": "x", "status": "pending"},  # no amount, no code
        "y": {"id": "y", "amount": "ten", "pix_copy_paste": "c", "status": "pending"},
    }

    async def reshaped(request: web.Request) -> web.Response:
        return web.json_response(shapes[request.match_info["id"]])

    async def withdrawal(_: web.Request) -> web.Response:
        return web.json_response({"transaction": {"id": "w1", "status": "pending"}})

    app = web.Application()
    app.router.add_get("/v1/pix/deposits/{id}", reshaped)
    app.router.add_get("/v1/pix/deposits/html/{id}", not_json)
    app.router.add_get("/sep24/transaction", withdrawal)
    runner, port = aio_loop.run(serve(app))
    confused = PixClient(f"http://127.0.0.1:{port}", timeout_s=2)
    assert reason(confused.deposit("x")) == "PARTNER_BAD_RESPONSE:True"
    assert reason(confused.deposit("y")) == "PARTNER_BAD_RESPONSE:True"
    assert reason(confused.deposit("html/z")) == "PARTNER_BAD_RESPONSE:True"
    anchor = AnchorClient(f"http://127.0.0.1:{port}", timeout_s=2)
    assert reason(anchor.withdrawal("w1")) == "PARTNER_BAD_RESPONSE:True"
    for c in (client, slow, unreachable, confused, anchor):
        aio_loop.run(c.close())
    aio_loop.run(runner.cleanup())


def test_a_pix_charge_is_created_once_per_txid(
    pix: tuple[PixClient, MintRecorder, str], aio_loop: LoopThread, clock: FakeClock
) -> None:
    """The receiver chooses the txid: a repeated create (a retry after a dropped answer, a later
    one asking for another expiry) gets the first charge back; other terms are refused."""
    client, _, url = pix
    charge, until = txid(), in_an_hour(clock)
    httpx.post(f"{url}/dev/faults", json={"drop_next": 1}, timeout=5).raise_for_status()
    with pytest.raises(RecoverableError):  # created, but the answer was lost
        aio_loop.run(client.create_deposit(charge, Decimal("10"), CPF, "5Dest", until))
    first = aio_loop.run(client.create_deposit(charge, Decimal("10"), CPF, "5Dest", until))
    assert (first.txid, first.expires_at, first.status) == (charge, until, "PENDING")
    later = until + timedelta(minutes=5)
    again = aio_loop.run(client.create_deposit(charge, Decimal("10"), CPF, "5Dest", later))
    assert again == first  # the first charge, with its own expiry
    raw = {"txid": charge, "amount": "10.00", "tax_id": CPF, "destination": "5Dest"}
    answer = httpx.post(f"{url}/v1/pix/deposits", json=raw, timeout=5)
    assert (answer.status_code, answer.json()) == (409, {"error": "txid_conflict"})
    with pytest.raises(UnrecoverableError) as other:
        aio_loop.run(client.create_deposit(charge, Decimal("11"), CPF, "5Dest", until))
    assert other.value.reason == "PIX_TXID_CONFLICT"
    same = {**raw, "expires_at": until.isoformat().replace("+00:00", "Z")}
    assert httpx.post(f"{url}/v1/pix/deposits", json=same, timeout=5).status_code == 200
    for bad in ({**same, "txid": "short"}, {**same, "expires_at": "2026-11-24T13:00:00+01:00"}):
        assert httpx.post(f"{url}/v1/pix/deposits", json=bad, timeout=5).status_code == 400


def test_a_pix_charge_past_its_expiry_reads_expired_and_cannot_be_paid(
    pix: tuple[PixClient, MintRecorder, str], aio_loop: LoopThread, clock: FakeClock
) -> None:
    client, recorder, url = pix
    deposit = aio_loop.run(
        client.create_deposit(txid(), Decimal("10"), CPF, "5Dest", in_an_hour(clock))
    )
    clock.advance(minutes=59, seconds=59)
    assert aio_loop.run(client.deposit(deposit.id)).status == "PENDING"
    clock.advance(seconds=1)
    assert aio_loop.run(client.deposit(deposit.id)).status == "EXPIRED"
    paid = httpx.post(f"{url}/dev/pix/{deposit.id}/pay", timeout=5)
    assert (paid.status_code, paid.json()) == (409, {"error": "deposit_expired"})
    assert aio_loop.run(client.cancel_deposit(deposit.id)).status == "EXPIRED"  # stays so
    assert recorder.calls == []  # nothing minted
    # The partner's own clock can be moved from outside (tests of real processes).
    later = aio_loop.run(
        client.create_deposit(txid(), Decimal("10"), CPF, "5Dest", in_an_hour(clock))
    )
    httpx.post(f"{url}/dev/clock", json={"advance_s": 3600}, timeout=5).raise_for_status()
    assert aio_loop.run(client.deposit(later.id)).status == "EXPIRED"


def test_a_cancelled_pix_charge_cannot_be_paid_and_a_paid_one_cannot_be_cancelled(
    pix: tuple[PixClient, MintRecorder, str], aio_loop: LoopThread, clock: FakeClock
) -> None:
    client, _, url = pix

    def charge() -> PixDeposit:
        return aio_loop.run(
            client.create_deposit(txid(), Decimal("10"), CPF, "5Dest", in_an_hour(clock))
        )

    unpaid = charge()
    assert aio_loop.run(client.cancel_deposit(unpaid.id)).status == "CANCELLED"
    assert aio_loop.run(client.cancel_deposit(unpaid.id)).status == "CANCELLED"  # repeatable
    paid = httpx.post(f"{url}/dev/pix/{unpaid.id}/pay", timeout=5)
    assert (paid.status_code, paid.json()) == (409, {"error": "deposit_cancelled"})
    clock.advance(hours=2)
    assert aio_loop.run(client.deposit(unpaid.id)).status == "CANCELLED"  # not EXPIRED

    clock.advance(hours=-2)
    settled = charge()
    httpx.post(f"{url}/dev/pix/{settled.id}/pay", timeout=5).raise_for_status()
    refused = httpx.post(f"{url}/v1/pix/deposits/{settled.id}/cancel", timeout=5)
    assert (refused.status_code, refused.json()) == (409, {"error": "deposit_paid"})
    # The client reads a paid charge back instead of failing: the payment came first.
    assert aio_loop.run(client.cancel_deposit(settled.id)).paid
    with pytest.raises(UnrecoverableError):
        aio_loop.run(client.cancel_deposit("nope"))


def test_a_pix_charge_without_an_expiry_starts_no_ramp(
    aio_loop: LoopThread, clock: FakeClock
) -> None:
    """A partner that answers a create without the charge's expiry: start stores nothing
    (UNAVAILABLE), since the worker could never time that ramp out on the partner's word."""

    async def forgetful(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                **body,
                "id": "d-1",
                "status": "PENDING",
                "pix_copy_paste": "000201",
                "expires_at": None,
            },
            status=201,
        )

    app = web.Application()
    app.router.add_post("/v1/pix/deposits", forgetful)
    runner, port = aio_loop.run(serve(app))
    unused = "http://127.0.0.1:1"
    pix = PixClient(f"http://127.0.0.1:{port}", timeout_s=2)
    chains = ChainRegistration(
        StellarChain(unused, "unused"), PendulumChain(unused), AnchorClient(unused), pix, "", ""
    )
    record = buy_record(clock.now, Keypair.random().public_key, {})
    record = replace(record, additional_data=replace(record.additional_data, tax_id=CPF))
    with pytest.raises(ChainUnavailable) as refused:
        aio_loop.run(chains.open_payment(record, clock.now))
    assert "PARTNER_BAD_RESPONSE" in str(refused.value)
    aio_loop.run(pix.close())
    aio_loop.run(runner.cleanup())
