"""Billing persisted for real, on SQLite and PostgreSQL: invoices generated from metered
usage (idempotent), finalized (immutable), corrected by credit notes, reproduced from the
events; credits, proration and the price book's versions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from tenantserve.billing.invoice import InvoiceFinalizedError, InvoiceStateError, LineKind
from tenantserve.billing.price_service import PriceBookService
from tenantserve.billing.pricebook import DEFAULT_EFFECTIVE_FROM, default_price_book
from tenantserve.billing.service import BillingService
from tenantserve.billing.tables import (
    credit_applications,
    credit_grants,
    credit_notes,
    engine_costs,
    invoices,
    platform_fees,
    token_prices,
)
from tenantserve.billing.unit_of_work import BillingUnitOfWork
from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.metering.events import UsageStatus
from tenantserve.metering.store import UsageStore
from tenantserve.metering.tables import usage_buckets, usage_events
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate
from tenantserve.tenancy.keys import ApiKeyHasher
from tenantserve.tenancy.service import TenancyService
from tenantserve.tenancy.tables import tenants
from tenantserve.tenancy.unit_of_work import UnitOfWork
from tests.helpers.billing import Clock, usage_event
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def billing_postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database with no tenants, usage or invoices, and the seeded price book."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    else:
        url = request.getfixturevalue("billing_postgres_url")
    await migrate(url)
    db = Database(url)
    async with db.engine.begin() as conn:
        for table in (credit_applications, credit_notes, credit_grants, invoices):
            await conn.execute(delete(table))
        for table in (token_prices, platform_fees, engine_costs):
            await conn.execute(
                delete(table).where(table.c.effective_from != DEFAULT_EFFECTIVE_FROM)
            )
        for table in (usage_events, usage_buckets, tenants):
            await conn.execute(delete(table))
    yield db
    await db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 10, 1, tzinfo=UTC))


@pytest.fixture
def tenancy(database: Database, clock: Clock) -> TenancyService:
    return TenancyService(lambda: UnitOfWork(database.sessionmaker), ApiKeyHasher("p"), clock=clock)


@pytest.fixture
def billing(database: Database, clock: Clock) -> BillingService:
    return BillingService(lambda: BillingUnitOfWork(database.sessionmaker), clock=clock)


@pytest.fixture
def prices(database: Database, clock: Clock) -> PriceBookService:
    return PriceBookService(lambda: BillingUnitOfWork(database.sessionmaker), clock=clock)


async def _tenant(tenancy: TenancyService, tier: str = "free") -> str:
    return (await tenancy.create_tenant("acme", tier, "us")).id


async def test_the_seeded_price_book_is_the_documented_default(prices: PriceBookService) -> None:
    book = await prices.book()
    default = default_price_book()
    key = lambda p: (p.model, p.adapter_class, p.tier)  # noqa: E731
    assert {key(p): p.output_usd_per_mtok for p in book.token_prices} == {
        key(p): p.output_usd_per_mtok for p in default.token_prices
    }
    assert {key(p): p.input_usd_per_mtok for p in book.token_prices} == {
        key(p): p.input_usd_per_mtok for p in default.token_prices
    }
    assert {f.tier: f.usd_per_month for f in book.platform_fees} == {
        f.tier: f.usd_per_month for f in default.platform_fees
    }
    assert [c.usd_per_engine_hour for c in book.engine_costs] == [Decimal("2.00")]


async def test_generating_twice_keeps_one_invoice_with_the_same_lines(
    database: Database, tenancy: TenancyService, billing: BillingService, clock: Clock
) -> None:
    tenant = await _tenant(tenancy, "standard")
    await UsageStore(database.engine).apply(
        [usage_event(tenant, NOV + timedelta(days=d, hours=3)) for d in range(5)]
    )
    clock.now = DEC + timedelta(days=1)
    [first] = await billing.generate("2026-11")
    [second] = await billing.generate("2026-11", tenant_id=tenant)
    assert (first.outcome, second.outcome) == ("created", "unchanged")
    assert first.invoice.id == second.invoice.id
    assert first.invoice.lines == second.invoice.lines
    async with database.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(invoices))).scalar() == 1
    usage = [ln for ln in second.invoice.lines if ln.kind is LineKind.USAGE]
    assert [(ln.input_tokens, ln.output_tokens) for ln in usage] == [(5_000, 2_500)]
    # 5,000 input at $0.40/M + 2,500 output at $1.20/M; the whole month at $49.
    assert usage[0].amount_usd == Decimal("0.005")
    assert second.invoice.total_usd == Decimal("49.005")


async def test_new_usage_recomputes_the_draft_in_place(
    database: Database, tenancy: TenancyService, billing: BillingService
) -> None:
    tenant = await _tenant(tenancy)
    store = UsageStore(database.engine)
    await store.apply([usage_event(tenant, NOV + timedelta(days=1), tier="free")])
    [first] = await billing.generate("2026-11")
    await store.apply([usage_event(tenant, NOV + timedelta(days=2), tier="free")])
    [second] = await billing.generate("2026-11")
    assert second.outcome == "updated"
    assert second.invoice.id == first.invoice.id
    assert second.invoice.total_usd == 2 * first.invoice.total_usd
    assert len(await billing.list_invoices(tenant_id=tenant)) == 1


async def test_a_finalized_invoice_never_changes(
    database: Database, tenancy: TenancyService, billing: BillingService, clock: Clock
) -> None:
    tenant = await _tenant(tenancy)
    store = UsageStore(database.engine)
    await store.apply([usage_event(tenant, NOV + timedelta(days=1), tier="free")])
    [draft] = await billing.generate("2026-11")
    with pytest.raises(InvoiceStateError, match="not over"):
        await billing.finalize(draft.invoice.id)
    clock.now = DEC + timedelta(hours=1)
    final = await billing.finalize(draft.invoice.id)
    assert final.finalized_at == clock.now
    with pytest.raises(InvoiceFinalizedError):
        await billing.finalize(draft.invoice.id)
    await store.apply([usage_event(tenant, NOV + timedelta(days=2), tier="free")])
    with pytest.raises(InvoiceFinalizedError):
        await billing.generate("2026-11", tenant_id=tenant)
    [again] = await billing.generate("2026-11")
    assert again.outcome == "finalized"
    stored = await billing.get(draft.invoice.id)
    assert stored.lines == draft.invoice.lines
    assert stored.total_usd == draft.invoice.total_usd


async def test_a_credit_note_corrects_a_finalized_invoice_and_the_next_invoice_draws_it(
    database: Database,
    tenancy: TenancyService,
    billing: BillingService,
    prices: PriceBookService,
    clock: Clock,
) -> None:
    tenant = await _tenant(tenancy)
    store = UsageStore(database.engine)
    await store.apply([usage_event(tenant, NOV + timedelta(days=1), tier="free")])
    [nov] = await billing.generate("2026-11")
    with pytest.raises(InvoiceStateError, match="draft"):
        await billing.credit_note(nov.invoice.id, "too early")
    clock.now = DEC + timedelta(hours=1)
    await billing.finalize(nov.invoice.id)
    # The free tier's price for November is corrected (backdated) to half.
    await prices.set_token_price("*", "base", "free", "0.25", "0.125", "0.75", "2026-11-01")
    note = await billing.credit_note(nov.invoice.id, "price correction")
    assert note.amount_usd == nov.invoice.total_usd / 2
    assert [k for k, _ in note.lines] == ["usage:smollm2@1:base:free"]
    with pytest.raises(InvalidRequestError, match="nothing to credit"):
        await billing.credit_note(nov.invoice.id, "again")
    with pytest.raises(InvalidRequestError, match="exceeds"):
        await billing.credit_note(nov.invoice.id, "too much", amount_usd="1")
    stored = await billing.get(nov.invoice.id)
    assert [n.id for n in stored.credit_notes] == [note.id]
    assert stored.lines == nov.invoice.lines
    # December's invoice draws the note's amount as a credit.
    await store.apply([usage_event(tenant, DEC + timedelta(days=3), tier="free")])
    [dec] = await billing.generate("2026-12")
    credit = [ln for ln in dec.invoice.lines if ln.kind is LineKind.CREDIT]
    assert [ln.amount_usd for ln in credit] == [-note.amount_usd]
    assert note.id in credit[0].description
    [grant] = await billing.credits(tenant)
    assert grant.remaining_usd == 0 and grant.credit_note_id == note.id


async def test_the_invoice_is_reproduced_from_the_usage_events(
    database: Database, tenancy: TenancyService, billing: BillingService
) -> None:
    tenant = await _tenant(tenancy, "premium")
    events = [
        usage_event(tenant, NOV + timedelta(hours=h), tier="premium", cached_input_tokens=h)
        for h in range(0, 700, 7)
    ]
    events += [
        usage_event(tenant, NOV + timedelta(days=3), adapter="ten_x/legal@2", tier="premium"),
        usage_event(tenant, NOV + timedelta(days=4), status=UsageStatus.CANCELLED, tier="premium"),
        # Failed before any output: not billed; failed after some output: billed.
        usage_event(
            tenant,
            NOV + timedelta(days=5),
            status=UsageStatus.ERROR,
            output_tokens=0,
            tier="premium",
        ),
        usage_event(tenant, NOV + timedelta(days=6), status=UsageStatus.ERROR, tier="premium"),
    ]
    await UsageStore(database.engine).apply(events)
    [generated] = await billing.generate("2026-11")
    check = await billing.reproduce(generated.invoice.id)
    assert check.matches, (check.invoiced, check.from_events)
    billed = [e for e in events if e.billed]
    assert sum(q[0] for q in check.from_events.values()) == sum(e.input_tokens for e in billed)
    assert len(check.invoiced) == 2  # base and adapter
    # Buckets that lose an event (a bug, or tampering) no longer match the events.
    async with database.engine.begin() as conn:
        await conn.execute(
            usage_buckets.update()
            .where(usage_buckets.c.tenant_id == tenant, usage_buckets.c.adapter == "")
            .values(output_tokens=usage_buckets.c.output_tokens - 1)
        )
    [regenerated] = await billing.generate("2026-11")
    assert not (await billing.reproduce(regenerated.invoice.id)).matches


async def test_a_request_is_billed_in_the_month_it_ends(
    database: Database, tenancy: TenancyService, billing: BillingService
) -> None:
    tenant = await _tenant(tenancy)
    last_moment = DEC - timedelta(milliseconds=100)  # 2026-11-30 23:59:59.9
    first_moment = DEC + timedelta(milliseconds=100)  # 2026-12-01 00:00:00.1
    await UsageStore(database.engine).apply(
        [
            usage_event(tenant, last_moment, tier="free", input_tokens=111, duration_s=600),
            usage_event(tenant, first_moment, tier="free", input_tokens=222, duration_s=600),
        ]
    )
    [nov] = await billing.generate("2026-11")
    [dec] = await billing.generate("2026-12")
    assert [ln.input_tokens for ln in nov.invoice.lines] == [111]
    assert [ln.input_tokens for ln in dec.invoice.lines] == [222]
    assert (await billing.reproduce(nov.invoice.id)).matches
    assert (await billing.reproduce(dec.invoice.id)).matches


async def test_a_tier_change_prorates_the_platform_fee(
    tenancy: TenancyService, billing: BillingService, clock: Clock
) -> None:
    tenant = await _tenant(tenancy, "standard")
    clock.now = NOV + timedelta(days=15)  # half of November at each tier
    await tenancy.update_tenant(tenant, tier="premium")
    await tenancy.update_tenant(tenant, tier="premium")  # no change, no history row
    [nov] = await billing.generate("2026-11")
    fees = {ln.tier: ln.amount_usd for ln in nov.invoice.lines}
    assert fees == {"standard": Decimal("24.5"), "premium": Decimal("249.5")}
    [oct_] = await billing.generate("2026-10")  # created Oct 1: the whole month at standard
    assert [ln.amount_usd for ln in oct_.invoice.lines] == [Decimal("49")]
    with pytest.raises(NotFoundError):
        await billing.generate("2026-09", tenant_id=tenant)  # it did not exist yet


async def test_credits_draw_soonest_expiring_first_and_never_below_zero(
    tenancy: TenancyService, billing: BillingService, clock: Clock
) -> None:
    tenant = await _tenant(tenancy, "standard")  # $49 a month
    late = await billing.grant_credit(tenant, "40", "welcome", expires_at=DEC + timedelta(days=60))
    soon = await billing.grant_credit(tenant, "30", "promo", expires_at=DEC)
    gone = await billing.grant_credit(tenant, "100", "expired", expires_at=NOV + timedelta(days=1))
    [nov] = await billing.generate("2026-11")
    drawn = {ln.reference: ln.amount_usd for ln in nov.invoice.lines if ln.kind is LineKind.CREDIT}
    assert drawn == {soon.id: Decimal(-30), late.id: Decimal(-19)}
    assert nov.invoice.total_usd == 0
    [again] = await billing.generate("2026-11")  # recomputed: draws the same, not twice
    assert again.invoice.lines == nov.invoice.lines
    remaining = {g.id: g.remaining_usd for g in await billing.credits(tenant)}
    assert remaining == {late.id: Decimal(21), soon.id: 0, gone.id: Decimal(100)}
    with pytest.raises(InvalidRequestError):
        await billing.grant_credit(tenant, "-1", "negative")
    with pytest.raises(InvalidRequestError):
        await billing.grant_credit(tenant, 1.5, "a float")


async def test_each_hour_is_priced_with_the_version_in_effect_at_its_start(
    database: Database, tenancy: TenancyService, billing: BillingService, prices: PriceBookService
) -> None:
    tenant = await _tenant(tenancy)
    mid = NOV + timedelta(days=15)
    await prices.set_token_price("smollm2", "base", "free", "1", "1", "1", mid.isoformat())
    await prices.set_token_price("smollm2@2", "base", "free", "9", "9", "9", "2026-11-01")
    with pytest.raises(InvalidRequestError, match="exists already"):
        await prices.set_token_price("smollm2", "base", "free", "2", "2", "2", mid.isoformat())
    await UsageStore(database.engine).apply(
        [
            usage_event(tenant, mid - timedelta(minutes=1), tier="free", output_tokens=0),
            usage_event(tenant, mid + timedelta(minutes=1), tier="free", output_tokens=0),
            usage_event(tenant, mid, model="other@1", tier="free", output_tokens=0),
        ]
    )
    [nov] = await billing.generate("2026-11")
    amounts = {ln.line_key.rsplit(":", 1)[0]: ln.amount_usd for ln in nov.invoice.lines}
    assert amounts["usage:other@1:base:free"] == Decimal("0.0005")  # the "*" default
    lines = [ln for ln in nov.invoice.lines if ln.model == "smollm2@1"]
    assert sorted(ln.amount_usd for ln in lines) == [Decimal("0.0005"), Decimal("0.001")]


async def test_the_cost_report_sets_engine_cost_beside_revenue(
    database: Database, tenancy: TenancyService, billing: BillingService
) -> None:
    tenant = await _tenant(tenancy)
    await UsageStore(database.engine).apply(
        [
            usage_event(tenant, NOV + timedelta(hours=h), tier="free", engine_seconds=360)
            for h in range(10)
        ]
    )
    before = await billing.costs("2026-11")
    assert [(t.engine_seconds, t.cost_usd, t.revenue_usd) for t in before.tenants] == [
        (Decimal(3600), Decimal(2), None)
    ]
    await billing.generate("2026-11")
    [cost] = (await billing.costs("2026-11")).tenants
    assert cost.revenue_usd == Decimal("0.0125")
    assert cost.margin_usd == Decimal("0.0125") - 2
