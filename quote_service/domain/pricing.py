"""Pricing: turn an input amount into fees, a rate and an output amount. No I/O.

The model follows SEP-38 with fees in the sell asset: every fee is charged in the input
currency and deducted before conversion, so

    output_amount = round_down((input_amount - fee.total) * rate, output decimals)

holds exactly for every quote, and the fee components add up exactly to `fee.total`.
Relative fees are rounded up to the input currency's decimals (never under-charged); the
output is rounded down (never over-promised).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal, localcontext
from typing import Protocol

from quote_service.domain.corridors import DECIMALS, NETWORKS, Corridor, RampType, find_corridor
from quote_service.domain.errors import InvalidQuoteRequest, amount_rejected
from service_kit.errors import FieldViolation, InvalidInput

ZERO = Decimal(0)
_AMOUNT = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?")  # matched whole (fullmatch): no "\n"


def quantum(decimals: int) -> Decimal:
    """The smallest step at `decimals` places, e.g. 0.01 for 2."""
    return Decimal(1).scaleb(-decimals)


def round_down(value: Decimal, decimals: int) -> Decimal:
    """Truncate towards zero at `decimals` places."""
    return value.quantize(quantum(decimals), rounding=ROUND_DOWN)


def round_up(value: Decimal, decimals: int) -> Decimal:
    """Round away from zero at `decimals` places."""
    return value.quantize(quantum(decimals), rounding=ROUND_UP)


@dataclass(frozen=True)
class FeeRule:
    """A fee: `relative` times the input amount, plus an absolute amount per input currency."""

    relative: Decimal = ZERO
    absolute: Mapping[str, Decimal] = field(default_factory=dict)

    def amount(self, input_amount: Decimal, currency: str) -> Decimal:
        """The fee in `currency` for `input_amount`, at the currency's decimals."""
        decimals = DECIMALS[currency]
        return round_down(self.absolute.get(currency, ZERO), decimals) + round_up(
            input_amount * self.relative, decimals
        )


NO_FEE = FeeRule()


@dataclass(frozen=True)
class AmountLimits:
    """Inclusive bounds on the input amount of one currency."""

    minimum: Decimal
    maximum: Decimal


@dataclass(frozen=True)
class PricingConfig:
    """Fee schedule and limits. Network fees apply for both the source and destination."""

    platform: FeeRule
    anchors: Mapping[str, FeeRule]
    networks: Mapping[str, FeeRule]
    partners: Mapping[str, FeeRule]
    limits: Mapping[str, AmountLimits]
    rate_decimals: int = 10


class PriceSource(Protocol):
    """Where conversion rates come from."""

    def output_for(self, token_in: str, token_out: str, amount_in: Decimal) -> Decimal:
        """How much `token_out` a swap of `amount_in` of `token_in` yields (unrounded)."""
        ...


@dataclass(frozen=True)
class Pool:
    """A constant-product (x·y=k) pool with a swap fee taken from the input."""

    token_a: str
    token_b: str
    reserve_a: Decimal
    reserve_b: Decimal
    swap_fee: Decimal = ZERO


class ConstantProductPools:
    """Price source modelling the on-chain pools: out = y·dx' / (x + dx'), dx' = dx·(1 - fee).

    The devnet swap uses the same formula, so a quote predicts the swap it leads to.
    """

    def __init__(self, pools: list[Pool]) -> None:
        self._pools = {(p.token_a, p.token_b): p for p in pools}

    def output_for(self, token_in: str, token_out: str, amount_in: Decimal) -> Decimal:
        """Swap output for `amount_in`, raising LookupError when no pool joins the tokens."""
        if pool := self._pools.get((token_in, token_out)):
            reserve_in, reserve_out = pool.reserve_a, pool.reserve_b
        elif pool := self._pools.get((token_out, token_in)):
            reserve_in, reserve_out = pool.reserve_b, pool.reserve_a
        else:
            raise LookupError(f"no pool for {token_in}/{token_out}")
        with localcontext() as ctx:
            ctx.prec = 50
            effective_in = amount_in * (1 - pool.swap_fee)
            return reserve_out * effective_in / (reserve_in + effective_in)


@dataclass(frozen=True)
class QuoteRequest:
    """What a client asks to price, as received (strings not yet parsed)."""

    ramp_type: str
    from_network: str
    to_network: str
    input_amount: str
    input_currency: str
    output_currency: str
    partner_id: str = ""


@dataclass(frozen=True)
class Fees:
    """Fee components in the input currency."""

    network: Decimal
    platform: Decimal
    anchor: Decimal
    partner_markup: Decimal
    currency: str

    @property
    def total(self) -> Decimal:
        """Exact sum of the components."""
        return self.network + self.platform + self.anchor + self.partner_markup


@dataclass(frozen=True)
class Price:
    """A priced request."""

    corridor: Corridor
    input_amount: Decimal
    fees: Fees
    rate: Decimal
    output_amount: Decimal


def parse_amount(
    text: str, currency: str | None, field_name: str
) -> tuple[Decimal | None, list[FieldViolation]]:
    """Parse a positive decimal string with at most the currency's decimals."""
    if not _AMOUNT.fullmatch(text):
        return None, [FieldViolation(field_name, 'must be a positive decimal string like "100.50"')]
    amount = Decimal(text)
    if amount <= 0:
        return None, [FieldViolation(field_name, "must be greater than zero")]
    if currency in DECIMALS and -amount.as_tuple().exponent > DECIMALS[currency]:  # type: ignore[operator]
        return None, [
            FieldViolation(field_name, f"{currency} allows at most {DECIMALS[currency]} decimals")
        ]
    return amount, []


def _validate(request: QuoteRequest, config: PricingConfig) -> tuple[Corridor, Decimal]:
    violations: list[FieldViolation] = []
    if request.ramp_type not in RampType.__members__:
        violations.append(FieldViolation("ramp_type", "must be SELL or BUY"))
    for name, value in (("from", request.from_network), ("to", request.to_network)):
        if value not in NETWORKS:
            violations.append(FieldViolation(name, f"must be one of {', '.join(sorted(NETWORKS))}"))
    for name, value in (
        ("input_currency", request.input_currency),
        ("output_currency", request.output_currency),
    ):
        if value not in DECIMALS:
            violations.append(FieldViolation(name, f"must be one of {', '.join(sorted(DECIMALS))}"))
    amount, amount_violations = parse_amount(
        request.input_amount, request.input_currency, "input_amount"
    )
    violations += amount_violations
    if request.partner_id and request.partner_id not in config.partners:
        violations.append(FieldViolation("partner_id", "unknown partner"))
    if violations:
        raise InvalidQuoteRequest(violations)
    corridor = find_corridor(
        RampType(request.ramp_type),
        request.from_network,
        request.to_network,
        request.input_currency,
        request.output_currency,
    )
    if corridor is None:
        raise InvalidInput(
            "UNSUPPORTED_CORRIDOR",
            f"no {request.ramp_type} corridor from {request.from_network} {request.input_currency} "
            f"to {request.to_network} {request.output_currency}",
            [
                FieldViolation(f, "unsupported combination")
                for f in ("ramp_type", "from", "to", "input_currency", "output_currency")
            ],
        )
    assert amount is not None
    return corridor, amount.quantize(quantum(DECIMALS[corridor.input_currency]))


def price_quote(request: QuoteRequest, config: PricingConfig, source: PriceSource) -> Price:
    """Validate and price a request, raising a domain error for anything unquotable."""
    corridor, amount = _validate(request, config)
    currency = corridor.input_currency
    limits = config.limits.get(currency)
    if limits and amount < limits.minimum:
        raise amount_rejected("AMOUNT_BELOW_MINIMUM", f"minimum is {limits.minimum} {currency}")
    if limits and amount > limits.maximum:
        raise amount_rejected("AMOUNT_ABOVE_MAXIMUM", f"maximum is {limits.maximum} {currency}")
    fees = Fees(
        network=config.networks.get(corridor.from_network, NO_FEE).amount(amount, currency)
        + config.networks.get(corridor.to_network, NO_FEE).amount(amount, currency),
        platform=config.platform.amount(amount, currency),
        anchor=config.anchors.get(corridor.anchor, NO_FEE).amount(amount, currency),
        partner_markup=config.partners.get(request.partner_id, NO_FEE).amount(amount, currency),
        currency=currency,
    )
    net = amount - fees.total
    if net <= 0:
        raise amount_rejected(
            "AMOUNT_TOO_LOW_FOR_FEES", f"fees of {fees.total} {currency} exceed the input amount"
        )
    with localcontext() as ctx:
        ctx.prec = 50
        rate = round_down(
            source.output_for(corridor.pool_in, corridor.pool_out, net) / net, config.rate_decimals
        )
        output = round_down(net * rate, DECIMALS[corridor.output_currency])
    if output <= 0:
        raise amount_rejected(
            "AMOUNT_TOO_LOW_FOR_FEES", "the amount after fees converts to nothing"
        )
    return Price(corridor, amount, fees, rate, output)
