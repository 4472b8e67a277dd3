"""The corridors a quote can price, as data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RampType(StrEnum):
    """Which way money moves."""

    SELL = "SELL"  # off-ramp: stablecoins → fiat
    BUY = "BUY"  # on-ramp: fiat → stablecoins


@dataclass(frozen=True)
class Corridor:
    """One priced route: where money enters and leaves, and what prices it.

    `pool_in`/`pool_out` are the on-chain tokens swapped on Pendulum; fiat legs move 1:1
    between a fiat currency and its token (EUR↔EURC, ARS↔ARST, BRL↔BRLA).
    """

    ramp_type: RampType
    from_network: str
    to_network: str
    input_currency: str
    output_currency: str
    anchor: str
    pool_in: str
    pool_out: str


# Decimal places of every currency a quote may use.
DECIMALS: dict[str, int] = {"USDC": 6, "EUR": 2, "ARS": 2, "BRL": 2}

NETWORKS = frozenset({"pendulum", "assethub", "pix", "sepa", "cbu"})

CORRIDORS: tuple[Corridor, ...] = (
    *(
        Corridor(RampType.SELL, src, "sepa", "USDC", "EUR", "stellar-eur", "USDC", "EURC")
        for src in ("pendulum", "assethub")
    ),
    *(
        Corridor(RampType.SELL, src, "cbu", "USDC", "ARS", "stellar-ars", "USDC", "ARST")
        for src in ("pendulum", "assethub")
    ),
    Corridor(RampType.BUY, "pix", "assethub", "BRL", "USDC", "brla", "BRLA", "USDC"),
)


def find_corridor(
    ramp_type: RampType,
    from_network: str,
    to_network: str,
    input_currency: str,
    output_currency: str,
) -> Corridor | None:
    """The corridor matching every field, or None."""
    key = (ramp_type, from_network, to_network, input_currency, output_currency)
    for corridor in CORRIDORS:
        if key == (
            corridor.ramp_type,
            corridor.from_network,
            corridor.to_network,
            corridor.input_currency,
            corridor.output_currency,
        ):
            return corridor
    return None
