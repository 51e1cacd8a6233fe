"""`PriceBookService`: read the price book and add versions to it.

Versions are never edited or deleted: a change is a new version with its own
`effective_from` (default: now), so an invoice recomputed later prices each hour with
what was in effect then. Backdating is allowed (drafts pick it up when regenerated;
finalized invoices never change).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from tenantserve.billing.money import parse_usd
from tenantserve.billing.pricebook import (
    EngineCost,
    PlatformFee,
    PriceBook,
    TokenPrice,
    parse_adapter_class,
    validate_model_pattern,
)
from tenantserve.billing.unit_of_work import BillingUnitOfWork
from tenantserve.errors import InvalidRequestError
from tenantserve.tenancy.model import parse_tier


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str | datetime | None, name: str = "effective_from") -> datetime | None:
    """An ISO 8601 time with a zone (a bare date is midnight UTC), or None."""
    if value is None or isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequestError(
                f"{name} must be an ISO 8601 time such as 2026-12-01T00:00:00Z, not {value!r}"
            ) from None
        if parsed.tzinfo is None and len(value.strip()) == 10:
            parsed = parsed.replace(tzinfo=UTC)
    if parsed is not None and parsed.tzinfo is None:
        raise InvalidRequestError(f"{name} needs a time zone (Z or +00:00): {value!r}")
    return None if parsed is None else parsed.astimezone(UTC)


class PriceBookService:
    """The price book's use cases (see the module docstring)."""

    def __init__(
        self,
        uow_factory: Callable[[], BillingUnitOfWork],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow = uow_factory
        self._clock = clock

    async def book(self) -> PriceBook:
        """Every version of every entry."""
        async with self._uow() as uow:
            return await uow.prices.book()

    async def set_token_price(
        self,
        model: str,
        adapter_class: str,
        tier: str,
        input_usd_per_mtok: object,
        cached_input_usd_per_mtok: object,
        output_usd_per_mtok: object,
        effective_from: str | datetime | None = None,
    ) -> TokenPrice:
        """A new version of the token price of (model pattern, adapter class, tier)."""
        now = self._clock()
        price = TokenPrice(
            model=validate_model_pattern(model),
            adapter_class=parse_adapter_class(adapter_class),
            tier=parse_tier(tier),
            input_usd_per_mtok=parse_usd(input_usd_per_mtok, "input_usd_per_mtok"),
            cached_input_usd_per_mtok=parse_usd(
                cached_input_usd_per_mtok, "cached_input_usd_per_mtok"
            ),
            output_usd_per_mtok=parse_usd(output_usd_per_mtok, "output_usd_per_mtok"),
            effective_from=parse_time(effective_from) or now,
        )
        async with self._uow() as uow:
            stored = await uow.prices.add_token_price(price, now)
            await uow.commit()
        return stored

    async def set_platform_fee(
        self, tier: str, usd_per_month: object, effective_from: str | datetime | None = None
    ) -> PlatformFee:
        """A new version of a tier's monthly platform fee."""
        now = self._clock()
        fee = PlatformFee(
            parse_tier(tier),
            parse_usd(usd_per_month, "usd_per_month"),
            parse_time(effective_from) or now,
        )
        async with self._uow() as uow:
            stored = await uow.prices.add_platform_fee(fee, now)
            await uow.commit()
        return stored

    async def set_engine_cost(
        self, usd_per_engine_hour: object, effective_from: str | datetime | None = None
    ) -> EngineCost:
        """A new version of the internal cost of an engine-hour."""
        now = self._clock()
        cost = EngineCost(
            parse_usd(usd_per_engine_hour, "usd_per_engine_hour"),
            parse_time(effective_from) or now,
        )
        async with self._uow() as uow:
            stored = await uow.prices.add_engine_cost(cost, now)
            await uow.commit()
        return stored
