"""Held renderings (service_kit.rendered) and GetQuote's use of them: a message is answered
again only for the very ticket object it was rendered from."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any, cast

from pendulumpay.quote.v1 import quote_pb2
from quote_service.api.servicer import QuoteServicer, quote_to_proto
from quote_service.domain.quote import QuoteStatus, QuoteTicket
from quote_service.service import QuoteService
from service_kit.rendered import Rendered
from tests.unit.test_quote_ticket import ticket as make_ticket


def test_least_recently_used_goes_first_and_capacity_zero_holds_nothing() -> None:
    held: Rendered[str, int, str] = Rendered(2)
    held.put("a", 1, "A")
    held.put("b", 2, "B")
    assert held.get("a") == (1, "A")  # "a" is now the most recent
    held.put("c", 3, "C")
    assert held.get("b") is None and held.get("a") == (1, "A") and held.get("c") == (3, "C")
    held.drop("a")
    assert held.get("a") is None
    nothing: Rendered[str, int, str] = Rendered(0)
    nothing.put("a", 1, "A")
    assert nothing.get("a") is None


class _Service:
    """What GetQuote asks of the service: the ticket to answer (as the cache would hand it)."""

    def __init__(self, ticket: QuoteTicket) -> None:
        self.ticket = ticket

    async def get_quote(self, quote_id: str) -> QuoteTicket:
        return self.ticket


def _get(servicer: QuoteServicer, quote_id: str) -> quote_pb2.Quote:
    request = quote_pb2.GetQuoteRequest(id=quote_id)
    return asyncio.run(servicer.GetQuote(request, cast(Any, None)))


def test_get_quote_answers_the_held_message_only_for_the_same_ticket_object() -> None:
    ticket = make_ticket()
    service = _Service(ticket)
    servicer = QuoteServicer(cast(QuoteService, service))
    first = _get(servicer, str(ticket.id))
    assert first == quote_to_proto(ticket)
    assert _get(servicer, str(ticket.id)) is first  # the same object: not rendered again

    consumed = dataclasses.replace(
        ticket, status=QuoteStatus.CONSUMED, consumed_by=str(uuid.uuid4())
    )
    service.ticket = consumed  # the cache dropped the old one; a read made a new object
    again = _get(servicer, str(ticket.id))
    assert again.status == quote_pb2.Quote.CONSUMED and again is not first

    service.ticket = dataclasses.replace(consumed)  # equal content, another object
    assert _get(servicer, str(ticket.id)) is not again
