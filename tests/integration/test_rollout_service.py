"""Rollouts persisted for real, on SQLite and PostgreSQL: an unhealthy canary is rolled
back by `tick` with its reason recorded, a healthy one walks 1% → 10% → 100% on a fake
clock and finishes (the old version deprecated, naming its replacement), one running
rollout per model, and promote / rollback by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.artifact_cache import ArtifactCache
from tenantserve.registry.artifacts import LocalArtifactStore
from tenantserve.registry.model import ModelStatus, earliest_end_date
from tenantserve.registry.model_smoke import ModelSmokeTester
from tenantserve.registry.rollout import (
    GateResult,
    Rollout,
    RolloutPhase,
    RolloutPlan,
)
from tenantserve.registry.rollout_repository import DuplicateRolloutError
from tenantserve.registry.rollout_service import RolloutConflictError, RolloutService
from tenantserve.registry.service import RegistryService
from tenantserve.registry.tables import model_versions, rollouts
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database

STEP_S = 60
MIN_REQUESTS = 20


class Clock:
    """A settable UTC clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture(scope="session")
def rollout_postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database with no model versions and no rollouts."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    else:
        url = request.getfixturevalue("rollout_postgres_url")
    await migrate(url)
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(delete(rollouts))
        await conn.execute(delete(model_versions))
    yield db
    await db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def registry(database: Database, clock: Clock, tmp_path: Path) -> RegistryService:
    """A registry with llama@1.0.0 (active) and llama@1.1.0 (canary)."""
    service = RegistryService(
        lambda: RegistryUnitOfWork(database.sessionmaker),
        LocalArtifactStore(tmp_path / "artifacts"),
        clock=clock,
    )
    for version, status in (("1.0.0", "active"), ("1.1.0", "canary")):
        ckpt = tmp_path / version
        ckpt.mkdir()
        (ckpt / "config.json").write_text('{"torch_dtype": "float32"}')
        (ckpt / "model.safetensors").write_bytes(version.encode() * 100)
        await service.register(ckpt, "llama", version, status=status)
    return service


@pytest.fixture
def rollouts_service(database: Database, clock: Clock, registry: RegistryService) -> RolloutService:
    return RolloutService(lambda: RegistryUnitOfWork(database.sessionmaker), clock=clock)


def _feed(service: RolloutService, stable: int, candidate: int, candidate_errors: int = 0) -> None:
    for _ in range(stable):
        service.observe("llama@1.0.0", 0.1, error=False)
    for i in range(candidate):
        service.observe("llama@1.1.0", 0.1, error=i < candidate_errors)


async def _start(service: RolloutService, **kw: Any) -> Rollout:
    options: dict[str, Any] = {
        "shadow_percent": 0.0,
        "step_seconds": STEP_S,
        "min_requests": MIN_REQUESTS,
    }
    options.update(kw)
    return await service.start("llama", "1.1.0", **options)


async def test_a_canary_with_injected_errors_is_rolled_back_with_its_reason(
    rollouts_service: RolloutService, registry: RegistryService, clock: Clock
) -> None:
    started = await _start(rollouts_service)
    assert (started.phase, started.percent) == (RolloutPhase.CANARY, 1.0)
    assert (started.plan.stable_ref, started.plan.candidate_ref) == ("llama@1.0.0", "llama@1.1.0")
    _feed(rollouts_service, stable=200, candidate=MIN_REQUESTS, candidate_errors=5)
    changed = await rollouts_service.tick(clock.advance(1))
    assert [r.phase for r in changed] == [RolloutPhase.ROLLED_BACK]
    status = await rollouts_service.status("llama")
    assert status.phase is RolloutPhase.ROLLED_BACK and status.finished_at == clock.now
    last = status.history[-1]
    assert last.phase is RolloutPhase.ROLLED_BACK and last.percent == 0
    assert "canary 1%" in last.reason and "error rate 25.00%" in last.reason
    # Traffic is back on stable; the versions are as they were.
    assert rollouts_service.route("llama", "any") is None
    assert (await registry.get("llama@1.0.0")).status is ModelStatus.ACTIVE
    assert (await registry.get("llama@1.1.0")).status is ModelStatus.CANARY


async def test_a_healthy_canary_walks_its_steps_and_finishes_deprecating_the_old_version(
    rollouts_service: RolloutService, registry: RegistryService, clock: Clock
) -> None:
    await _start(rollouts_service, shadow_percent=5.0)
    assert (await rollouts_service.status("llama")).phase is RolloutPhase.SHADOW
    assert rollouts_service.route("llama", "r") == "llama@1.0.0"
    seen: list[str] = []
    for _ in range(4):  # shadow, 1%, 10%, 100%
        _feed(rollouts_service, stable=MIN_REQUESTS, candidate=MIN_REQUESTS)
        assert await rollouts_service.tick(clock.advance(STEP_S / 2)) == []  # too early
        changed = await rollouts_service.tick(clock.advance(STEP_S / 2))
        assert len(changed) == 1
        seen.append(changed[0].step_label)
    assert seen == ["canary 1%", "canary 10%", "canary 100%", "done"]
    done = await rollouts_service.status("llama")
    assert done.phase is RolloutPhase.DONE and done.percent == 100
    assert [e.percent for e in done.history] == [0, 1, 10, 100, 100]
    assert all("healthy" in e.reason for e in done.history[1:])
    assert "llama@1.0.0 deprecated until" in done.history[-1].reason
    old = await registry.get("llama@1.0.0")
    assert old.status is ModelStatus.DEPRECATED and old.replacement == "llama@1.1.0"
    assert old.deprecation_end_date == earliest_end_date(clock.now)
    assert (await registry.get("llama@1.1.0")).status is ModelStatus.ACTIVE
    # Plain `llama` now resolves to the new version; the rollout no longer routes.
    assert (await registry.resolve("llama", None)).version.ref == "llama@1.1.0"
    assert rollouts_service.route("llama", "r") is None


async def test_routing_at_a_step_sends_about_its_share_and_stays_sticky(
    rollouts_service: RolloutService, clock: Clock
) -> None:
    await _start(rollouts_service, canary_steps=[50, 100])
    ids = [f"req-{i}" for i in range(2000)]
    first = [rollouts_service.route("llama", i) for i in ids]
    assert first == [rollouts_service.route("llama", i) for i in ids]
    assert 0.45 < first.count("llama@1.1.0") / len(ids) < 0.55


async def test_a_model_has_at_most_one_running_rollout(
    rollouts_service: RolloutService, database: Database, clock: Clock
) -> None:
    await _start(rollouts_service)
    with pytest.raises(RolloutConflictError, match="already has a running rollout"):
        await _start(rollouts_service)
    # The database refuses a second running row even when the check is raced.
    plan = RolloutPlan("llama", "llama@1.0.0", "llama@1.1.0", shadow_percent=0)
    async with RegistryUnitOfWork(database.sessionmaker) as uow:
        with pytest.raises(DuplicateRolloutError):
            await uow.rollouts.add(Rollout.start(plan, clock.now), clock.now)
    await rollouts_service.rollback("llama", "try again later")
    again = await _start(rollouts_service)
    assert again.is_active
    assert (await rollouts_service.status("llama")).id == again.id


async def test_promote_and_rollback_by_hand_record_their_reasons(
    rollouts_service: RolloutService, clock: Clock
) -> None:
    await _start(rollouts_service)
    promoted = await rollouts_service.promote("llama", "looks fine")
    assert promoted.percent == 10 and promoted.history[-1].reason == "promoted by hand: looks fine"
    # A new step starts with fresh stats.
    assert rollouts_service.stats("llama") is not None
    assert rollouts_service.stats("llama").candidate.requests == 0  # type: ignore[union-attr]
    rolled = await rollouts_service.rollback("llama", "customer report")
    assert rolled.phase is RolloutPhase.ROLLED_BACK
    assert rolled.history[-1].reason == "rolled back by hand: customer report"
    with pytest.raises(NotFoundError):
        await rollouts_service.promote("llama")
    with pytest.raises(NotFoundError):
        await rollouts_service.status("other")


async def test_a_candidate_must_be_registered_and_newer_than_stable(
    rollouts_service: RolloutService, registry: RegistryService, tmp_path: Path
) -> None:
    old = tmp_path / "0.9.0"
    old.mkdir()
    (old / "config.json").write_text('{"torch_dtype": "float32"}')
    (old / "model.safetensors").write_bytes(b"old")
    await registry.register(old, "llama", "0.9.0", status="canary")
    with pytest.raises(
        InvalidRequestError, match=r"not newer than the stable version llama@1\.0\.0"
    ):
        await rollouts_service.start("llama", "0.9.0")
    with pytest.raises(NotFoundError):
        await rollouts_service.start("llama", "9.9.9")
    with pytest.raises(InvalidRequestError, match="no other active public version"):
        await rollouts_service.start("llama", "llama@1.0.0")
    with pytest.raises(InvalidRequestError, match="a version of llama"):
        await rollouts_service.start("llama", "other@1.1.0")
    with pytest.raises(InvalidRequestError, match="golden-set"):
        await rollouts_service.start("llama", "1.1.0", require_golden_set=True)


async def test_a_failed_golden_set_eval_rolls_the_rollout_back(
    database: Database, clock: Clock, registry: RegistryService
) -> None:
    asked: list[str] = []

    async def golden_set(ref: str) -> GateResult:
        asked.append(ref)
        return GateResult(False, "14 of 20 golden answers")

    service = RolloutService(
        lambda: RegistryUnitOfWork(database.sessionmaker), clock=clock, golden_set=golden_set
    )
    await _start(service, require_golden_set=True)
    _feed(service, stable=MIN_REQUESTS, candidate=MIN_REQUESTS)
    [changed] = await service.tick(clock.advance(STEP_S))
    assert asked == ["llama@1.1.0"]
    assert changed.phase is RolloutPhase.ROLLED_BACK
    assert "golden-set eval failed: 14 of 20" in changed.history[-1].reason


async def test_another_process_sees_a_rollout_after_its_tick(
    rollouts_service: RolloutService, database: Database, clock: Clock
) -> None:
    other = RolloutService(lambda: RegistryUnitOfWork(database.sessionmaker), clock=clock)
    assert other.route("llama", "r") is None
    await _start(rollouts_service, canary_steps=[100])
    await other.tick()
    assert other.route("llama", "r") == "llama@1.1.0"
    await rollouts_service.rollback("llama")
    await other.tick()
    assert other.route("llama", "r") is None


async def test_a_candidate_that_fails_its_smoke_test_does_not_start(
    database: Database, clock: Clock, registry: RegistryService, tmp_path: Path
) -> None:
    # llama@1.1.0's "weights" are 500 bytes of text: no engine can load them.
    smoke = ModelSmokeTester(ArtifactCache(registry.store, tmp_path / "cache"), timeout_s=120)
    service = RolloutService(
        lambda: RegistryUnitOfWork(database.sessionmaker), clock=clock, smoke_test=smoke.run
    )
    with pytest.raises(InvalidRequestError, match=r"llama@1\.1\.0 failed its smoke test"):
        await service.start("llama", "1.1.0")
    assert await service.list_active() == []
