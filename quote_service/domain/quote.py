"""The quote ticket and its lifecycle: PENDING → CONSUMED, or PENDING → EXPIRED."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from quote_service.domain.errors import QuoteConsumed, QuoteExpired
from quote_service.domain.pricing import Fees, Price, QuoteRequest
from service_kit.errors import FieldViolation, InvalidInput


class QuoteStatus(StrEnum):
    """Stored status of a quote."""

    PENDING = "PENDING"
    CONSUMED = "CONSUMED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class QuoteTicket:
    """A priced, single-use quote."""

    id: uuid.UUID
    ramp_type: str
    from_network: str
    to_network: str
    input_amount: Decimal
    input_currency: str
    output_amount: Decimal
    output_currency: str
    rate: Decimal
    fees: Fees
    partner_id: str
    status: QuoteStatus
    created_at: datetime
    expires_at: datetime
    consumed_by: str | None = None
    consumed_at: datetime | None = None

    def status_at(self, now: datetime) -> QuoteStatus:
        """The status a reader sees at `now`: a pending quote past expiry reads EXPIRED."""
        if self.status is QuoteStatus.PENDING and now >= self.expires_at:
            return QuoteStatus.EXPIRED
        return self.status

    def check_consumable_by(self, ramp_id: str, now: datetime) -> bool:
        """True when `ramp_id` already holds the quote; raise when it cannot take it.

        Taking it again is the retry of a register that consumed the quote and stopped before
        storing its ramp; that retry, like a first take, must come before the quote expires:
        otherwise the quote's price would stay open to its ramp id for ever."""
        if self.status is QuoteStatus.CONSUMED:
            if self.consumed_by != ramp_id:
                raise QuoteConsumed(str(self.id))
            if now >= self.expires_at:
                raise QuoteExpired(str(self.id))
            return True
        if self.status_at(now) is QuoteStatus.EXPIRED:
            raise QuoteExpired(str(self.id))
        return False


def new_ticket(request: QuoteRequest, price: Price, now: datetime, ttl: timedelta) -> QuoteTicket:
    """A fresh PENDING ticket for a priced request."""
    return QuoteTicket(
        id=uuid.uuid4(),
        ramp_type=price.corridor.ramp_type.value,
        from_network=price.corridor.from_network,
        to_network=price.corridor.to_network,
        input_amount=price.input_amount,
        input_currency=price.corridor.input_currency,
        output_amount=price.output_amount,
        output_currency=price.corridor.output_currency,
        rate=price.rate,
        fees=price.fees,
        partner_id=request.partner_id,
        status=QuoteStatus.PENDING,
        created_at=now,
        expires_at=now + ttl,
    )


def parse_quote_id(text: str, field: str = "id") -> uuid.UUID:
    """Parse a quote id, raising INVALID_QUOTE_ID for anything but a canonical UUID."""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != text.lower():
        raise InvalidInput(
            "INVALID_QUOTE_ID", f"{field} must be a UUID", [FieldViolation(field, "must be a UUID")]
        )
    return parsed


def parse_ramp_id(text: str) -> str:
    """A consumer id must be present and reasonably short."""
    if not text or len(text) > 64:
        raise InvalidInput(
            "INVALID_RAMP_ID",
            "ramp_id must be 1 to 64 characters",
            [FieldViolation("ramp_id", "must be 1 to 64 characters")],
        )
    return text
