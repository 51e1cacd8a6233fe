"""`PriceBookRepository`, `CreditRepository` and `UsageReader`: the price book, credit
grants and what billing reads of metering and tenancy, in and out of the database as
domain objects.

Works inside the caller's transaction (the unit of work's session); it never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.billing.calculator import TierChange, UsageRow
from tenantserve.billing.costs import EngineUsage, engine_seconds_decimal
from tenantserve.billing.credits import CreditApplication, CreditGrant
from tenantserve.billing.money import ZERO
from tenantserve.billing.period import BillingPeriod
from tenantserve.billing.pricebook import (
    AdapterClass,
    EngineCost,
    PlatformFee,
    PriceBook,
    TokenPrice,
)
from tenantserve.billing.tables import (
    credit_applications,
    credit_grants,
    engine_costs,
    platform_fees,
    token_prices,
)
from tenantserve.errors import InvalidRequestError
from tenantserve.metering.events import UsageEvent, UsageStatus
from tenantserve.metering.report import Granularity, truncate
from tenantserve.metering.tables import usage_buckets, usage_events
from tenantserve.tenancy.tables import tenant_tier_changes
from tenantserve.tiers import Tier


class DuplicatePriceError(InvalidRequestError):
    """A version of this entry already takes effect at that time (versions are never
    edited: add one with another `effective_from`)."""


class PriceBookRepository:
    """Every version of every price book entry."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def book(self) -> PriceBook:
        """The whole price book (a few rows per model and tier)."""
        prices = (await self._session.execute(select(token_prices))).mappings()
        token = tuple(_token_price(row) for row in prices)
        fees_rows = (await self._session.execute(select(platform_fees))).mappings()
        fees = tuple(
            PlatformFee(Tier(r["tier"]), r["usd_per_month"], r["effective_from"], r["id"])
            for r in fees_rows
        )
        cost_rows = (await self._session.execute(select(engine_costs))).mappings()
        costs = tuple(
            EngineCost(r["usd_per_engine_hour"], r["effective_from"], r["id"]) for r in cost_rows
        )
        return PriceBook(token, fees, costs)

    async def add_token_price(self, price: TokenPrice, now: datetime) -> TokenPrice:
        """Store a new version; DuplicatePriceError when one takes effect at that time."""
        key = (
            token_prices.c.model == price.model,
            token_prices.c.adapter_class == price.adapter_class.value,
            token_prices.c.tier == price.tier.value,
            token_prices.c.effective_from == price.effective_from,
        )
        await self._refuse_duplicate(select(token_prices.c.id).where(*key), "token price")
        result = await self._session.execute(
            insert(token_prices)
            .values(
                model=price.model,
                adapter_class=price.adapter_class.value,
                tier=price.tier.value,
                input_usd_per_mtok=price.input_usd_per_mtok,
                cached_input_usd_per_mtok=price.cached_input_usd_per_mtok,
                output_usd_per_mtok=price.output_usd_per_mtok,
                effective_from=price.effective_from,
                created_at=now,
            )
            .returning(token_prices.c.id)
        )
        return TokenPrice(**{**vars(price), "id": result.scalar_one()})

    async def add_platform_fee(self, fee: PlatformFee, now: datetime) -> PlatformFee:
        """Store a new version of a tier's monthly fee."""
        await self._refuse_duplicate(
            select(platform_fees.c.id).where(
                platform_fees.c.tier == fee.tier.value,
                platform_fees.c.effective_from == fee.effective_from,
            ),
            "platform fee",
        )
        result = await self._session.execute(
            insert(platform_fees)
            .values(
                tier=fee.tier.value,
                usd_per_month=fee.usd_per_month,
                effective_from=fee.effective_from,
                created_at=now,
            )
            .returning(platform_fees.c.id)
        )
        return PlatformFee(fee.tier, fee.usd_per_month, fee.effective_from, result.scalar_one())

    async def add_engine_cost(self, cost: EngineCost, now: datetime) -> EngineCost:
        """Store a new version of the engine-hour cost rate."""
        await self._refuse_duplicate(
            select(engine_costs.c.id).where(engine_costs.c.effective_from == cost.effective_from),
            "engine cost",
        )
        result = await self._session.execute(
            insert(engine_costs)
            .values(
                usd_per_engine_hour=cost.usd_per_engine_hour,
                effective_from=cost.effective_from,
                created_at=now,
            )
            .returning(engine_costs.c.id)
        )
        return EngineCost(cost.usd_per_engine_hour, cost.effective_from, result.scalar_one())

    async def _refuse_duplicate(self, query: Any, what: str) -> None:
        if (await self._session.execute(query)).first() is not None:
            raise DuplicatePriceError(
                f"a {what} version with that effective_from exists already; versions are "
                "never edited: add one with a later effective_from"
            )


class CreditRepository:
    """Credit grants and what invoices drew on them."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, grant: CreditGrant) -> None:
        await self._session.execute(
            insert(credit_grants).values(
                id=grant.id,
                tenant_id=grant.tenant_id,
                amount_usd=grant.amount_usd,
                granted_at=grant.granted_at,
                expires_at=grant.expires_at,
                reason=grant.reason,
                credit_note_id=grant.credit_note_id,
            )
        )

    async def list(
        self, tenant_id: str | None = None, exclude_invoice: str | None = None, lock: bool = False
    ) -> list[CreditGrant]:
        """Grants (of `tenant_id`), oldest first, with their remaining balance; what
        `exclude_invoice` drew counts as not drawn (it is being recomputed). `lock`: rows
        locked until the transaction ends (PostgreSQL), so two invoices never draw the
        same balance."""
        query = select(credit_grants).order_by(credit_grants.c.granted_at, credit_grants.c.id)
        if tenant_id is not None:
            query = query.where(credit_grants.c.tenant_id == tenant_id)
        if lock:
            query = query.with_for_update()
        rows = list((await self._session.execute(query)).mappings())
        # Summed here, not in SQL: SQLite keeps the amounts as decimal strings.
        drawn_query = select(credit_applications.c.grant_id, credit_applications.c.amount_usd)
        if tenant_id is not None:
            drawn_query = drawn_query.join(
                credit_grants, credit_grants.c.id == credit_applications.c.grant_id
            ).where(credit_grants.c.tenant_id == tenant_id)
        if exclude_invoice is not None:
            drawn_query = drawn_query.where(credit_applications.c.invoice_id != exclude_invoice)
        drawn: dict[str, Decimal] = {}
        for grant_id, amount in (await self._session.execute(drawn_query)).all():
            drawn[grant_id] = drawn.get(grant_id, ZERO) + amount
        return [_grant(row, drawn.get(row["id"], ZERO)) for row in rows]

    async def set_applications(
        self, invoice_id: str, applications: Sequence[CreditApplication]
    ) -> None:
        """Replace what the invoice draws."""
        await self._session.execute(
            delete(credit_applications).where(credit_applications.c.invoice_id == invoice_id)
        )
        if applications:
            await self._session.execute(
                insert(credit_applications),
                [
                    {"invoice_id": invoice_id, "grant_id": a.grant_id, "amount_usd": a.amount_usd}
                    for a in applications
                ],
            )


class UsageReader:
    """What billing reads of metering (usage buckets and events) and of tenancy (the
    tier history); never writes."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def hour_rows(self, tenant_id: str, period: BillingPeriod) -> list[UsageRow]:
        """The tenant's hour buckets of the period (bucketed by request END time)."""
        b = usage_buckets.c
        query = (
            select(b.bucket_start, b.model, b.adapter, b.tier)
            .add_columns(b.input_tokens, b.cached_input_tokens, b.output_tokens)
            .where(b.tenant_id == tenant_id, b.granularity == "hour")
            .where(b.bucket_start >= period.start, b.bucket_start < period.end)
        )
        rows = (await self._session.execute(query)).all()
        return [
            UsageRow(
                _utc(r.bucket_start),
                r.model,
                r.adapter,
                r.tier,
                int(r.input_tokens),
                int(r.cached_input_tokens),
                int(r.output_tokens),
            )
            for r in rows
        ]

    async def event_rows(self, tenant_id: str, period: BillingPeriod) -> list[UsageRow]:
        """The tenant's metered events that ENDED in the period, one row each, with the
        billable tokens of `UsageEvent`'s rule and the hour they were bucketed in."""
        e = usage_events.c
        query = select(usage_events).where(
            e.tenant_id == tenant_id, e.ended_at >= period.start, e.ended_at < period.end
        )
        out = []
        for row in (await self._session.execute(query)).mappings():
            event = _event(row)
            out.append(
                UsageRow(
                    truncate(_utc(row["ended_at"]), Granularity.HOUR),
                    event.model,
                    event.adapter,
                    event.tier,
                    event.billable_input_tokens,
                    event.billable_cached_input_tokens,
                    event.billable_output_tokens,
                )
            )
        return out

    async def engine_rows(self, period: BillingPeriod) -> list[EngineUsage]:
        """Engine-seconds per tenant and hour bucket in the period."""
        b = usage_buckets.c
        query = (
            select(b.tenant_id, b.bucket_start, func.sum(b.engine_seconds).label("seconds"))
            .where(b.granularity == "hour")
            .where(b.bucket_start >= period.start, b.bucket_start < period.end)
            .group_by(b.tenant_id, b.bucket_start)
        )
        rows = (await self._session.execute(query)).all()
        return [
            EngineUsage(r.tenant_id, _utc(r.bucket_start), engine_seconds_decimal(r.seconds or 0.0))
            for r in rows
        ]

    async def tier_changes(self, tenant_id: str) -> list[TierChange]:
        """The tenant's tier history, oldest first."""
        c = tenant_tier_changes.c
        query = (
            select(c.tier, c.effective_at)
            .where(c.tenant_id == tenant_id)
            .order_by(c.effective_at, c.id)
        )
        rows = (await self._session.execute(query)).all()
        return [TierChange(Tier(r.tier), _utc(r.effective_at)) for r in rows]

    async def billable_tenants(self, period: BillingPeriod) -> list[str]:
        """Tenants that existed before the period ended or have usage in it, by id."""
        existed = select(tenant_tier_changes.c.tenant_id).where(
            tenant_tier_changes.c.effective_at < period.end
        )
        used = select(usage_buckets.c.tenant_id).where(
            usage_buckets.c.granularity == "hour",
            usage_buckets.c.bucket_start >= period.start,
            usage_buckets.c.bucket_start < period.end,
        )
        found = set((await self._session.execute(existed)).scalars())
        found.update((await self._session.execute(used)).scalars())
        return sorted(found)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _token_price(row: RowMapping) -> TokenPrice:
    return TokenPrice(
        model=row["model"],
        adapter_class=AdapterClass(row["adapter_class"]),
        tier=Tier(row["tier"]),
        input_usd_per_mtok=row["input_usd_per_mtok"],
        cached_input_usd_per_mtok=row["cached_input_usd_per_mtok"],
        output_usd_per_mtok=row["output_usd_per_mtok"],
        effective_from=row["effective_from"],
        id=row["id"],
    )


def _grant(row: RowMapping, drawn: Decimal) -> CreditGrant:
    return CreditGrant(
        id=row["id"],
        tenant_id=row["tenant_id"],
        amount_usd=row["amount_usd"],
        granted_at=row["granted_at"],
        expires_at=row["expires_at"],
        reason=row["reason"],
        remaining_usd=row["amount_usd"] - drawn,
        credit_note_id=row["credit_note_id"],
    )


def _event(row: RowMapping) -> UsageEvent:
    first = row["first_token_at"]
    return UsageEvent(
        event_id=row["event_id"],
        request_id=row["request_id"],
        tenant_id=row["tenant_id"],
        model=row["model"],
        adapter=row["adapter"],
        pool=row["pool"],
        region=row["region"],
        tier=row["tier"],
        status=UsageStatus(row["status"]),
        input_tokens=int(row["input_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        started_at=_utc(row["started_at"]).timestamp(),
        first_token_at=None if first is None else _utc(first).timestamp(),
        ended_at=_utc(row["ended_at"]).timestamp(),
        engine_seconds=float(row["engine_seconds"]),
    )
