"""The anchor and PIX partner stand-ins through the partner clients."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator
from decimal import Decimal

import httpx
import pytest
from aiohttp import web
from stellar_sdk import Asset, Keypair, TransactionBuilder

from devnet.anchor.app import AnchorConfig
from devnet.anchor.app import create_app as create_anchor
from devnet.pix.app import PixConfig, crc16_ccitt
from devnet.pix.app import create_app as create_pix
from ramp_service.chains.errors import RecoverableError, UnrecoverableError
from ramp_service.chains.partners import AnchorClient, PixClient
from tests.integration.devnet.conftest import Horizon
from tests.support.aio import LoopThread
from tests.support.http_apps import serve


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


@pytest.fixture
def pix(aio_loop: LoopThread) -> Iterator[tuple[PixClient, MintRecorder, str]]:
    recorder = MintRecorder(failures=2)
    chain_runner, chain_port = aio_loop.run(serve(recorder.app()))
    runner, port = aio_loop.run(
        serve(create_pix(PixConfig(f"http://127.0.0.1:{chain_port}/", 0.05)))
    )
    yield PixClient(f"http://127.0.0.1:{port}", timeout_s=5), recorder, f"http://127.0.0.1:{port}"
    aio_loop.run(runner.cleanup())
    aio_loop.run(chain_runner.cleanup())


def test_a_paid_pix_deposit_mints_brla_after_retries(
    pix: tuple[PixClient, MintRecorder, str], aio_loop: LoopThread
) -> None:
    client, recorder, url = pix
    destination = Keypair.random().public_key  # any address string; the chain validates it
    deposit = aio_loop.run(client.create_deposit(Decimal("150.50"), "529.982.247-25", destination))
    assert deposit.status == "PENDING" and deposit.amount == Decimal("150.50")
    code = deposit.copy_paste
    assert "br.gov.bcb.pix" in code and "5406150.50" in code
    assert int(code[-4:], 16) == crc16_ccitt(code[:-4].encode())
    assert httpx.post(f"{url}/dev/pix/{deposit.id}/pay", timeout=5).status_code == 200
    wait_for(lambda: aio_loop.run(client.deposit(deposit.id)).status == "MINTED")
    assert recorder.calls == [[destination, "BRLA", "150.50"]] * 3  # two failures, then success


def test_pix_rejections(pix: tuple[PixClient, MintRecorder, str], aio_loop: LoopThread) -> None:
    client, _, url = pix

    def reason(call: Awaitable[object]) -> str:
        with pytest.raises((RecoverableError, UnrecoverableError)) as exc:
            aio_loop.run(call)
        return f"{exc.value.reason}:{exc.value.recoverable}"

    assert (
        reason(client.create_deposit(Decimal("10"), "111.111.111-11", "5Dest"))
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
    assert reason(client.create_deposit(Decimal("10"), "529.982.247-25", "5Dest")) == (
        "PARTNER_UNAVAILABLE:True"
    )
    # A POST is not resent on a dropped response (aiohttp resends only idempotent methods).
    httpx.post(f"{url}/dev/faults", json={"drop_next": 1}, timeout=5)
    assert reason(client.create_deposit(Decimal("10"), "529.982.247-25", "5Dest")) == (
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

    app = web.Application()
    app.router.add_get("/v1/pix/deposits/{id}", not_json)
    runner, port = aio_loop.run(serve(app))
    confused = PixClient(f"http://127.0.0.1:{port}", timeout_s=2)
    assert reason(confused.deposit("x")) == "PARTNER_BAD_RESPONSE:True"
    for c in (client, slow, unreachable, confused):
        aio_loop.run(c.close())
    aio_loop.run(runner.cleanup())
