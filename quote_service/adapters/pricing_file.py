"""Load the fee schedule, limits and pool reserves from a JSON file, validated."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from quote_service.domain.corridors import DECIMALS
from quote_service.domain.pricing import (
    AmountLimits,
    ConstantProductPools,
    FeeRule,
    Pool,
    PricingConfig,
)

DEFAULT_PRICING_FILE = Path(__file__).resolve().parent.parent / "pricing.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FeeRule(_Strict):
    relative: Decimal = Field(Decimal(0), ge=0, lt=1)
    absolute: dict[str, Decimal] = Field(default_factory=dict)

    def to_domain(self) -> FeeRule:
        for currency, amount in self.absolute.items():
            if currency not in DECIMALS or amount < 0:
                raise ValueError(f"bad absolute fee {currency}={amount}")
        return FeeRule(self.relative, dict(self.absolute))


class _Limits(_Strict):
    minimum: Decimal = Field(gt=0)
    maximum: Decimal = Field(gt=0)


class _Pool(_Strict):
    token_a: str
    token_b: str
    reserve_a: Decimal = Field(gt=0)
    reserve_b: Decimal = Field(gt=0)
    swap_fee: Decimal = Field(Decimal(0), ge=0, lt=1)


class _PricingFile(_Strict):
    comment: str = Field("", alias="_comment")
    platform: _FeeRule
    anchors: dict[str, _FeeRule]
    networks: dict[str, _FeeRule]
    partners: dict[str, _FeeRule]
    limits: dict[str, _Limits]
    rate_decimals: int = Field(10, ge=2, le=18)
    pools: list[_Pool]


def load_pricing(path: Path = DEFAULT_PRICING_FILE) -> tuple[PricingConfig, ConstantProductPools]:
    """Parse `path`; raise ValueError with the offending entry on a bad file."""
    raw = _PricingFile.model_validate_json(path.read_bytes())
    config = PricingConfig(
        platform=raw.platform.to_domain(),
        anchors={k: v.to_domain() for k, v in raw.anchors.items()},
        networks={k: v.to_domain() for k, v in raw.networks.items()},
        partners={k: v.to_domain() for k, v in raw.partners.items()},
        limits={k: AmountLimits(v.minimum, v.maximum) for k, v in raw.limits.items()},
        rate_decimals=raw.rate_decimals,
    )
    pools = ConstantProductPools([Pool(**p.model_dump()) for p in raw.pools])
    return config, pools
