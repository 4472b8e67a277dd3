"""The handlers of every phase of both corridors, over the chain and partner adapters.

Every side effect follows the same discipline (see `journal.py`):

1. read the journal entry of the operation;
2. if there is one, reconcile: look the transaction up (Stellar by hash, Pendulum by hash or by
   signer+nonce since the block it was first sent at) and only go on when it is certain the
   recorded transaction was not applied and either can still apply (then the *same* bytes are
   sent again) or never can (then, for server-signed funding transactions only, a new one
   replaces it);
3. otherwise record the intent (hash, signer, nonce, payload) before sending anything;
4. send, and record the result.

Presigned transactions have a fixed nonce/sequence, so the chain itself refuses a second copy;
funding transactions are signed by shared funding accounts, so they are also serialized per
account with a PostgreSQL advisory lock (nonces are taken from the chain under the lock).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stellar_sdk import Account
from stellar_sdk import Keypair as StellarKeypair
from substrateinterface import Keypair as SubstrateKeypair

from ramp_service.adapters.registration import TOKEN_FOR
from ramp_service.chains.errors import ChainError, RecoverableError
from ramp_service.chains.partners import AnchorClient, PixClient, PixDeposit
from ramp_service.chains.pendulum import (
    RECONCILE_LATER,
    Inclusion,
    PendulumChain,
    extrinsic_hash,
)
from ramp_service.chains.stellar import StellarChain
from ramp_service.domain.flows import WATCH_LATE_DEPOSIT, Network
from ramp_service.domain.outcomes import Advance, Outcome, Retry, Review, TimeOut, Wait
from ramp_service.domain.ramp import StoredTx
from ramp_service.worker.handlers import PhaseContext, PhaseHandler
from ramp_service.worker.journal import Operation

log = logging.getLogger("worker.phases")

FUNDING_TX_VALIDITY_S = 120
# The PEN funding transfer is mortal: born at the finalized head when signed, it can land only
# in the 64 blocks from there (about 13 minutes of Pendulum's 12-second blocks, less the few
# the finalized head trails the best one), so a reconciliation never searches more.
FUNDING_ERA_BLOCKS = 64


class FundingLock:
    """One funding account's transactions at a time, across every worker process.

    A transaction-scoped advisory lock: released by commit, rollback or a dropped connection,
    so a crashed or cancelled holder can never keep it. The ramps of one process queue for it
    on an in-process lock first, so a process holds one connection per funding account while
    waiting, not one per waiting ramp (a claim of 32 funding ramps would empty a pool of 25).

    A holder cut off from the database without a word (its node partitioned away) would keep
    the lock until the server's TCP keepalive gave up, two hours by default, and every worker's
    funding would stall: the server ends a holding session idle for `hold_s`, longer than any
    phase may run (the processor cancels one after 60 s). Released early, the lock is still
    safe: sequences and nonces stop a transaction from applying twice."""

    def __init__(self, engine: AsyncEngine, wait_s: float = 30.0, hold_s: float = 120.0) -> None:
        self._engine = engine
        self._wait_s = wait_s
        self._wait_ms = int(wait_s * 1000)
        self._hold_ms = int(hold_s * 1000)
        self._local: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, account: str) -> AsyncIterator[None]:
        """Hold the lock of `account` for the block."""
        local = self._local.setdefault(account, asyncio.Lock())
        try:
            async with asyncio.timeout(self._wait_s):
                await local.acquire()
        except TimeoutError:
            raise RecoverableError(
                "FUNDING_BUSY", f"funding account {account} busy for {self._wait_s:g}s"
            ) from None
        try:
            async with self._engine.begin() as conn:
                await conn.execute(text(f"SET LOCAL lock_timeout = {self._wait_ms}"))
                await conn.execute(text(f"SET LOCAL statement_timeout = {self._wait_ms + 1000}"))
                await conn.execute(
                    text(f"SET LOCAL idle_in_transaction_session_timeout = {self._hold_ms}")
                )
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": f"funding:{account}"},
                )
                yield
        finally:
            local.release()


@dataclass
class Chains:
    """What the handlers work with."""

    stellar: StellarChain
    pendulum: PendulumChain
    anchor: AnchorClient
    pix: PixClient
    stellar_funding: StellarKeypair
    pendulum_funding: SubstrateKeypair
    funding_lock: FundingLock
    ephemeral_xlm: Decimal = Decimal(3)
    ephemeral_pen: Decimal = Decimal(1)
    poll: timedelta = timedelta(seconds=2)
    # The swap is only sent while the live pool gives at least the quoted output plus this
    # fraction (the soft minimum); the presigned minimum (the quoted output) is the hard one.
    swap_soft_margin: Decimal = Decimal(0)
    # How long the deposit address of a SELL that ended before its deposit stays watched.
    late_deposit_watch: timedelta = timedelta(hours=72)

    @property
    def pendulum_funding_address(self) -> str:
        return str(self.pendulum_funding.ss58_address)


def _issued(ctx: PhaseContext, network: Network) -> StoredTx:
    for tx in ctx.ramp.txs:
        if tx.issued.phase == ctx.phase and tx.issued.network is network:
            return tx
    raise LookupError(f"no {network.value} tx issued for {ctx.phase}")


def _ephemeral(ctx: PhaseContext, network: Network) -> str:
    return next(a.address for a in ctx.ramp.accounts if a.network is network)


def _since(entry: Operation | None) -> int | None:
    """The block a Pendulum operation was first sent at (kept in the journal detail)."""
    if entry is None or not entry.detail.startswith("block:"):
        return None
    return int(entry.detail.split(":", 1)[1].split(" ", 1)[0])


def _until(entry: Operation) -> int | None:
    """The last block a mortal Pendulum extrinsic can land in (`until:N` in the detail, after
    the block it was sent at); None for an immortal one."""
    words = entry.detail.split(" ")
    if len(words) > 1 and words[0].startswith("block:") and words[1].startswith("until:"):
        return int(words[1].removeprefix("until:"))
    return None


class SubmitPresignedPendulum:
    """Send the phase's presigned Pendulum extrinsic exactly once."""

    def __init__(
        self,
        chains: Chains,
        precheck: Callable[[PhaseContext], Awaitable[Outcome | None]] | None = None,
        after: Callable[[PhaseContext], Awaitable[Outcome]] | None = None,
    ) -> None:
        self._chains = chains
        self._precheck = precheck
        self._after = after

    async def run(self, ctx: PhaseContext) -> Outcome:
        outcome = await self._submit(ctx)
        if isinstance(outcome, Advance) and self._after is not None:
            return await self._after(ctx)
        return outcome

    async def _submit(self, ctx: PhaseContext) -> Outcome:
        pendulum = self._chains.pendulum
        stored = _issued(ctx, Network.PENDULUM)
        payload = ctx.presigned(Network.PENDULUM.value)
        signer, nonce = stored.issued.signer, stored.issued.nonce
        tx_hash = extrinsic_hash(payload)
        entry = await ctx.journal.get("submit")
        if entry is not None and entry.state == "confirmed":
            return Advance()
        if entry is not None and entry.state == "failed":  # failed on chain: its nonce is used
            return Review("PENDULUM_DISPATCH_FAILED", f"{ctx.phase}: {entry.detail}")
        if entry is not None:
            lookup = await pendulum.find(tx_hash, signer, nonce, since_block=_since(entry))
            if lookup.inclusion is not None:
                return await self._record(ctx, lookup.inclusion)
            applied = lookup.applied_nonce  # read before the search: see Lookup
            assert applied is not None
            if applied > nonce:
                return Review(
                    "EFFECT_NOT_FOUND",
                    f"nonce {nonce} of {signer} was used but {tx_hash} is not on chain",
                )
            if applied < nonce:
                return Retry("NONCE_GAP", f"{signer} is at nonce {applied}, this tx is {nonce}")
        if self._precheck is not None and (refused := await self._precheck(ctx)) is not None:
            return refused
        if entry is None:
            entry = await ctx.journal.record_intent(
                "submit",
                "pendulum",
                tx_hash=tx_hash,
                signer=signer,
                nonce=nonce,
                payload=payload,
                detail=f"block:{await pendulum.head()}",
            )
        await ctx.journal.mark("submit", "submitted")
        try:
            inclusion = await pendulum.submit(payload)
        except ChainError as exc:
            if exc.reason in RECONCILE_LATER:
                # In the pool already, just included, or its nonce used: reconcile next time.
                return Wait(self._chains.poll, "IN_POOL_OR_USED")
            if not exc.recoverable:
                # Refused by the pool (fees, limits): nothing went on chain and the nonce is
                # unused, so the entry stays `submitted` and a retry (an operator's, after a
                # top-up) reconciles and sends the same bytes again. Only `_record` fails it.
                await ctx.journal.mark("submit", "submitted", f"block:{_since(entry)} {exc}")
            raise
        return await self._record(ctx, inclusion)

    async def _record(self, ctx: PhaseContext, inclusion: Inclusion) -> Outcome:
        if inclusion.success:
            await ctx.journal.mark("submit", "confirmed", tx_hash=inclusion.extrinsic_hash)
            return Advance()
        await ctx.journal.mark("submit", "failed", inclusion.error, inclusion.extrinsic_hash)
        return Review(
            "PENDULUM_DISPATCH_FAILED",
            f"{ctx.phase} extrinsic {inclusion.extrinsic_hash} failed: {inclusion.error}",
        )


async def submit_presigned_stellar(
    chains: Chains, ctx: PhaseContext, operation: str = "submit"
) -> Outcome:
    """Send the phase's presigned Stellar transaction exactly once."""
    stellar = chains.stellar
    stored = _issued(ctx, Network.STELLAR)
    payload = ctx.presigned(Network.STELLAR.value)
    tx_hash = stellar.tx_hash(payload)
    entry = await ctx.journal.get(operation)
    if entry is not None and entry.state == "confirmed":
        return Advance()
    if entry is not None:
        # The sequence first, then the search: a transaction applied after this reading is
        # still found by the search, so "not found" with the sequence used is proof.
        account = await stellar.account(stored.issued.signer)
        found = await stellar.find(tx_hash)
        if found is not None:
            return await _stellar_recorded(ctx, operation, found.successful, tx_hash)
        if account is not None and account.sequence >= stored.issued.nonce:
            return Review(
                "EFFECT_NOT_FOUND",
                f"sequence {stored.issued.nonce} of {stored.issued.signer} was used "
                f"but {tx_hash} is not on the ledger",
            )
    else:
        await ctx.journal.record_intent(
            operation,
            "stellar",
            tx_hash=tx_hash,
            signer=stored.issued.signer,
            nonce=stored.issued.nonce,
            payload=payload,
        )
    await ctx.journal.mark(operation, "submitted")
    try:
        result = await stellar.submit(payload)
    except ChainError as exc:
        if exc.recoverable:
            raise
        # An earlier submission of these bytes (a 504, a worker that lost its lease) may have
        # applied since the search above, and a resend of applied bytes is refused: nothing may
        # be called failed (whose runbook step is a refund by hand) before searching again.
        found = await stellar.find(tx_hash)
        if found is not None:
            return await _stellar_recorded(ctx, operation, found.successful, tx_hash)
        account = await stellar.account(stored.issued.signer)
        if account is None or account.sequence >= stored.issued.nonce:
            # Its sequence is used, or its account is gone (merged away): by these bytes, not
            # yet searchable (tx_bad_seq, tx_no_source_account, tx_too_late just after they
            # applied), or by others. The next attempt's reconciliation tells which, and
            # reviews it as EFFECT_NOT_FOUND if it was others.
            raise RecoverableError(
                "STELLAR_SEQUENCE_USED", f"{ctx.phase}: the sequence is used; reconciling"
            ) from exc
        await ctx.journal.mark(operation, "failed", str(exc))
        return Review("STELLAR_TX_FAILED", f"{ctx.phase}: {exc}")
    return await _stellar_recorded(ctx, operation, result.successful, result.hash)


async def _stellar_recorded(
    ctx: PhaseContext, operation: str, successful: bool, tx_hash: str
) -> Outcome:
    if successful:
        await ctx.journal.mark(operation, "confirmed", tx_hash=tx_hash)
        return Advance()
    await ctx.journal.mark(operation, "failed", "the transaction failed on the ledger", tx_hash)
    return Review("STELLAR_TX_FAILED", f"{ctx.phase}: transaction {tx_hash} failed")


async def fund_pendulum(chains: Chains, ctx: PhaseContext) -> None:
    """Send the ephemeral the PEN its presigned extrinsics pay fees with (server-signed)."""
    pendulum = chains.pendulum
    funding = chains.pendulum_funding_address
    ephemeral = _ephemeral(ctx, Network.PENDULUM)
    entry = await ctx.journal.get("fund_pen")
    if entry is not None and entry.state == "confirmed":
        return
    async with chains.funding_lock.hold(funding):
        replace = False
        if entry is not None and entry.state == "failed":
            replace = True  # included and failed: its nonce is spent, it never applies
        elif entry is not None:
            assert entry.tx_hash is not None and entry.nonce is not None
            # Matched by hash only: the funding account's nonces are shared by every ramp (the
            # nonce still tells whether, and from where, to look). A mortal transfer is looked
            # for in its era's blocks only: an operator's retry days later searches as far as
            # one sent a minute ago, not every block since (which never finished in time).
            until = _until(entry)
            # The head before the nonce: if the era had ended by then (the next block is past
            # it), a transfer still unapplied at the nonce's reading never applies.
            head = await pendulum.head() if until is not None else 0
            lookup = await pendulum.find(
                entry.tx_hash,
                funding,
                entry.nonce,
                since_block=_since(entry),
                match_slot=False,
                until_block=until,
            )
            found, applied = lookup.inclusion, lookup.applied_nonce  # one reading: see Lookup
            assert applied is not None
            if found is not None and found.success:
                await ctx.journal.mark("fund_pen", "confirmed")
                return
            unused = found is None and applied <= entry.nonce
            # Born at block B with period P, it can go into blocks up to B + P - 1, each built
            # on its parent: sent again only while the next block is one of those.
            if unused and (until is None or head + 1 < until):
                # Not applied and still applicable: send the very same bytes again.
                assert entry.payload is not None
                await _send_funding(chains, ctx, entry.payload)
                return
            # Failed, its nonce went to another transaction, or its era ended with nothing
            # applied: those bytes never apply any more.
            replace = True
        born = await pendulum.finalized_head()
        nonce = await pendulum.nonce(funding)
        era = {"period": FUNDING_ERA_BLOCKS, "current": born}
        payload = await pendulum.off_loop(
            lambda: pendulum.sign_with(
                pendulum.token_transfer(ephemeral, "PEN", chains.ephemeral_pen),
                chains.pendulum_funding,
                nonce,
                era,
            )
        )
        await ctx.journal.record_intent(
            "fund_pen",
            "pendulum",
            tx_hash=extrinsic_hash(payload),
            signer=funding,
            nonce=nonce,
            payload=payload,
            detail=f"block:{born} until:{born + FUNDING_ERA_BLOCKS}",
            replace=replace,
        )
        await _send_funding(chains, ctx, payload)


async def _send_funding(chains: Chains, ctx: PhaseContext, payload: str) -> None:
    await ctx.journal.mark("fund_pen", "submitted")
    try:
        inclusion = await chains.pendulum.submit(payload)
    except ChainError as exc:
        if exc.reason in RECONCILE_LATER:  # in the pool, just included, or its nonce used
            raise RecoverableError(
                "FUNDING_PENDING", f"the funding transfer is not settled yet ({exc.reason})"
            ) from exc
        raise
    if not inclusion.success:
        await ctx.journal.mark("fund_pen", "failed", inclusion.error)
        raise RecoverableError("FUNDING_FAILED", f"PEN funding failed: {inclusion.error}")
    await ctx.journal.mark("fund_pen", "confirmed", tx_hash=inclusion.extrinsic_hash)


async def create_stellar_ephemeral(chains: Chains, ctx: PhaseContext) -> None:
    """The funding account creates the Stellar ephemeral (server-signed)."""
    stellar = chains.stellar
    ephemeral = _ephemeral(ctx, Network.STELLAR)
    funding = chains.stellar_funding.public_key
    entry = await ctx.journal.get("create_account")
    if entry is not None and entry.state == "confirmed":
        return
    if await stellar.account(ephemeral) is not None:
        if entry is not None:
            await ctx.journal.mark("create_account", "confirmed")
        return
    async with chains.funding_lock.hold(funding):
        replace = False
        if entry is not None:
            assert entry.tx_hash is not None and entry.nonce is not None
            found = await stellar.find(entry.tx_hash)
            if found is not None and found.successful:
                await ctx.journal.mark("create_account", "confirmed")
                return
            state = await stellar.account(funding)
            if found is None and state is not None and state.sequence < entry.nonce:
                assert entry.payload is not None
                try:
                    await _send_create(chains, ctx, entry.payload)
                    return
                except ChainError as exc:
                    if exc.recoverable:
                        raise
            replace = True  # failed, expired or its sequence was used: it can never apply
        state = await stellar.account(funding)
        if state is None:
            raise RecoverableError("FUNDING_ACCOUNT_MISSING", f"{funding} does not exist")
        until = int(datetime.now(UTC).timestamp()) + FUNDING_TX_VALIDITY_S
        unsigned = stellar.build_create_ephemeral(
            Account(funding, state.sequence), ephemeral, chains.ephemeral_xlm, until
        )
        payload = stellar.sign(unsigned, chains.stellar_funding)
        await ctx.journal.record_intent(
            "create_account",
            "stellar",
            tx_hash=stellar.tx_hash(payload),
            signer=funding,
            nonce=state.sequence + 1,
            payload=payload,
            replace=replace,
        )
        await _send_create(chains, ctx, payload)


async def _send_create(chains: Chains, ctx: PhaseContext, payload: str) -> None:
    await ctx.journal.mark("create_account", "submitted")
    try:
        result = await chains.stellar.submit(payload)
    except ChainError as exc:
        if exc.reason == "TX_BAD_SEQ":
            # The funding account's sequence moved between our reading and the submit (its
            # other users are outside our lock), or these very bytes applied already. Either
            # way the next attempt settles it: found by hash, or rebuilt once the sequence is
            # proven used. Nothing was paid twice, so no person needs to look.
            raise RecoverableError(
                "FUNDING_PENDING", "the Stellar funding account's sequence moved; reconciling"
            ) from exc
        if not exc.recoverable:
            await ctx.journal.mark("create_account", "failed", str(exc))
        raise
    await ctx.journal.mark("create_account", "confirmed", tx_hash=result.hash)


class Initial:
    """`initial`: the ramp was started; nothing to do but move on."""

    async def run(self, ctx: PhaseContext) -> Outcome:
        return Advance()


class AwaitUserDeposit:
    """SELL: wait until the user's wallet has sent the input amount to the Pendulum ephemeral."""

    def __init__(self, chains: Chains) -> None:
        self._chains = chains

    async def run(self, ctx: PhaseContext) -> Outcome:
        quote = ctx.ramp.quote
        token = TOKEN_FOR[quote.input_currency]
        address = _ephemeral(ctx, Network.PENDULUM)
        held = await self._chains.pendulum.balance(address, token)
        if held > quote.input_amount:
            # The swap and the cleanup move the quoted amount only: the rest stays on the
            # ephemeral, whose key only the user's browser holds. Recorded for support to tell
            # the user (GetRampErrors shows it); the ramp goes on with the quoted amount.
            extra = held - quote.input_amount
            return Advance(
                f"{held} {token} received",
                (
                    "USER_OVERPAID",
                    f"{extra} {token} more than the quote's {quote.input_amount} stays on "
                    f"{address}, the user's to move with the ephemeral's key",
                ),
            )
        if held == quote.input_amount:
            return Advance(f"{held} {token} received")
        if held > 0:  # part of it arrived: never time out with the user's money on the ephemeral
            return Wait(self._chains.poll, "PARTIAL_USER_DEPOSIT", holds_funds=True)
        return Wait(self._chains.poll, "AWAITING_USER_DEPOSIT")


LATE_DEPOSIT_MAX_INTERVAL = timedelta(hours=1)


class WatchLateDeposit:
    """After a SELL ramp ended before its deposit (timed out in awaitUserDeposit or unstarted
    past its start deadline, failed, cancelled): watch its Pendulum ephemeral for the input token
    for `late_deposit_watch`. Money found there is on an account whose key only the user's
    browser holds, and no phase will move it: the watch reports it (LATE_DEPOSIT, on the ramp
    and in the worker's metrics) for a person to settle with the user, and stops. The ramp
    keeps its status.

    Checked often at first, when a late transfer is likeliest, then less and less: every quarter
    of the time watched so far (at least the chain poll, at most hourly): about a hundred
    balance reads per ramp over the default three days, against 130,000 at the chain poll."""

    def __init__(self, chains: Chains) -> None:
        self._chains = chains

    async def run(self, ctx: PhaseContext) -> Outcome:
        quote = ctx.ramp.quote
        token = TOKEN_FOR[quote.input_currency]
        address = _ephemeral(ctx, Network.PENDULUM)
        held = await self._chains.pendulum.balance(address, token)
        if held > 0:
            return Review(
                "LATE_DEPOSIT",
                f"{held} {token} on {address} after the ramp ended without its deposit",
            )
        watched = ctx.now - ctx.phase_started_at  # since the ramp ended
        left = self._chains.late_deposit_watch - watched
        if left <= timedelta(0):
            return Advance()
        interval = min(max(watched / 4, self._chains.poll), LATE_DEPOSIT_MAX_INTERVAL)
        return Wait(min(interval, left), "WATCHING_LATE_DEPOSIT")


class FundEphemeral:
    """Give the ephemerals what their presigned transactions need: PEN for fees on Pendulum
    and, for SELL, the Stellar account (created by the funding account, then set up by the
    presigned trustline transaction)."""

    def __init__(self, chains: Chains) -> None:
        self._chains = chains

    async def run(self, ctx: PhaseContext) -> Outcome:
        await fund_pendulum(self._chains, ctx)
        if any(a.network is Network.STELLAR for a in ctx.ramp.accounts):
            await create_stellar_ephemeral(self._chains, ctx)
            return await submit_presigned_stellar(self._chains, ctx, "setup")
        return Advance()


class BrlaTeleport:
    """BUY: wait for the PIX payment; the partner then mints BRLA to the Pendulum ephemeral.

    The charge (opened at start) stays payable until its expiry, so only the partner can say
    the user will not pay: the phase times out when the partner reports the charge EXPIRED or
    CANCELLED. Once the expiry has passed and the partner still says PENDING (its clock is not
    ours), the charge is cancelled; a payment that lands first makes the cancel answer it paid,
    and the ramp carries on. The processor's own time budget never times this phase out (see
    `PhaseSpec.partner_confirms_timeout`)."""

    def __init__(self, chains: Chains) -> None:
        self._chains = chains

    async def run(self, ctx: PhaseContext) -> Outcome:
        try:
            deposit = await self._charge(ctx)
        except ChainError as exc:
            if exc.recoverable:
                raise
            # Once the partner will not say what became of the charge (a 401 after a
            # credential rotation, a 404 in an incident) the user may have paid: a person
            # settles it, never the terminal `failed`.
            return Review(exc.reason, exc.message)
        if deposit.status in ("EXPIRED", "CANCELLED"):
            return TimeOut(f"PIX_{deposit.status}: PIX charge {deposit.id} was never paid")
        if deposit.status == "PENDING":
            return Wait(self._chains.poll, "PIX_PENDING")
        if deposit.status in ("PAID", "MINT_FAILED"):  # the user has paid: no timeout from here
            return Wait(self._chains.poll, f"PIX_{deposit.status}", holds_funds=True)
        if deposit.status != "MINTED":
            return Review("PIX_UNEXPECTED_STATUS", f"PIX deposit {deposit.id}: {deposit.status}")
        quote = ctx.ramp.quote
        held = await self._chains.pendulum.balance(
            _ephemeral(ctx, Network.PENDULUM), TOKEN_FOR[quote.input_currency]
        )
        if held >= quote.input_amount:
            return Advance()
        return Wait(self._chains.poll, "BRLA_MINT_PENDING", holds_funds=True)

    async def _charge(self, ctx: PhaseContext) -> PixDeposit:
        """The charge as the partner has it; cancelled first once its expiry has passed."""
        partner = ctx.ramp.partner_data
        deposit = await self._chains.pix.deposit(partner["pix_deposit_id"])
        # A ramp started before charges had an expiry has none: it waits for a person.
        expires = partner.get("pix_expires_at")
        if deposit.status == "PENDING" and expires and ctx.now >= datetime.fromisoformat(expires):
            log.info(
                "cancelling an expired PIX charge",
                extra={"ramp_id": str(ctx.ramp.id), "deposit_id": deposit.id},
            )
            deposit = await self._chains.pix.cancel_deposit(deposit.id)
        return deposit


def swap_precheck(chains: Chains) -> Callable[[PhaseContext], Awaitable[Outcome | None]]:
    """Refuse (and retry later) while the live pool gives less than the soft minimum: a swap
    sent then would fail on chain below the presigned minimum and burn its nonce."""

    async def check(ctx: PhaseContext) -> Outcome | None:
        quote = ctx.ramp.quote
        token_in, token_out = TOKEN_FOR[quote.input_currency], TOKEN_FOR[quote.output_currency]
        live = await chains.pendulum.amount_out(
            token_in, token_out, quote.input_amount - quote.fee_total
        )
        soft = quote.output_amount * (1 + chains.swap_soft_margin)
        if live < soft:
            return Retry(
                "SLIPPAGE_ABOVE_TOLERANCE",
                f"the pool gives {live} {token_out}, below the soft minimum {soft}",
            )
        return None

    return check


def await_stellar_arrival(chains: Chains) -> Callable[[PhaseContext], Awaitable[Outcome]]:
    """After the bridge redeem: wait until the Stellar ephemeral holds the quoted output."""

    async def wait(ctx: PhaseContext) -> Outcome:
        account = await chains.stellar.account(_ephemeral(ctx, Network.STELLAR))
        asset = ctx.ramp.partner_data["stellar_asset"]
        held = account.balances.get(asset, Decimal(0)) if account else Decimal(0)
        if held >= ctx.ramp.quote.output_amount:
            return Advance()
        return Wait(chains.poll, "AWAITING_BRIDGE_PAYOUT")

    return wait


class StellarPayment:
    """Pay the anchor with its memo, then wait for it to report the fiat payout."""

    def __init__(self, chains: Chains) -> None:
        self._chains = chains

    async def run(self, ctx: PhaseContext) -> Outcome:
        sent = await submit_presigned_stellar(self._chains, ctx)
        if not isinstance(sent, Advance):
            return sent
        withdrawal = await self._chains.anchor.withdrawal(
            ctx.ramp.partner_data["anchor_withdrawal_id"]
        )
        if withdrawal.status == "completed":
            return Advance(f"anchor paid out ({withdrawal.stellar_transaction_id})")
        if withdrawal.status in ("error", "refunded", "expired"):
            return Review(
                "ANCHOR_PAYOUT_FAILED", f"withdrawal {withdrawal.id}: {withdrawal.status}"
            )
        return Wait(self._chains.poll, "AWAITING_ANCHOR_PAYOUT")


class StellarCleanup:
    """Merge the Stellar ephemeral back into the funding account (presigned)."""

    def __init__(self, chains: Chains) -> None:
        self._chains = chains

    async def run(self, ctx: PhaseContext) -> Outcome:
        return await submit_presigned_stellar(self._chains, ctx)


def build_phase_handlers(chains: Chains) -> dict[str, PhaseHandler]:
    """One handler per phase name of every flow."""
    return {
        "initial": Initial(),
        "awaitUserDeposit": AwaitUserDeposit(chains),
        "brlaTeleport": BrlaTeleport(chains),
        "fundEphemeral": FundEphemeral(chains),
        "nablaApprove": SubmitPresignedPendulum(chains),
        "nablaSwap": SubmitPresignedPendulum(chains, precheck=swap_precheck(chains)),
        "spacewalkRedeem": SubmitPresignedPendulum(chains, after=await_stellar_arrival(chains)),
        "stellarPayment": StellarPayment(chains),
        "pendulumToAssethub": SubmitPresignedPendulum(chains),
        "stellarCleanup": StellarCleanup(chains),
        "pendulumCleanup": SubmitPresignedPendulum(chains),
        WATCH_LATE_DEPOSIT: WatchLateDeposit(chains),
    }
