"""The quote lifecycle rules, without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from quote_service.adapters.pricing_file import load_pricing
from quote_service.domain.errors import QuoteConsumed, QuoteExpired
from quote_service.domain.pricing import QuoteRequest, price_quote
from quote_service.domain.quote import QuoteStatus, QuoteTicket, new_ticket, parse_quote_id
from service_kit.errors import InvalidInput

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def ticket() -> QuoteTicket:
    request = QuoteRequest("SELL", "pendulum", "sepa", "100", "USDC", "EUR")
    config, pools = load_pricing()
    return new_ticket(request, price_quote(request, config, pools), NOW, timedelta(minutes=10))


def test_pending_reads_expired_at_and_after_expiry() -> None:
    t = ticket()
    assert t.status_at(NOW + timedelta(minutes=9, seconds=59)) is QuoteStatus.PENDING
    assert t.status_at(NOW + timedelta(minutes=10)) is QuoteStatus.EXPIRED


def test_consumable_rules() -> None:
    t = ticket()
    assert t.check_consumable_by("r1", NOW) is False
    consumed = QuoteTicket(**{**vars(t), "status": QuoteStatus.CONSUMED, "consumed_by": "r1"})
    assert consumed.check_consumable_by("r1", NOW + timedelta(minutes=9)) is True
    with pytest.raises(QuoteExpired):  # its price is not held open past expiry
        consumed.check_consumable_by("r1", NOW + timedelta(minutes=10))
    with pytest.raises(QuoteConsumed):
        consumed.check_consumable_by("r2", NOW)
    with pytest.raises(QuoteExpired):
        t.check_consumable_by("r1", NOW + timedelta(minutes=10))


def test_ticket_amounts_are_decimals() -> None:
    t = ticket()
    assert isinstance(t.input_amount, Decimal) and isinstance(t.output_amount, Decimal)
    assert t.expires_at - t.created_at == timedelta(minutes=10)


@pytest.mark.parametrize("text", ["", "123", "g" * 36, "{" + str(uuid.UUID(int=1)) + "}"])
def test_quote_ids_must_be_canonical_uuids(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_quote_id(text)


def test_uppercase_uuid_is_accepted() -> None:
    value = uuid.uuid4()
    assert parse_quote_id(str(value).upper()) == value
