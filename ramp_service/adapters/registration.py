"""The chain and partner work of register and start, composed from the adapters.

For each corridor, register builds every transaction the ephemerals must presign and, for SELL,
opens the anchor withdrawal that names the Stellar account and memo to pay. A BUY's PIX charge
is opened at start (`open_payment`), not at register: a ramp that is never started then has no
charge anyone could pay, and the charge's expiry counts from the moment the ramp is watched.
Its txid derives from the ramp id, so every start of a ramp (a retry, a concurrent one) gets the
one charge. Amounts come from the consumed quote: the swap takes the input minus
fees, its presigned minimum output is the quoted output (the hard floor; the processor checks the
live pool against it before submitting), the bridge redeem / XCM transfer moves exactly the quoted
output, and cleanup sends the fees left on the ephemeral to the platform's funding account.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from stellar_sdk import Asset, StrKey
from stellar_sdk import Keypair as StellarKeypair
from substrateinterface import Keypair as SubstrateKeypair
from substrateinterface.utils.ss58 import ss58_decode

from ramp_service.chains.errors import ChainError
from ramp_service.chains.partners import AnchorClient, PixClient
from ramp_service.chains.pendulum import CONNECTION_ERRORS as PENDULUM_CONNECTION_ERRORS
from ramp_service.chains.pendulum import SS58_FORMAT, IssuedCall, PendulumChain
from ramp_service.chains.stellar import StellarChain
from ramp_service.config import WARM_CLIENTS, RampSettings
from ramp_service.domain.errors import ChainUnavailable
from ramp_service.domain.flows import Network
from ramp_service.domain.ramp import IssuedTx, PresignedTx, RampRecord, SigningAccount
from ramp_service.ports import Prepared, RegistrationPlan

# Fiat currency → the token the pools and bridge move it as.
TOKEN_FOR = {"EUR": "EURC", "ARS": "ARST", "BRL": "BRLA", "USDC": "USDC"}
VALIDITY_S = 7 * 24 * 3600  # presigned Stellar transactions stay valid for a week
NO_DEADLINE = 2**63 - 1


class ChainRegistration:
    """`RegistrationChains` over the real adapters."""

    def __init__(
        self,
        stellar: StellarChain,
        pendulum: PendulumChain,
        anchor: AnchorClient,
        pix: PixClient,
        stellar_funding: str,
        pendulum_funding: str,
        pix_payment_window: timedelta = timedelta(hours=1),
        warm_clients: int = WARM_CLIENTS,
    ) -> None:
        self._warm_clients = warm_clients
        self._stellar = stellar
        self._pendulum = pendulum
        self._anchor = anchor
        self._pix = pix
        self._stellar_funding = stellar_funding
        self._pendulum_funding = pendulum_funding
        self._pix_payment_window = pix_payment_window

    def is_valid_address(self, network: Network, address: str) -> bool:
        """Stellar: an ed25519 public key (G...). Pendulum: an account in Pendulum's SS58
        format (56) with a valid checksum: one spelling per key, so the uniqueness of
        ephemerals holds, and what start and the chain calls will decode."""
        if network is Network.STELLAR:
            return bool(StrKey.is_valid_ed25519_public_key(address))
        return is_substrate_account(address, SS58_FORMAT)

    def is_valid_destination(self, to_network: str, address: str) -> bool:
        """Where a BUY pays out: AssetHub takes any SS58 spelling of a 32-byte account (wallets
        show Polkadot's format 0 or the generic 42)."""
        return to_network != "assethub" or is_substrate_account(address, None)

    async def why_not_fresh(self, account: SigningAccount) -> str | None:
        """A Stellar ephemeral must not exist; a Pendulum one must have nonce 0 and no PEN."""
        try:
            if account.network is Network.STELLAR:
                state = await self._stellar.account(account.address)
                return "the account already exists on Stellar" if state is not None else None
            nonce, pen = await self._pendulum.freshness(account.address)
            if nonce != 0:
                return "the account has already sent transactions on Pendulum"
            if pen != 0:
                return "the account already holds PEN"
            return None
        except ChainError as exc:
            raise ChainUnavailable(f"{account.network.value}: {exc.reason}") from exc

    async def prepare(self, plan: RegistrationPlan) -> Prepared:
        """Issue the corridor's transactions and open the partner side."""
        if not self._stellar_funding or not self._pendulum_funding:
            raise ChainUnavailable("funding accounts are not configured")
        try:
            if plan.quote.ramp_type == "SELL":
                return await self._prepare_sell(plan)
            return await self._prepare_buy(plan)
        except ChainError as exc:
            raise ChainUnavailable(f"{exc.reason}: {exc.message}") from exc

    async def _pendulum_txs(
        self, signer: str, phases: list[str], build: Callable[[], list[Any]]
    ) -> list[IssuedTx]:
        """Compose the calls and their signing payloads off the event loop (the client blocks)."""

        def work() -> list[IssuedTx]:
            txs = []
            for nonce, (phase, call) in enumerate(zip(phases, build(), strict=True)):
                issued = self._pendulum.issue(call, signer, nonce)
                txs.append(
                    IssuedTx(
                        phase,
                        Network.PENDULUM,
                        signer,
                        nonce,
                        issued.signing_payload_hex,
                        {"call": issued.call_hex},
                    )
                )
            return txs

        return await self._pendulum.off_loop(work)

    async def _prepare_sell(self, plan: RegistrationPlan) -> Prepared:
        q = plan.quote
        token_in, token_out = TOKEN_FOR[q.input_currency], TOKEN_FOR[q.output_currency]
        stellar = plan.accounts[Network.STELLAR].address
        pendulum = plan.accounts[Network.PENDULUM].address
        withdrawal = await self._anchor.start_withdrawal(
            token_out, q.output_amount, plan.additional_data.destination
        )
        asset = Asset(token_out, withdrawal.account)
        net = q.input_amount - q.fee_total
        stellar_key = "0x" + StrKey.decode_ed25519_public_key(stellar).hex()
        p = self._pendulum
        txs = await self._pendulum_txs(
            pendulum,
            ["nablaApprove", "nablaSwap", "spacewalkRedeem", "pendulumCleanup"],
            lambda: [
                p.swap_approve(token_in, net),
                p.swap(token_in, token_out, net, q.output_amount, pendulum, NO_DEADLINE),
                p.bridge_redeem(token_out, q.output_amount, stellar_key),
                p.token_transfer(self._pendulum_funding, token_in, q.fee_total),
            ],
        )
        until = int(time.time()) + VALIDITY_S
        setup = self._stellar.build_ephemeral_setup(stellar, [asset], until)
        payment = self._stellar.build_payment(
            stellar, 1, withdrawal.account, asset, q.output_amount, withdrawal.memo, until
        )
        merge = self._stellar.build_merge(stellar, 2, self._stellar_funding, [asset], until)
        for phase, xdr in (
            ("fundEphemeral", setup),
            ("stellarPayment", payment),
            ("stellarCleanup", merge),
        ):
            txs.append(
                IssuedTx(phase, Network.STELLAR, stellar, self._stellar.sequence_of(xdr), xdr)
            )
        partner = {
            "anchor_withdrawal_id": withdrawal.id,
            "anchor_account": withdrawal.account,
            "anchor_memo": withdrawal.memo,
            "stellar_asset": f"{token_out}:{withdrawal.account}",
        }
        return Prepared(txs, partner)

    async def _prepare_buy(self, plan: RegistrationPlan) -> Prepared:
        q = plan.quote
        token_in, token_out = TOKEN_FOR[q.input_currency], TOKEN_FOR[q.output_currency]
        pendulum = plan.accounts[Network.PENDULUM].address
        net = q.input_amount - q.fee_total
        p = self._pendulum
        txs = await self._pendulum_txs(
            pendulum,
            ["nablaApprove", "nablaSwap", "pendulumToAssethub", "pendulumCleanup"],
            lambda: [
                p.swap_approve(token_in, net),
                p.swap(token_in, token_out, net, q.output_amount, pendulum, NO_DEADLINE),
                p.xcm_to_assethub(token_out, q.output_amount, plan.additional_data.destination),
                p.token_transfer(self._pendulum_funding, token_in, q.fee_total),
            ],
        )
        return Prepared(txs)

    async def open_payment(self, record: RampRecord, now: datetime) -> dict[str, str]:
        """BUY: the ramp's PIX charge (txid from the ramp id), payable until `now` plus the
        payment window; a repeated start gets the charge (and expiry) the first one made. Its
        facts, stored with the start. SELL: nothing (the anchor side is opened at register)."""
        if record.quote.ramp_type != "BUY":
            return {}
        pendulum = next(a.address for a in record.accounts if a.network is Network.PENDULUM)
        try:
            deposit = await self._pix.create_deposit(
                pix_txid(record.id),
                record.quote.input_amount,
                record.additional_data.tax_id,
                pendulum,
                now + self._pix_payment_window,
            )
        except ChainError as exc:
            raise ChainUnavailable(f"{exc.reason}: {exc.message}") from exc
        if deposit.expires_at is None:  # the worker times the ramp out by it: store nothing
            raise ChainUnavailable(f"PARTNER_BAD_RESPONSE: PIX charge {deposit.id} has no expiry")
        return {
            "pix_deposit_id": deposit.id,
            "pix_txid": deposit.txid,
            "pix_copy_paste": deposit.copy_paste,
            "pix_expires_at": deposit.expires_at.isoformat(),
        }

    async def withdraw_payment(self, record: RampRecord) -> bool:
        """Cancel the ramp's PIX charge, if it has one; False when it was paid first."""
        deposit_id = record.partner_data.get("pix_deposit_id")
        if not deposit_id:
            return True
        try:
            deposit = await self._pix.cancel_deposit(deposit_id)
        except ChainError as exc:
            raise ChainUnavailable(f"{exc.reason}: {exc.message}") from exc
        return not deposit.paid

    async def warm_up(self) -> None:
        """Connect to Pendulum and load its runtime ahead of the first register (see
        PendulumChain.warm_up): as many pooled clients as register's chain calls run at once."""
        await asyncio.to_thread(self._pendulum.warm_up, self._warm_clients)

    async def close(self) -> None:
        """Close the Pendulum clients and the Horizon and partners' pooled connections."""
        await asyncio.to_thread(self._pendulum.close)
        await self._stellar.close()
        await self._anchor.close()
        await self._pix.close()

    def verify_presigned(self, issued: IssuedTx, presigned: PresignedTx) -> str:
        """Check a presigned transaction against the issued one; return what to submit.

        Pendulum verification needs the runtime's metadata: a process that could not load it
        (the node was down at start and still is) answers CHAIN_UNAVAILABLE, as register does,
        not an internal error."""
        if issued.network is Network.STELLAR:
            return self._stellar.verify_presigned(issued.tx_data, presigned.tx_data, issued.signer)
        call = IssuedCall(issued.meta["call"], issued.signer, issued.nonce, issued.tx_data)
        try:
            signed = (
                self._pendulum.assemble(call, presigned.signature)
                if presigned.signature
                else presigned.tx_data
            )
            return self._pendulum.verify_presigned(call, signed)
        except PENDULUM_CONNECTION_ERRORS as exc:
            raise ChainUnavailable(
                f"pendulum: PENDULUM_UNREACHABLE ({type(exc).__name__})"
            ) from exc
        except ChainError as exc:
            raise ChainUnavailable(f"pendulum: {exc.reason}") from exc


@dataclass(frozen=True)
class Adapters:
    """The chain and partner adapters for one configuration (the service and the worker)."""

    stellar: StellarChain
    pendulum: PendulumChain
    anchor: AnchorClient
    pix: PixClient
    stellar_funding: StellarKeypair | None
    pendulum_funding: SubstrateKeypair | None


def pix_txid(ramp_id: uuid.UUID) -> str:
    """The txid of a ramp's PIX charge: PIX lets the receiver choose it (26 to 35 letters and
    digits), and one per ramp makes creating the charge idempotent."""
    return ramp_id.hex


def is_substrate_account(address: str, ss58_format: int | None) -> bool:
    """An SS58 address (in `ss58_format`, if given) of a 32-byte account: not hex, which
    `ss58_decode` passes through unchecked, and not a short account index."""
    if not address or address.startswith("0x"):
        return False
    try:
        return len(ss58_decode(address, valid_ss58_format=ss58_format)) == 64
    except (ValueError, TypeError, IndexError):
        return False


def funding_keys(settings: RampSettings) -> tuple[StellarKeypair | None, SubstrateKeypair | None]:
    """The funding accounts' keys, if set. Surrounding whitespace (a Secret made from a file
    keeps its newline) is dropped; an unusable value fails without the value: the SDKs' own
    errors quote the secret, and a traceback would print it."""
    stellar_secret = settings.stellar_funding_secret.get_secret_value().strip()
    pendulum_seed = settings.pendulum_funding_seed.get_secret_value().strip()
    stellar = pendulum = None
    try:
        stellar = StellarKeypair.from_secret(stellar_secret) if stellar_secret else None
    except Exception:
        raise ValueError("STELLAR_FUNDING_SECRET is not a Stellar secret seed (S...)") from None
    try:
        if pendulum_seed:
            pendulum = SubstrateKeypair.create_from_uri(pendulum_seed, ss58_format=SS58_FORMAT)
    except Exception:
        raise ValueError("PENDULUM_FUNDING_SEED is not a seed, mnemonic or URI") from None
    return stellar, pendulum


def funding_accounts(settings: RampSettings) -> tuple[str, str]:
    """The funding accounts' public addresses (Stellar, Pendulum), '' where unknown: the ones
    configured, else derived from the secrets when those are set (local runs). The API needs
    no more, so a deployment gives it only these and keeps the secrets for the worker. Both
    given and not matching is a configuration error."""
    stellar_key, pendulum_key = funding_keys(settings)
    stellar = settings.stellar_funding_account.strip()
    pendulum = settings.pendulum_funding_account.strip()
    if stellar and not StrKey.is_valid_ed25519_public_key(stellar):
        raise ValueError("STELLAR_FUNDING_ACCOUNT is not a Stellar public key (G...)")
    if pendulum and not is_substrate_account(pendulum, SS58_FORMAT):
        raise ValueError("PENDULUM_FUNDING_ACCOUNT is not a Pendulum SS58 address")
    if stellar and stellar_key and stellar_key.public_key != stellar:
        raise ValueError("STELLAR_FUNDING_ACCOUNT is not STELLAR_FUNDING_SECRET's account")
    if pendulum and pendulum_key and pendulum_key.ss58_address != pendulum:
        raise ValueError("PENDULUM_FUNDING_ACCOUNT is not PENDULUM_FUNDING_SEED's account")
    return (
        stellar or (stellar_key.public_key if stellar_key else ""),
        pendulum or (pendulum_key.ss58_address if pendulum_key else ""),
    )


def _chains_and_partners(
    settings: RampSettings,
) -> tuple[StellarChain, PendulumChain, AnchorClient, PixClient]:
    timeout = settings.chain_timeout_s
    return (
        StellarChain(settings.horizon_url, settings.stellar_network_passphrase, timeout),
        PendulumChain(settings.substrate_url, timeout),
        AnchorClient(settings.anchor_url, timeout),
        PixClient(settings.pix_url, timeout),
    )


def build_adapters(settings: RampSettings) -> Adapters:
    """The adapters for `settings`' networks and partners, and the funding keys if set (the
    worker's: it signs)."""
    return Adapters(*_chains_and_partners(settings), *funding_keys(settings))


def build_registration_chains(settings: RampSettings) -> ChainRegistration:
    """Registration over the adapters for `settings`: public funding addresses only."""
    return ChainRegistration(
        *_chains_and_partners(settings),
        *funding_accounts(settings),
        timedelta(seconds=settings.pix_payment_window_s),
        settings.pendulum_warm_clients,
    )
