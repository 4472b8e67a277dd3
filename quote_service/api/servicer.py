"""`pendulumpay.quote.v1.QuoteService`: protobuf ↔ domain, nothing else.

Domain errors propagate to `service_kit.grpc_server.ServiceInterceptor`, which maps them.
"""

from __future__ import annotations

import uuid

import grpc

from pendulumpay.quote.v1 import quote_pb2, quote_pb2_grpc
from quote_service.domain.pricing import QuoteRequest
from quote_service.domain.quote import QuoteTicket
from quote_service.service import QuoteService
from service_kit.protobuf import timestamp
from service_kit.rendered import Rendered


def quote_to_proto(ticket: QuoteTicket) -> quote_pb2.Quote:
    """Render a ticket as the API's Quote message."""
    fees = ticket.fees
    return quote_pb2.Quote(
        id=str(ticket.id),
        ramp_type=quote_pb2.RampType.Value(ticket.ramp_type),
        from_network=ticket.from_network,
        to_network=ticket.to_network,
        input_amount=_amount(ticket.input_amount),
        input_currency=ticket.input_currency,
        output_currency=ticket.output_currency,
        partner_id=ticket.partner_id,
        output_amount=_amount(ticket.output_amount),
        rate=_amount(ticket.rate.normalize()),
        fee=quote_pb2.FeeBreakdown(
            network=_amount(fees.network),
            platform=_amount(fees.platform),
            anchor=_amount(fees.anchor),
            partner_markup=_amount(fees.partner_markup),
            total=_amount(fees.total),
            currency=fees.currency,
        ),
        status=quote_pb2.Quote.Status.Value(ticket.status.value),
        expires_at=timestamp(ticket.expires_at),
        created_at=timestamp(ticket.created_at),
    )


def _amount(value: object) -> str:
    """Decimal as a plain string without exponent or trailing zeros beyond the scale."""
    return format(value, "f")


class QuoteServicer(quote_pb2_grpc.QuoteServiceServicer):
    """Translates RPCs to `QuoteService` use cases."""

    def __init__(self, service: QuoteService, held: int = 4096) -> None:
        self._service = service
        # Quote messages as last rendered, tagged with the ticket object each came from: a
        # ticket is immutable, and the cache answers the very object it holds until the quote
        # changes, so the same object means the same message (rendering was 7% of GetQuote's
        # samples, py-spy). A ticket read from the database is a new object: rendered anew.
        self._rendered: Rendered[uuid.UUID, QuoteTicket, quote_pb2.Quote] = Rendered(held)

    async def CreateQuote(
        self, request: quote_pb2.CreateQuoteRequest, context: grpc.aio.ServicerContext
    ) -> quote_pb2.Quote:
        ramp_type = (
            quote_pb2.RampType.Name(request.ramp_type)
            if request.ramp_type in quote_pb2.RampType.values()
            else str(request.ramp_type)
        )
        ticket = await self._service.create_quote(
            QuoteRequest(
                ramp_type=ramp_type,
                from_network=request.from_network,
                to_network=request.to_network,
                input_amount=request.input_amount,
                input_currency=request.input_currency,
                output_currency=request.output_currency,
                partner_id=request.partner_id,
            )
        )
        return self._render(ticket)  # held: its creator often reads it back next

    async def GetQuote(
        self, request: quote_pb2.GetQuoteRequest, context: grpc.aio.ServicerContext
    ) -> quote_pb2.Quote:
        return self._render(await self._service.get_quote(request.id))

    def _render(self, ticket: QuoteTicket) -> quote_pb2.Quote:
        held = self._rendered.get(ticket.id)
        if held is not None and held[0] is ticket:
            return held[1]
        message = quote_to_proto(ticket)
        self._rendered.put(ticket.id, ticket, message)
        return message

    async def ConsumeQuote(
        self, request: quote_pb2.ConsumeQuoteRequest, context: grpc.aio.ServicerContext
    ) -> quote_pb2.ConsumeQuoteResponse:
        ticket = await self._service.consume_quote(request.quote_id, request.ramp_id)
        return quote_pb2.ConsumeQuoteResponse(quote=quote_to_proto(ticket))
