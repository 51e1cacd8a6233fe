"""The price book (domain, no framework): what tokens cost, the monthly platform fee per
tier, and the internal engine cost rate; every entry versioned by `effective_from`.

    TokenPrice     (model, adapter class, tier) -> USD per million input, cached-input and
                   output tokens. `model` is "name@version", "name" or "*" (the default).
    PlatformFee    tier -> USD per month, prorated by the time a tenant spends at the tier.
    EngineCost     USD per engine-hour (GPU-hour): the internal cost of serving, for the
                   margin view; never billed.

Lookups (`PriceBook.token_price(...)`) take the entry in effect at a time: among the
entries that match, the most specific model pattern wins (name@version, then name, then
"*"), and among those the latest `effective_from` not after the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from tenantserve.errors import InvalidRequestError
from tenantserve.tiers import Tier

DEFAULT_MODEL = "*"
# When the seeded default price book takes effect (before any usage can exist).
DEFAULT_EFFECTIVE_FROM = datetime(2000, 1, 1, tzinfo=UTC)
MAX_MODEL_CHARS = 200


class AdapterClass(StrEnum):
    """Whether a request ran on the base model or through a tenant's LoRA adapter."""

    BASE = "base"
    ADAPTER = "adapter"

    @classmethod
    def of(cls, adapter: str) -> AdapterClass:
        """The class of a usage row's adapter ref ("" is the base model)."""
        return cls.ADAPTER if adapter else cls.BASE


class NoPriceError(InvalidRequestError):
    """The price book has no entry for something that has to be priced."""


@dataclass(frozen=True)
class TokenPrice:
    """USD per million tokens of each kind for (model pattern, adapter class, tier)."""

    model: str
    adapter_class: AdapterClass
    tier: Tier
    input_usd_per_mtok: Decimal
    cached_input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    effective_from: datetime = DEFAULT_EFFECTIVE_FROM
    id: int | None = None  # the stored version's id (None before it is stored)

    def specificity(self, model: str) -> int | None:
        """How closely this entry's pattern names `model` (higher wins); None: no match."""
        if self.model == model:
            return 2
        if "@" not in self.model and model.partition("@")[0] == self.model:
            return 1
        return 0 if self.model == DEFAULT_MODEL else None


@dataclass(frozen=True)
class PlatformFee:
    """USD per month at `tier`, from `effective_from`."""

    tier: Tier
    usd_per_month: Decimal
    effective_from: datetime = DEFAULT_EFFECTIVE_FROM
    id: int | None = None


@dataclass(frozen=True)
class EngineCost:
    """The internal cost of one engine-hour (GPU-hour), from `effective_from`."""

    usd_per_engine_hour: Decimal
    effective_from: datetime = DEFAULT_EFFECTIVE_FROM
    id: int | None = None


def validate_model_pattern(model: str) -> str:
    """A price's model pattern: "*", "name" or "name@version"; InvalidRequestError."""
    model = model.strip()
    if not model or len(model) > MAX_MODEL_CHARS or any(c.isspace() for c in model):
        raise InvalidRequestError(f"model must be '*', NAME or NAME@VERSION, not {model!r}")
    if model != DEFAULT_MODEL and ("*" in model or model.count("@") > 1 or model.startswith("@")):
        raise InvalidRequestError(f"model must be '*', NAME or NAME@VERSION, not {model!r}")
    return model


def parse_adapter_class(value: str | AdapterClass) -> AdapterClass:
    try:
        return AdapterClass(value)
    except ValueError:
        raise InvalidRequestError(
            f"adapter_class must be 'base' or 'adapter', not {value!r}"
        ) from None


@dataclass(frozen=True)
class PriceBook:
    """Every version of every entry; lookups by time (see the module docstring)."""

    token_prices: Sequence[TokenPrice] = ()
    platform_fees: Sequence[PlatformFee] = ()
    engine_costs: Sequence[EngineCost] = field(default_factory=tuple)

    def token_price(
        self, model: str, adapter_class: AdapterClass, tier: Tier, at: datetime
    ) -> TokenPrice:
        """The token price in effect at `at`; NoPriceError when nothing matches."""
        best: tuple[int, datetime] | None = None
        found: TokenPrice | None = None
        for p in self.token_prices:
            if p.adapter_class is not adapter_class or p.tier is not tier:
                continue
            if p.effective_from > at:
                continue
            rank = p.specificity(model)
            if rank is None:
                continue
            if best is None or (rank, p.effective_from) > best:
                best, found = (rank, p.effective_from), p
        if found is None:
            raise NoPriceError(
                f"no token price for model {model!r} ({adapter_class.value}, {tier.value}) "
                f"at {at.isoformat()}; set one with `tenantserve price set`"
            )
        return found

    def platform_fee(self, tier: Tier, at: datetime) -> PlatformFee | None:
        """The fee in effect at `at` for `tier` (None: no fee)."""
        fees = [f for f in self.platform_fees if f.tier is tier and f.effective_from <= at]
        return max(fees, key=lambda f: f.effective_from, default=None)

    def fee_changes(self, tier: Tier, start: datetime, end: datetime) -> list[datetime]:
        """The times in (start, end) at which `tier`'s fee changes."""
        return sorted(
            {
                f.effective_from
                for f in self.platform_fees
                if f.tier is tier and start < f.effective_from < end
            }
        )

    def engine_cost(self, at: datetime) -> EngineCost | None:
        """The engine cost rate in effect at `at` (None: none set)."""
        costs = [c for c in self.engine_costs if c.effective_from <= at]
        return max(costs, key=lambda c: c.effective_from, default=None)


# The seeded price book (migration 0008 writes the same numbers; docs/billing.md lists
# them). USD per million tokens (input, cached input, output) per tier on the base model;
# through an adapter 20% more; monthly platform fees per tier; $2.00 per engine-hour.
DEFAULT_TOKEN_PRICES: dict[Tier, tuple[str, str, str]] = {
    Tier.FREE: ("0.50", "0.25", "1.50"),
    Tier.STANDARD: ("0.40", "0.20", "1.20"),
    Tier.PREMIUM: ("0.30", "0.15", "0.90"),
}
ADAPTER_MARKUP = Decimal("1.2")
DEFAULT_PLATFORM_FEES: dict[Tier, str] = {
    Tier.FREE: "0",
    Tier.STANDARD: "49.00",
    Tier.PREMIUM: "499.00",
}
DEFAULT_USD_PER_ENGINE_HOUR = "2.00"


def default_price_book() -> PriceBook:
    """The price book a new database starts with."""
    prices: list[TokenPrice] = []
    for tier, (inp, cached, out) in DEFAULT_TOKEN_PRICES.items():
        for adapter_class in AdapterClass:
            markup = ADAPTER_MARKUP if adapter_class is AdapterClass.ADAPTER else Decimal(1)
            prices.append(
                TokenPrice(
                    DEFAULT_MODEL,
                    adapter_class,
                    tier,
                    (Decimal(inp) * markup).quantize(Decimal("0.01")),
                    (Decimal(cached) * markup).quantize(Decimal("0.01")),
                    (Decimal(out) * markup).quantize(Decimal("0.01")),
                )
            )
    fees = [PlatformFee(tier, Decimal(usd)) for tier, usd in DEFAULT_PLATFORM_FEES.items()]
    return PriceBook(
        tuple(prices), tuple(fees), (EngineCost(Decimal(DEFAULT_USD_PER_ENGINE_HOUR)),)
    )
