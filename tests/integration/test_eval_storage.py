"""Eval sets and results persisted for real, on SQLite and PostgreSQL: sets attached to a
model and a version, tenant adapter sets private to their tenant, runs stored per version,
a regression reported as an operator event and blocking the rollout's promotion."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.adapters import Adapter, AdapterStatus
from tenantserve.registry.artifacts import LocalArtifactStore
from tenantserve.registry.eval_service import REGRESSION_EVENT, EvalService
from tenantserve.registry.model import ArtifactFile, manifest_digest
from tenantserve.registry.rollout_eval import RolloutEvalGate
from tenantserve.registry.rollout_service import RolloutConflictError, RolloutService
from tenantserve.registry.service import RegistryService
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate
from tenantserve.tenancy.model import Region, TenantContext
from tenantserve.tiers import Tier
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database

TENANT_A = TenantContext("ten_aaaaaaaaaaaaaaaa", Tier.STANDARD, Region.US, key_id="k_a")
TENANT_B = TenantContext("ten_bbbbbbbbbbbbbbbb", Tier.STANDARD, Region.US, key_id="k_b")
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
GOLDEN: dict[str, Any] = {
    "name": "golden",
    "items": [
        {
            "id": "fr",
            "prompt": "Capital of France?",
            "rule": {"type": "contains", "any": ["Paris"]},
        },
        {"id": "jp", "prompt": "Capital of Japan?", "rule": {"type": "contains", "any": ["Tokyo"]}},
    ],
}


class Answers:
    """A completer per ref: `answers[ref]` is what every prompt gets."""

    def __init__(self, answers: Mapping[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, ref: str, lora: object) -> Any:
        if ref not in self.answers:
            return None
        outer = self

        class _Completer:
            async def complete(self, messages: Sequence[dict[str, str]], max_tokens: int) -> str:
                outer.asked.append(ref)
                return outer.answers[ref]

        return _Completer()


@pytest.fixture(scope="session")
def evals_postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    else:
        url = request.getfixturevalue("evals_postgres_url")
    await migrate(url)
    db = Database(url)
    async with db.engine.begin() as conn:
        for table in ("eval_results", "eval_sets", "rollouts", "model_versions"):
            await conn.exec_driver_sql(f"DELETE FROM {table}")
    yield db
    await db.dispose()


@pytest.fixture
async def registry(database: Database, tmp_path: Path) -> RegistryService:
    service = RegistryService(
        lambda: RegistryUnitOfWork(database.sessionmaker), LocalArtifactStore(tmp_path / "a")
    )
    for version, weights in (("1.0.0", b"a"), ("1.1.0", b"b")):
        ckpt = tmp_path / version
        ckpt.mkdir()
        (ckpt / "config.json").write_text('{"torch_dtype": "bfloat16"}')
        (ckpt / "model.safetensors").write_bytes(weights * 64)
        status = "active" if version == "1.0.0" else "canary"
        await service.register(ckpt, "llama", version, status=status)
    return service


@pytest.fixture
def answers() -> Answers:
    return Answers({"llama@1.0.0": "Paris. Tokyo.", "llama@1.1.0": "Paris, I think."})


@pytest.fixture
def events() -> list[tuple[str, str | None, Mapping[str, Any]]]:
    return []


@pytest.fixture
def evals(
    database: Database, registry: RegistryService, answers: Answers, events: list[Any]
) -> EvalService:
    return EvalService(
        lambda: RegistryUnitOfWork(database.sessionmaker),
        registry,
        answers,
        on_event=lambda *event: events.append(event),
    )


async def test_a_set_attached_to_a_model_applies_to_every_version_and_replaces_by_name(
    evals: EvalService,
) -> None:
    await evals.put_model_set("llama", GOLDEN)
    pinned = {**GOLDEN, "name": "pinned", "items": GOLDEN["items"][:1]}
    await evals.put_model_set("llama@1.1.0", pinned)
    assert [s.name for s in await evals.sets_for("llama@1.1.0")] == ["golden", "pinned"]
    assert [s.name for s in await evals.sets_for("llama@1.0.0")] == ["golden"]
    await evals.put_model_set("llama", {**GOLDEN, "items": GOLDEN["items"][:1]})
    (golden,) = [s for s in await evals.model_sets("llama") if s.target == "llama"]
    assert len(golden.eval_set.items) == 1
    with pytest.raises(NotFoundError):
        await evals.put_model_set("nothing", GOLDEN)
    with pytest.raises(InvalidRequestError, match="`items` must list"):
        await evals.put_model_set("llama", {"name": "empty", "items": []})


async def test_a_regressed_candidate_is_reported_and_fails_the_gate(
    evals: EvalService, events: list[Any]
) -> None:
    await evals.put_model_set("llama", GOLDEN)
    stable = await evals.run("llama")
    assert stable.ref == "llama@1.0.0" and stable.results[0].score == 1.0
    assert stable.verdict.passed
    candidate = await evals.run("llama@1.1.0")
    assert candidate.results[0].score == 0.5
    assert not candidate.verdict.passed
    assert "regressed from llama@1.0.0's 1.00" in candidate.verdict.detail
    [(kind, tenant, details)] = events
    assert (kind, tenant, details["ref"], details["baseline_ref"]) == (
        REGRESSION_EVENT,
        None,
        "llama@1.1.0",
        "llama@1.0.0",
    )
    stored = await evals.results("llama@1.1.0")
    assert [r.score for r in stored] == [0.5]
    assert [o.passed for o in stored[0].outcomes] == [True, False]
    assert len(await evals.results("llama")) == 2


async def test_a_rollout_with_a_regressed_candidate_cannot_be_promoted_to_100_percent(
    database: Database, evals: EvalService
) -> None:
    rollouts = RolloutService(
        lambda: RegistryUnitOfWork(database.sessionmaker),
        eval_gate=RolloutEvalGate(evals, auto_run=False),
    )
    await evals.put_model_set("llama", GOLDEN)
    await rollouts.start("llama", "1.1.0", shadow_percent=0, canary_steps=[50, 100])
    with pytest.raises(RolloutConflictError, match="no result yet"):
        await rollouts.promote("llama")
    await evals.run("llama@1.0.0")
    await evals.run("llama@1.1.0")
    with pytest.raises(RolloutConflictError, match=r"cannot promote: .* eval regression"):
        await rollouts.promote("llama")
    assert (await rollouts.status("llama")).percent == 50


async def test_a_tenants_adapter_set_is_invisible_to_another_tenant(evals: EvalService) -> None:
    await evals.put_adapter_set(TENANT_A, "support-bot", GOLDEN)
    stored, results = await evals.adapter_set(TENANT_A, "support-bot")
    assert stored.target == f"adapter:{TENANT_A.tenant_id}/support-bot"
    assert results == []
    with pytest.raises(NotFoundError):
        await evals.adapter_set(TENANT_B, "support-bot")
    with pytest.raises(NotFoundError):
        await evals.remove_adapter_set(TENANT_B, "support-bot")
    assert await evals.model_sets() == []  # tenant sets are not the operator's
    await evals.remove_adapter_set(TENANT_A, "support-bot")
    with pytest.raises(NotFoundError):
        await evals.adapter_set(TENANT_A, "support-bot")


def _adapter(tenant_id: str) -> Adapter:
    files = (ArtifactFile("adapter_model.safetensors", 1, "0" * 64),)
    return Adapter(
        id="adp_aaaaaaaaaaaaaaaa",
        tenant_id=tenant_id,
        name="support-bot",
        base_model="llama@1.0.0",
        rank=4,
        target_modules=("q_proj",),
        digest=manifest_digest(files),
        artifact_uri="file:///x",
        files=files,
        status=AdapterStatus.VALIDATING,
        created_at=NOW,
    )


async def test_a_tenant_eval_below_its_min_score_fails_the_adapter_check(
    evals: EvalService, answers: Answers, tmp_path: Path
) -> None:
    answers.answers = {"llama@1.0.0": "Paris"}
    await evals.put_adapter_set(TENANT_A, "support-bot", {**GOLDEN, "min_score": 0.5})
    ok = await evals.check_adapter(_adapter(TENANT_A.tenant_id), tmp_path)
    assert ok.ok and ok.report == "tenant eval golden: 1/2 passed (score 0.50)"
    await evals.put_adapter_set(TENANT_A, "support-bot", GOLDEN)  # min_score: every item
    failed = await evals.check_adapter(_adapter(TENANT_A.tenant_id), tmp_path)
    assert not failed.ok and "below min_score 1.00; failed items: jp" in (failed.report or "")
    # Tenant B's adapter of the same name has no set: nothing runs for it.
    assert (await evals.check_adapter(_adapter(TENANT_B.tenant_id), tmp_path)).report is None
