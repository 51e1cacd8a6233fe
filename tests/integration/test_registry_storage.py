"""The model catalog persisted for real: every test runs on SQLite and on PostgreSQL (a
fresh database per session; with CI=true an unreachable PostgreSQL fails), with the local
artifact store in the test's directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, delete

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.artifacts import LocalArtifactStore, TransferProgress
from tenantserve.registry.default_model import (
    DEFAULT_MODEL_REGISTRY_NAME,
    register_default_model,
)
from tenantserve.registry.model import (
    ModelArchivedError,
    ModelFormat,
    ModelStatus,
    Quantization,
    VersionConflictError,
)
from tenantserve.registry.service import RegistryService
from tenantserve.registry.tables import model_versions
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import current_revision, head_revision, migrate
from tenantserve.storage.schema import all_metadata
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database

TENANT_A = "ten_aaaaaaaaaaaaaaaa"
TENANT_B = "ten_bbbbbbbbbbbbbbbb"


class Clock:
    """A settable UTC clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="session")
def registry_postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database with no model versions in it."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    else:
        url = request.getfixturevalue("registry_postgres_url")
    await migrate(url)
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(delete(model_versions))
    yield db
    await db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def service(database: Database, store: LocalArtifactStore, clock: Clock) -> RegistryService:
    return RegistryService(lambda: RegistryUnitOfWork(database.sessionmaker), store, clock=clock)


def _checkpoint(root: Path, weights: bytes = b"w" * 4096, dtype: str = "bfloat16") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(f'{{"torch_dtype": "{dtype}"}}')
    (root / "model.safetensors").write_bytes(weights)
    (root / "tokenizer.json").write_text("{}")
    return root


def _schema_differences(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, all_metadata()))  # type: ignore[arg-type]


async def test_migrations_build_the_registry_tables_matching_the_code(
    database: Database,
) -> None:
    assert await current_revision(database.url) == head_revision()
    async with database.engine.connect() as conn:
        assert await conn.run_sync(_schema_differences) == []


async def test_a_registered_version_is_stored_listed_and_read_back(
    service: RegistryService, store: LocalArtifactStore, tmp_path: Path
) -> None:
    source = _checkpoint(tmp_path / "ckpt")
    events: list[TransferProgress] = []
    result = await service.register(source, "llama", "1.0.0", progress=events.append)
    v = result.version
    assert result.created
    assert (v.format, v.quantization, v.status, v.scope) == (
        ModelFormat.SAFETENSORS,
        Quantization.BF16,
        ModelStatus.ACTIVE,
        "public",
    )
    assert [f.path for f in v.files] == ["config.json", "model.safetensors", "tokenizer.json"]
    assert v.min_memory_bytes == v.size_bytes == sum(f.stat().st_size for f in source.iterdir())
    assert {e.phase for e in events} == {"hash", "upload"}
    key = store.key_of(v.artifact_uri)
    assert (store.root / key / "model.safetensors").read_bytes() == b"w" * 4096
    assert await service.get("llama@1.0.0") == v
    assert await service.list() == [v]
    assert await service.versions("llama") == [v]
    with pytest.raises(NotFoundError):
        await service.versions("other")
    with pytest.raises(NotFoundError):
        await service.get("llama@9.9.9")


async def test_an_identical_re_registration_is_idempotent(
    service: RegistryService, tmp_path: Path, clock: Clock
) -> None:
    first = await service.register(_checkpoint(tmp_path / "a"), "llama", "1.0.0")
    clock.now += timedelta(hours=1)
    again = await service.register(_checkpoint(tmp_path / "b"), "llama", "1.0.0")
    assert not again.created and again.version == first.version
    assert len(await service.list()) == 1


async def test_the_same_version_with_other_content_is_refused_and_nothing_changes(
    service: RegistryService, store: LocalArtifactStore, tmp_path: Path
) -> None:
    first = (await service.register(_checkpoint(tmp_path / "a"), "llama", "1.0.0")).version
    changed = _checkpoint(tmp_path / "b", weights=b"x" * 4096)
    with pytest.raises(VersionConflictError, match=r"llama@1\.0\.0 .* another digest"):
        await service.register(changed, "llama", "1.0.0")
    with pytest.raises(VersionConflictError, match="another quantization"):
        await service.register(tmp_path / "a", "llama", "1.0.0", quantization="int8")
    assert await service.list() == [first]
    assert [p.name for p in (store.root / "models" / "llama" / "1.0.0").iterdir()] == [
        store.key_of(first.artifact_uri).rsplit("/", 1)[1]
    ]
    second = await service.register(changed, "llama", "1.0.1")
    assert second.created and second.version.digest != first.digest


async def test_concurrent_identical_registrations_store_one_version(
    service: RegistryService, tmp_path: Path
) -> None:
    source = _checkpoint(tmp_path / "a")
    results = await asyncio.gather(*(service.register(source, "llama", "1.0.0") for _ in range(3)))
    assert len({r.version.digest for r in results}) == 1
    assert len(await service.list()) == 1


async def test_bad_registrations_are_refused_before_anything_is_stored(
    service: RegistryService, store: LocalArtifactStore, tmp_path: Path
) -> None:
    source = _checkpoint(tmp_path / "a")
    with pytest.raises(InvalidRequestError, match="model name"):
        await service.register(source, "Llama", "1.0.0")
    with pytest.raises(InvalidRequestError, match="semver"):
        await service.register(source, "llama", "v1")
    with pytest.raises(InvalidRequestError, match="quantization must be one of"):
        await service.register(source, "llama", "1.0.0", quantization="int3")
    with pytest.raises(InvalidRequestError, match="status must be active or canary"):
        await service.register(source, "llama", "1.0.0", status="archived")
    with pytest.raises(InvalidRequestError, match="neither a directory nor a file"):
        await service.register(tmp_path / "nowhere", "llama", "1.0.0")
    unknown = _checkpoint(tmp_path / "c", dtype="float8")
    with pytest.raises(InvalidRequestError, match="cannot tell the weights' quantization"):
        await service.register(unknown, "llama", "1.0.0")
    await service.register(source, "llama", "2026-01-01")
    with pytest.raises(InvalidRequestError, match="uses date tags"):
        await service.register(source, "llama", "1.0.0")
    assert [v.version for v in await service.list()] == ["2026-01-01"]


async def test_deprecate_then_archive_is_durable_and_resolution_follows(
    service: RegistryService, tmp_path: Path, clock: Clock
) -> None:
    await service.register(_checkpoint(tmp_path / "a"), "llama", "1.0.0")
    await service.register(_checkpoint(tmp_path / "b", weights=b"2" * 10), "llama", "2.0.0")
    assert (await service.resolve("llama", TENANT_A)).version.version == "2.0.0"
    with pytest.raises(InvalidRequestError, match="2026-04-10 or later"):
        await service.deprecate("llama@1.0.0", "2026-02-01", "llama@2.0.0")
    with pytest.raises(InvalidRequestError, match="not registered"):
        await service.deprecate("llama@1.0.0", "2026-06-01", "llama@3.0.0")
    deprecated = await service.deprecate("llama@1.0.0", "2026-06-01", "llama@2.0.0")
    assert deprecated.status is ModelStatus.DEPRECATED
    read = await service.get("llama@1.0.0")
    assert read.deprecation_end_date == date(2026, 6, 1) and read.replacement == "llama@2.0.0"
    assert read.deprecated_at == clock.now
    pinned = await service.resolve("llama@1.0.0", TENANT_A)
    assert pinned.version.version == "1.0.0" and pinned.headers()["Sunset"].startswith("Mon, 01")
    clock.now += timedelta(days=200)
    archived = await service.archive("llama@1.0.0")
    assert (await service.get("llama@1.0.0")).archived_at == archived.archived_at == clock.now
    with pytest.raises(ModelArchivedError, match=r"use llama@2\.0\.0 instead"):
        await service.resolve("llama@1.0.0", TENANT_A)
    with pytest.raises(InvalidRequestError, match="final"):
        await service.deprecate("llama@1.0.0", "2027-06-01")
    with pytest.raises(InvalidRequestError, match="deprecate it first"):
        await service.archive("llama@2.0.0")


async def test_a_private_version_is_seen_only_by_its_tenant_until_published(
    service: RegistryService, tmp_path: Path
) -> None:
    await service.register(_checkpoint(tmp_path / "a"), "custom", "1.0.0", scope=TENANT_A)
    assert (await service.resolve("custom", TENANT_A)).version.scope == TENANT_A
    with pytest.raises(NotFoundError):
        await service.resolve("custom@1.0.0", TENANT_B)
    with pytest.raises(InvalidRequestError, match="another tenant"):
        await service.set_scope("custom@1.0.0", TENANT_B)
    await service.set_scope("custom@1.0.0", "public")
    assert (await service.resolve("custom", TENANT_B)).version.is_public
    with pytest.raises(InvalidRequestError, match="cannot be private"):
        await service.set_scope("custom@1.0.0", TENANT_A)


async def test_the_default_model_is_registered_once_and_found_again_cheaply(
    service: RegistryService, tmp_path: Path
) -> None:
    model_dir = _checkpoint(tmp_path / "SmolLM2-135M-Instruct", dtype="float32")
    first = await register_default_model(service, model_dir)
    assert first.ref == f"{DEFAULT_MODEL_REGISTRY_NAME}@1.0.0"
    assert await register_default_model(service, model_dir) == first
    # A re-conversion with other bytes becomes the next patch version.
    (model_dir / "model.safetensors").write_bytes(b"v" * 5000)
    second = await register_default_model(service, model_dir)
    assert second.version == "1.0.1"
    assert (await service.resolve(DEFAULT_MODEL_REGISTRY_NAME, None)).version == second
