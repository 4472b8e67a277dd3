"""Pricing: hand-checked values for every corridor, fee type, rounding rule and limit."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quote_service.adapters.pricing_file import load_pricing
from quote_service.domain.pricing import (
    AmountLimits,
    ConstantProductPools,
    FeeRule,
    Pool,
    PricingConfig,
    QuoteRequest,
    price_quote,
    round_down,
)
from service_kit.errors import InvalidInput

CONFIG = PricingConfig(
    platform=FeeRule(relative=D("0.01")),
    anchors={
        "stellar-eur": FeeRule(relative=D("0.005"), absolute={"USDC": D("1.00")}),
        "stellar-ars": FeeRule(absolute={"USDC": D("0.5")}),
        "brla": FeeRule(relative=D("0.002"), absolute={"BRL": D("1")}),
    },
    networks={
        "pendulum": FeeRule(absolute={"USDC": D("0.05")}),
        "assethub": FeeRule(absolute={"USDC": D("0.5"), "BRL": D("2.5")}),
    },
    partners={
        "rel": FeeRule(relative=D("0.003")),
        "abs": FeeRule(absolute={"USDC": D("2"), "BRL": D("10")}),
    },
    limits={
        "USDC": AmountLimits(D("10"), D("10000")),
        "BRL": AmountLimits(D("50"), D("50000")),
    },
)
POOLS = ConstantProductPools(
    [
        Pool("USDC", "EURC", D(1_000_000), D(900_000)),
        Pool("USDC", "ARST", D(1_000_000), D(1_000_000_000), D("0.001")),
        Pool("BRLA", "USDC", D(5_000_000), D(1_000_000)),
    ]
)


def sell_eur(amount: str, partner: str = "", source: str = "pendulum") -> QuoteRequest:
    return QuoteRequest("SELL", source, "sepa", amount, "USDC", "EUR", partner)


def test_sell_usdc_to_eur_from_pendulum() -> None:
    # network 0.05 + platform 1% of 100 + anchor (1.00 + 0.5% of 100) = 2.55 USDC
    # rate = 900000 / (1000000 + 97.45) = 0.8999123035…, output = 97.45 × rate = 87.696… → 87.69
    price = price_quote(sell_eur("100"), CONFIG, POOLS)
    assert price.input_amount == D("100.000000")
    assert (price.fees.network, price.fees.platform, price.fees.anchor) == (
        D("0.05"),
        D("1.000000"),
        D("1.500000"),
    )
    assert price.fees.partner_markup == 0
    assert price.fees.total == D("2.55")
    assert price.fees.currency == "USDC"
    assert price.rate == D("0.8999123035")
    assert price.output_amount == D("87.69")


def test_sell_usdc_to_ars_from_assethub_with_swap_fee() -> None:
    # network 0.5 + platform 2.5 + anchor 0.5 = 3.5; net 246.5; dx' = 246.5 × 0.999
    # out = 1e9 × dx' / (1e6 + dx') = 246192.87…; rate = out / 246.5
    price = price_quote(
        QuoteRequest("SELL", "assethub", "cbu", "250", "USDC", "ARS"), CONFIG, POOLS
    )
    assert price.fees.total == D("3.5")
    assert price.rate == D("998.7540533187")
    assert price.output_amount == D("246192.87")


def test_buy_brl_by_pix_to_usdc_on_assethub() -> None:
    # network 2.50 BRL + platform 10.00 + anchor (1 + 0.2% of 1000 = 3.00) = 15.50; net 984.50
    # rate = 1e6 / (5e6 + 984.5) = 0.1999606277…; output at 6 decimals, rounded down
    price = price_quote(
        QuoteRequest("BUY", "pix", "assethub", "1000", "BRL", "USDC"), CONFIG, POOLS
    )
    assert price.fees.currency == "BRL"
    assert (price.fees.network, price.fees.platform, price.fees.anchor) == (
        D("2.50"),
        D("10.00"),
        D("3.00"),
    )
    assert price.fees.total == D("15.50")
    assert price.rate == D("0.1999606277")
    assert price.output_amount == D("196.861237")


def test_relative_partner_markup() -> None:
    price = price_quote(sell_eur("100", "rel"), CONFIG, POOLS)
    assert price.fees.partner_markup == D("0.300000")
    assert price.fees.total == D("2.85")


def test_absolute_partner_markup_in_the_input_currency() -> None:
    price = price_quote(sell_eur("100", "abs"), CONFIG, POOLS)
    assert price.fees.partner_markup == D("2")
    assert price.fees.total == D("4.55")
    assert price.rate == D("0.8999141031")
    assert price.output_amount == D("85.89")
    buy = price_quote(
        QuoteRequest("BUY", "pix", "assethub", "1000", "BRL", "USDC", "abs"), CONFIG, POOLS
    )
    assert buy.fees.partner_markup == D("10")


def test_relative_fees_round_up_and_output_rounds_down() -> None:
    # platform 1% of 10.000001 = 0.10000001 → 0.100001; anchor 1 + 0.050000005 → 1.050001
    price = price_quote(sell_eur("10.000001"), CONFIG, POOLS)
    assert price.fees.platform == D("0.100001")
    assert price.fees.anchor == D("1.050001")
    assert price.fees.total == D("1.200002")
    assert price.rate == D("0.8999920800")
    assert price.output_amount == D("7.91")  # 8.799999 × 0.89999208 = 7.9199…


@pytest.mark.parametrize(
    ("amount", "reason"),
    [("9.999999", "AMOUNT_BELOW_MINIMUM"), ("10000.000001", "AMOUNT_ABOVE_MAXIMUM")],
)
def test_limits_per_currency(amount: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        price_quote(sell_eur(amount), CONFIG, POOLS)
    assert exc.value.reason == reason
    assert [v.field for v in exc.value.violations] == ["input_amount"]


def test_limits_are_inclusive() -> None:
    assert price_quote(sell_eur("10"), CONFIG, POOLS).output_amount > 0
    assert price_quote(sell_eur("10000"), CONFIG, POOLS).output_amount > 0


def test_input_that_does_not_cover_fees_is_rejected() -> None:
    config = PricingConfig(
        platform=FeeRule(),
        anchors={"stellar-eur": FeeRule(absolute={"USDC": D("20")})},
        networks={},
        partners={},
        limits={"USDC": AmountLimits(D("10"), D("100"))},
    )
    with pytest.raises(InvalidInput) as exc:
        price_quote(sell_eur("15"), config, POOLS)
    assert exc.value.reason == "AMOUNT_TOO_LOW_FOR_FEES"
    with pytest.raises(InvalidInput) as exact:
        price_quote(sell_eur("20"), config, POOLS)  # zero left after fees: still no quote
    assert exact.value.reason == "AMOUNT_TOO_LOW_FOR_FEES"


@pytest.mark.parametrize(
    "amount", ["-5", "abc", "1e3", "", " 5", "5\n", "NaN", "1.1234567", "0", "0.000000"]
)
def test_malformed_amounts(amount: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        price_quote(sell_eur(amount), CONFIG, POOLS)
    assert exc.value.reason == "INVALID_QUOTE_REQUEST"
    assert [v.field for v in exc.value.violations] == ["input_amount"]


def test_every_bad_field_is_named() -> None:
    request = QuoteRequest("RAMP_TYPE_UNSPECIFIED", "mars", "", "x", "DOGE", "EUR", "nobody")
    with pytest.raises(InvalidInput) as exc:
        price_quote(request, CONFIG, POOLS)
    assert {v.field for v in exc.value.violations} == {
        "ramp_type",
        "from",
        "to",
        "input_currency",
        "input_amount",
        "partner_id",
    }


@pytest.mark.parametrize(
    "request_",
    [
        QuoteRequest("BUY", "pendulum", "sepa", "100", "USDC", "EUR"),
        QuoteRequest("SELL", "pix", "assethub", "100", "BRL", "USDC"),
        QuoteRequest("SELL", "pendulum", "sepa", "100", "USDC", "ARS"),
    ],
)
def test_unsupported_corridors(request_: QuoteRequest) -> None:
    with pytest.raises(InvalidInput) as exc:
        price_quote(request_, CONFIG, POOLS)
    assert exc.value.reason == "UNSUPPORTED_CORRIDOR"


def test_shipped_pricing_file_prices_every_corridor() -> None:
    config, pools = load_pricing()
    for request in (
        sell_eur("100"),
        sell_eur("100", source="assethub"),
        QuoteRequest("SELL", "pendulum", "cbu", "100", "USDC", "ARS"),
        QuoteRequest("BUY", "pix", "assethub", "500", "BRL", "USDC"),
    ):
        assert price_quote(request, config, pools).output_amount > 0


@given(
    cents=st.integers(min_value=10_000_000, max_value=10_000_000_000),
    partner=st.sampled_from(["", "rel", "abs"]),
    source=st.sampled_from(["pendulum", "assethub"]),
)
def test_fees_rate_and_output_are_consistent(cents: int, partner: str, source: str) -> None:
    amount = D(cents).scaleb(-6)
    price = price_quote(sell_eur(str(amount), partner, source), CONFIG, POOLS)
    fees = price.fees
    assert fees.network + fees.platform + fees.anchor + fees.partner_markup == fees.total
    net = price.input_amount - fees.total
    assert price.output_amount == round_down(net * price.rate, 2)
    # Never promise more than the pool pays for the net amount.
    assert price.output_amount <= POOLS.output_for("USDC", "EURC", net)
