"""What the ramp use cases need from the outside world, as small interfaces."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ramp_service.domain.flows import Flow, Network
from ramp_service.domain.ramp import (
    AdditionalData,
    IssuedTx,
    PresignedTx,
    QuoteSnapshot,
    RampRecord,
    SigningAccount,
)


class QuoteClient(Protocol):
    """The quote service, reached over gRPC."""

    async def get_quote(self, quote_id: uuid.UUID) -> QuoteSnapshot:
        """The quote; raises domain errors for unknown or malformed ids."""
        ...

    async def consume_quote(self, quote_id: uuid.UUID, ramp_id: uuid.UUID) -> QuoteSnapshot:
        """Consume the quote for `ramp_id` (idempotent per ramp id)."""
        ...


@dataclass(frozen=True)
class RegistrationPlan:
    """What the chains need to build a ramp's transactions."""

    ramp_id: uuid.UUID
    quote: QuoteSnapshot
    flow: Flow
    accounts: dict[Network, SigningAccount]
    additional_data: AdditionalData


@dataclass(frozen=True)
class Prepared:
    """The issued transactions and partner facts of a new ramp."""

    txs: list[IssuedTx]
    partner_data: dict[str, str] = field(default_factory=dict)


class RegistrationChains(Protocol):
    """Chain and partner work that register and start need."""

    def is_valid_address(self, network: Network, address: str) -> bool:
        """Whether `address` is well-formed for `network`."""
        ...

    def is_valid_destination(self, to_network: str, address: str) -> bool:
        """Whether `address` is a payout address `to_network` takes (chain networks only)."""
        ...

    async def why_not_fresh(self, account: SigningAccount) -> str | None:
        """None when the account is unused on chain, else why it cannot serve a new ramp."""
        ...

    async def prepare(self, plan: RegistrationPlan) -> Prepared:
        """Build the unsigned transactions and open the anchor withdrawal (SELL)."""
        ...

    async def open_payment(self, record: RampRecord, now: datetime) -> dict[str, str]:
        """At start: open what the user pays in (a BUY's PIX charge, payable for the payment
        window from `now`; every start of a ramp gets the same one) and return its facts to
        store with the start. Raises ChainUnavailable when the partner cannot be reached."""
        ...

    async def withdraw_payment(self, record: RampRecord) -> bool:
        """Make what start opened unpayable (cancel a BUY's PIX charge): False when the user
        has already paid it, True when nothing is payable any more (or nothing was opened)."""
        ...

    def verify_presigned(self, issued: IssuedTx, presigned: PresignedTx) -> str:
        """The signed payload to store; raises InvalidInput naming what does not match."""
        ...

    async def warm_up(self) -> None:
        """Connect and load what the first calls would otherwise wait for."""
        ...

    async def close(self) -> None:
        """Release connections (the server calls this when it stops)."""
        ...
