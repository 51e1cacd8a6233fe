"""Tenants and keys persisted for real: every test runs on SQLite and on PostgreSQL.

PostgreSQL tests use a fresh database per session (dropped at the end), so reruns and
parallel runs never see each other's rows.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, delete, inspect, select, text

from tenantserve.admission.quotas import Enforcement, Quota, QuotaMetric, QuotaPeriod
from tenantserve.config import JwtConfig
from tenantserve.errors import (
    AuthenticationError,
    CredentialsExpiredError,
    CredentialsRevokedError,
    InvalidRequestError,
    NotFoundError,
    TenantSuspendedError,
)
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import current_revision, head_revision, migrate
from tenantserve.storage.schema import all_metadata
from tenantserve.tenancy.jwt_auth import JwtVerifier
from tenantserve.tenancy.keys import ApiKeyHasher
from tenantserve.tenancy.model import Region, TenantLimits, TenantStatus
from tenantserve.tenancy.service import TenancyService
from tenantserve.tenancy.tables import api_keys, metadata, tenants
from tenantserve.tenancy.unit_of_work import UnitOfWork
from tenantserve.tiers import Tier
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database

JWT_SECRET = "j" * 40
JWT_AUDIENCE = "tenantserve"


class Clock:
    """A settable UTC clock."""

    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database for this session, migrated by the tests that use it."""
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing has touched yet."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database with no tenants in it."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    await migrate(url)
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(delete(api_keys))
        await conn.execute(delete(tenants))
    yield db
    await db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(database: Database, clock: Clock) -> TenancyService:
    return TenancyService(
        lambda: UnitOfWork(database.sessionmaker),
        ApiKeyHasher("test-pepper"),
        JwtVerifier(JwtConfig(audience=JWT_AUDIENCE, hs256_secret=JWT_SECRET)),
        clock=clock,
    )


def _schema_differences(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, all_metadata()))  # type: ignore[arg-type]


def _table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migrations_build_the_schema_from_an_empty_database(empty_url: str) -> None:
    assert await current_revision(empty_url) is None
    await migrate(empty_url)
    await migrate(empty_url)  # a second run is a no-op
    assert await current_revision(empty_url) == head_revision()
    db = Database(empty_url)
    try:
        async with db.engine.connect() as conn:
            assert {"tenants", "api_keys"} <= await conn.run_sync(_table_names)
            assert await conn.run_sync(_schema_differences) == []
    finally:
        await db.dispose()


async def test_upgrading_from_0001_keeps_existing_tenants_with_no_quotas(
    empty_url: str,
) -> None:
    await migrate(empty_url, "0001")
    db = Database(empty_url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO tenants (id, name, tier, region, status, limits, created_at, "
                    "updated_at) VALUES ('ten_old', 'Old', 'free', 'us', 'active', "
                    "'{\"max_concurrent\": 2}', :at, :at)"
                ),
                {"at": datetime(2025, 1, 2, tzinfo=UTC)},
            )
        await migrate(empty_url)
        assert await current_revision(empty_url) == head_revision()
        service = TenancyService(lambda: UnitOfWork(db.sessionmaker), ApiKeyHasher("p"))
        old = await service.get_tenant("ten_old")
        assert old.quotas == () and old.limits == TenantLimits(max_concurrent=2)
        quota = {"metric": "requests", "period": "day", "limit": 5, "enforcement": "soft"}
        updated = await service.update_tenant("ten_old", quotas=[quota])
        assert (await service.get_tenant("ten_old")).quotas == updated.quotas
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_schema_differences) == []
    finally:
        await db.dispose()


async def test_created_tenants_are_listed_and_read_back(
    service: TenancyService, clock: Clock
) -> None:
    a = await service.create_tenant("Acme", "premium", "eu", limits={"requests_per_minute": 50})
    clock.now += timedelta(seconds=1)
    b = await service.create_tenant("  Beta  ", Tier.FREE, Region.US)
    assert a.id.startswith("ten_") and a.id != b.id
    assert b.name == "Beta"
    assert a.status is TenantStatus.ACTIVE
    listed = await service.list_tenants()
    assert [t.id for t in listed] == [a.id, b.id]
    assert listed[0] == a
    read = await service.get_tenant(a.id)
    assert read.tier is Tier.PREMIUM and read.region is Region.EU
    assert read.limits == TenantLimits(requests_per_minute=50)
    assert read.created_at == a.created_at and read.created_at.tzinfo is not None


async def test_placed_pools_are_the_dedicated_pools_some_tenant_is_on(
    service: TenancyService,
) -> None:
    a = await service.create_tenant("Acme", "premium", "us")
    b = await service.create_tenant("Beta", "premium", "us")
    await service.create_tenant("Gamma", "standard", "us")
    assert await service.placed_pools() == set()
    await service.update_tenant(a.id, pool="gold")
    await service.update_tenant(b.id, pool="gold")
    assert await service.placed_pools() == {"gold"}
    await service.update_tenant(a.id, pool=None)
    assert await service.placed_pools() == {"gold"}  # b is still on it
    await service.update_tenant(b.id, pool="silver")
    assert await service.placed_pools() == {"silver"}


async def test_update_changes_tier_region_limits_and_status_durably(
    service: TenancyService,
) -> None:
    t = await service.create_tenant("Acme", "free", "us", limits={"max_concurrent": 2})
    await service.update_tenant(
        t.id,
        tier="standard",
        region="eu",
        status="suspended",
        limits={"tokens_per_minute": 1000, "max_concurrent": None},
    )
    read = await service.get_tenant(t.id)
    assert (read.tier, read.region, read.status) == (Tier.STANDARD, Region.EU, "suspended")
    assert read.limits == TenantLimits(tokens_per_minute=1000)
    assert read.name == "Acme"


async def test_quotas_replace_the_whole_list_and_reach_the_context(
    service: TenancyService,
) -> None:
    t = await service.create_tenant("Acme", "standard", "us")
    assert t.quotas == ()
    key = (await service.create_key(t.id)).plaintext
    month_tokens = {
        "metric": "tokens",
        "period": "month",
        "limit": 1_000_000,
        "enforcement": "hard",
    }
    day_requests = {"metric": "requests", "period": "day", "limit": 500, "enforcement": "soft"}
    await service.update_tenant(t.id, quotas=[month_tokens, day_requests])
    expected = (
        Quota(QuotaMetric.TOKENS, QuotaPeriod.MONTH, 1_000_000, Enforcement.HARD),
        Quota(QuotaMetric.REQUESTS, QuotaPeriod.DAY, 500, Enforcement.SOFT),
    )
    read = await service.get_tenant(t.id)
    assert read.quotas == expected
    assert (await service.list_tenants())[0].quotas == expected
    assert (await service.authenticate(key)).quotas == expected
    # Other updates leave quotas alone; a new list replaces them, [] removes them.
    await service.update_tenant(t.id, tier="premium", limits={"max_concurrent": 3})
    assert (await service.get_tenant(t.id)).quotas == expected
    await service.update_tenant(t.id, quotas=[day_requests])
    assert (await service.get_tenant(t.id)).quotas == expected[1:]
    await service.update_tenant(t.id, quotas=[])
    assert (await service.get_tenant(t.id)).quotas == ()


async def test_bad_or_duplicate_quotas_are_refused_and_nothing_changes(
    service: TenancyService,
) -> None:
    t = await service.create_tenant("Acme", "standard", "us")
    good = {"metric": "tokens", "period": "month", "limit": 10, "enforcement": "hard"}
    await service.update_tenant(t.id, quotas=[good])
    with pytest.raises(InvalidRequestError, match="requests, tokens, prompt_tokens"):
        await service.update_tenant(t.id, tier="premium", quotas=[{**good, "metric": "gpus"}])
    with pytest.raises(InvalidRequestError, match="more than one quota"):
        await service.update_tenant(t.id, quotas=[good, {**good, "enforcement": "soft"}])
    read = await service.get_tenant(t.id)
    assert read.quotas == (Quota(QuotaMetric.TOKENS, QuotaPeriod.MONTH, 10, Enforcement.HARD),)
    assert read.tier is Tier.STANDARD


async def test_invalid_tenant_fields_are_refused_and_nothing_is_stored(
    service: TenancyService,
) -> None:
    with pytest.raises(InvalidRequestError, match="tier"):
        await service.create_tenant("Acme", "gold", "us")
    with pytest.raises(InvalidRequestError, match="region"):
        await service.create_tenant("Acme", "free", "asia")
    with pytest.raises(InvalidRequestError, match="unknown limit"):
        await service.create_tenant("Acme", "free", "us", limits={"gpus": 3})
    with pytest.raises(InvalidRequestError, match="positive"):
        await service.create_tenant("Acme", "free", "us", limits={"max_concurrent": 0})
    assert await service.list_tenants() == []


async def test_unknown_tenant_is_not_found(service: TenancyService) -> None:
    with pytest.raises(NotFoundError):
        await service.update_tenant("ten_nobody", tier="free")
    with pytest.raises(NotFoundError):
        await service.create_key("ten_nobody")
    with pytest.raises(NotFoundError):
        await service.revoke_key("key_nobody")


async def test_uncommitted_work_is_rolled_back(database: Database, service: TenancyService) -> None:
    t = await service.create_tenant("Acme", "free", "us")
    async with UnitOfWork(database.sessionmaker) as uow:
        t.name = "Renamed"
        await uow.tenants.update(t, t.created_at)
    assert (await service.get_tenant(t.id)).name == "Acme"


async def test_a_new_key_authenticates_as_its_tenant(service: TenancyService) -> None:
    t = await service.create_tenant("Acme", "standard", "eu", limits={"max_concurrent": 3})
    new = await service.create_key(t.id)
    assert new.plaintext.startswith("ts-") and new.key.id.startswith("key_")
    context = await service.authenticate(new.plaintext)
    assert context.tenant_id == t.id
    assert (context.tier, context.region) == (Tier.STANDARD, Region.EU)
    assert context.key_id == new.key.id and context.subject is None
    assert context.allowed_models == frozenset()
    assert context.limits == TenantLimits(max_concurrent=3)
    assert [k.id for k in await service.list_keys(t.id)] == [new.key.id]


async def test_wrong_secret_and_unknown_key_id_are_refused(service: TenancyService) -> None:
    t = await service.create_tenant("Acme", "free", "us")
    plaintext = (await service.create_key(t.id)).plaintext
    prefix, id_part, secret = plaintext.split("-", 2)
    with pytest.raises(AuthenticationError, match="invalid API key"):
        await service.authenticate(f"{prefix}-{id_part}-{secret[::-1]}")
    with pytest.raises(AuthenticationError, match="invalid API key"):
        await service.authenticate(f"{prefix}-aaaaaaaaaaaaaaaa-{secret}")
    for garbage in ("", "   ", "Bearer", "sk-proj-123"):
        with pytest.raises(AuthenticationError):
            await service.authenticate(garbage)


async def test_a_revoked_key_is_refused(service: TenancyService, clock: Clock) -> None:
    t = await service.create_tenant("Acme", "free", "us")
    new = await service.create_key(t.id)
    revoked = await service.revoke_key(new.key.id)
    assert revoked.revoked_at == clock.now
    clock.now += timedelta(hours=1)
    assert (await service.revoke_key(new.key.id)).revoked_at == revoked.revoked_at
    with pytest.raises(CredentialsRevokedError):
        await service.authenticate(new.plaintext)


async def test_an_expired_key_is_refused(service: TenancyService, clock: Clock) -> None:
    t = await service.create_tenant("Acme", "free", "us")
    new = await service.create_key(t.id, expires_days=1)
    assert new.key.expires_at == clock.now + timedelta(days=1)
    clock.now += timedelta(hours=23)
    await service.authenticate(new.plaintext)
    clock.now += timedelta(hours=1)
    with pytest.raises(CredentialsExpiredError):
        await service.authenticate(new.plaintext)
    with pytest.raises(InvalidRequestError, match="expires_days"):
        await service.create_key(t.id, expires_days=0)


async def test_a_suspended_tenant_is_refused_until_reactivated(service: TenancyService) -> None:
    t = await service.create_tenant("Acme", "premium", "us")
    new = await service.create_key(t.id)
    await service.update_tenant(t.id, status="suspended")
    with pytest.raises(TenantSuspendedError):
        await service.authenticate(new.plaintext)
    await service.update_tenant(t.id, status="active")
    assert (await service.authenticate(new.plaintext)).tenant_id == t.id


async def test_another_tenants_key_never_yields_this_tenants_context(
    service: TenancyService,
) -> None:
    a = await service.create_tenant("A", "premium", "us")
    b = await service.create_tenant("B", "free", "eu")
    keys_a = [(await service.create_key(a.id)).plaintext for _ in range(3)]
    keys_b = [(await service.create_key(b.id)).plaintext for _ in range(3)]
    for plaintext in keys_a:
        assert (await service.authenticate(plaintext)).tenant_id == a.id
    for plaintext in keys_b:
        context = await service.authenticate(plaintext)
        assert context.tenant_id == b.id
        assert (context.tier, context.region) == (Tier.FREE, Region.EU)
    # Splicing one tenant's key id with another's secret never authenticates.
    for left, right in ((keys_a[0], keys_b[0]), (keys_b[0], keys_a[0])):
        id_prefix = "-".join(left.split("-", 2)[:2])
        secret = right.split("-", 2)[2]
        with pytest.raises(AuthenticationError):
            await service.authenticate(f"{id_prefix}-{secret}")
    # Suspending A leaves B's keys working, and B's keys never reach A.
    await service.update_tenant(a.id, status="suspended")
    assert (await service.authenticate(keys_b[1])).tenant_id == b.id


async def test_allowed_models_scope_is_carried_into_the_context(service: TenancyService) -> None:
    t = await service.create_tenant("Acme", "standard", "us")
    scoped = await service.create_key(t.id, allowed_models=["smollm2", "my-adapter", "smollm2"])
    assert scoped.key.allowed_models == ("my-adapter", "smollm2")
    context = await service.authenticate(scoped.plaintext)
    assert context.allowed_models == frozenset({"smollm2", "my-adapter"})
    assert context.allows_model("smollm2") and not context.allows_model("other")
    unscoped = await service.authenticate((await service.create_key(t.id)).plaintext)
    assert unscoped.allows_model("anything")


async def test_the_plaintext_key_is_never_stored(
    database: Database, service: TenancyService
) -> None:
    t = await service.create_tenant("Acme", "free", "us")
    new = await service.create_key(t.id, allowed_models=["m"])
    secret = new.plaintext.split("-", 2)[2]
    async with database.engine.connect() as conn:
        rows = [
            str(tuple(row))
            for table in metadata.sorted_tables
            for row in (await conn.execute(select(table))).all()
        ]
    dump = "\n".join(rows)
    assert new.key.id in dump  # the rows were read
    assert secret not in dump and new.plaintext not in dump
    if database.dialect == "sqlite":
        await database.dispose()
        path = Path(database.url.database or "")
        files = [path, path.with_name(path.name + "-wal")]
        raw = b"".join(f.read_bytes() for f in files if f.exists())
        assert new.key.id.encode() in raw
        assert secret.encode() not in raw


async def test_a_jwt_authenticates_an_existing_active_tenant_only(
    service: TenancyService,
) -> None:
    t = await service.create_tenant("Acme", "premium", "eu")

    def token(tenant_id: str, **claims: object) -> str:
        payload = {"sub": "user-7", "tenant_id": tenant_id, "aud": JWT_AUDIENCE}
        payload["exp"] = int(time.time()) + 60
        payload.update(claims)
        return jwt.encode(payload, JWT_SECRET, algorithm="HS256")

    context = await service.authenticate(token(t.id, allowed_models=["m1"]))
    assert context.tenant_id == t.id and context.subject == "user-7" and context.key_id is None
    assert context.allowed_models == frozenset({"m1"}) and context.region is Region.EU
    with pytest.raises(AuthenticationError, match="unknown tenant"):
        await service.authenticate(token("ten_nobody"))
    with pytest.raises(CredentialsExpiredError):
        await service.authenticate(token(t.id, exp=int(time.time()) - 60))
    await service.update_tenant(t.id, status="suspended")
    with pytest.raises(TenantSuspendedError):
        await service.authenticate(token(t.id))
