"""Tenant adapter uploads persisted for real: every test runs on SQLite and on PostgreSQL,
with the local artifact store and a registry holding the tiny Llama as `tiny-llama@1.0.0`.
One test per validation rule; a refused upload keeps nothing (no row, no stored files, no
temporary files). The smoke test runs on a fake, except in the engine tests at the end."""

from __future__ import annotations

import asyncio
import io
import tarfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import delete

from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.config import CacheConfig, EngineConfig
from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.adapter_service import AdapterService, UploadPart
from tenantserve.registry.adapter_smoke import (
    NO_CHANGE_REPORT,
    EngineSmokeTester,
    SmokeReport,
    SmokeTester,
)
from tenantserve.registry.adapters import (
    AdapterExistsError,
    AdapterStatus,
    AdapterTooLargeError,
)
from tenantserve.registry.artifact_cache import ArtifactCache
from tenantserve.registry.artifacts import LocalArtifactStore
from tenantserve.registry.repository import DuplicateAdapterError
from tenantserve.registry.rollout import RolloutPhase
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.registry.service import RegistryService
from tenantserve.registry.tables import model_versions, rollouts, tenant_adapters
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate
from tenantserve.tenancy.model import Region, TenantContext
from tenantserve.tiers import Tier
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database
from tests.helpers.lora import (
    edit_adapter_tensors,
    set_adapter_config,
    write_random_adapter,
    zero_lora_b,
)

TENANT_A = TenantContext("ten_aaaaaaaaaaaaaaaa", Tier.STANDARD, Region.US, key_id="k_a")
TENANT_B = TenantContext("ten_bbbbbbbbbbbbbbbb", Tier.STANDARD, Region.US, key_id="k_b")
BASE = "tiny-llama"
MAX_RANK = 8
MAX_BYTES = 4 << 20
Files = list[tuple[str, Path]]


class FakeSmoke(SmokeTester):
    """Records what it tested and answers `verdict`."""

    def __init__(self) -> None:
        self.verdict = SmokeReport(True)
        self.calls: list[str] = []

    async def run(self, adapter_dir: Path, base_model_dir: Path, base_model: str) -> SmokeReport:
        assert (adapter_dir / "adapter_model.safetensors").is_file()
        assert (base_model_dir / "config.json").is_file()
        self.calls.append(base_model)
        return self.verdict


@pytest.fixture(scope="session")
def adapter_postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    else:
        url = request.getfixturevalue("adapter_postgres_url")
    await migrate(url)
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(delete(tenant_adapters))
        await conn.execute(delete(model_versions))
        await conn.execute(delete(rollouts))
    yield db
    await db.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
async def registry(
    database: Database, store: LocalArtifactStore, tiny_model_dir: Path
) -> RegistryService:
    service = RegistryService(lambda: RegistryUnitOfWork(database.sessionmaker), store)
    await service.register(tiny_model_dir, BASE, "1.0.0")
    await service.register(tiny_model_dir, "private-llama", "1.0.0", scope=TENANT_B.tenant_id)
    return service


@pytest.fixture
def smoke() -> FakeSmoke:
    return FakeSmoke()


@pytest.fixture
def events() -> list[tuple[str, str | None, dict[str, Any]]]:
    return []


@pytest.fixture
def make_service(
    database: Database,
    registry: RegistryService,
    store: LocalArtifactStore,
    smoke: FakeSmoke,
    events: list[tuple[str, str | None, dict[str, Any]]],
    tmp_path: Path,
) -> Callable[..., AdapterService]:
    def make(smoke_tester: SmokeTester = smoke, **changes: Any) -> AdapterService:
        options: dict[str, Any] = {"max_adapter_bytes": MAX_BYTES, "max_lora_rank": MAX_RANK}
        options.update(changes)
        return AdapterService(
            lambda: RegistryUnitOfWork(database.sessionmaker),
            registry,
            ArtifactCache(store, tmp_path / "cache"),
            smoke_tester,
            tmp_path / "work",
            on_event=lambda kind, tenant, details: events.append((kind, tenant, dict(details))),
            **options,
        )

    return make


@pytest.fixture
def service(make_service: Callable[..., AdapterService]) -> AdapterService:
    return make_service()


@pytest.fixture
def adapter_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A valid rank-4 adapter on q_proj and v_proj whose config names `tiny-llama`."""
    out = write_random_adapter(tiny_model_dir, tmp_path / "adapter", 4, ["q_proj", "v_proj"], 1)
    return set_adapter_config(out, base_model_name_or_path=BASE)


def _files(adapter_dir: Path) -> Files:
    return [(n, adapter_dir / n) for n in ("adapter_config.json", "adapter_model.safetensors")]


async def _upload(
    service: AdapterService,
    files: Files,
    name: str = "bot",
    ctx: TenantContext = TENANT_A,
    base_model: str | None = None,
) -> Any:
    with ExitStack() as stack:
        parts = [UploadPart(field, p.name, stack.enter_context(p.open("rb"))) for field, p in files]
        return await service.upload(ctx, name, parts, base_model=base_model)


async def _nothing_kept(service: AdapterService, store: LocalArtifactStore) -> None:
    assert await service.list(TENANT_A) == []
    assert not (store.root / "adapters").exists() or not any((store.root / "adapters").rglob("*"))
    uploads = service.work_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


def _tar(path: Path, members: list[tuple[str, bytes | None, bytes]]) -> Path:
    """A .tar.gz of (name, link target or None, content) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, link, content in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link.decode()
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def _adapter_members(adapter_dir: Path, folder: str = "") -> list[tuple[str, None, bytes]]:
    return [(folder + n, None, p.read_bytes()) for n, p in _files(adapter_dir)]


async def test_a_valid_adapter_is_checked_stored_smoke_tested_and_ready(
    service: AdapterService, smoke: FakeSmoke, store: LocalArtifactStore, adapter_dir: Path
) -> None:
    adapter = await _upload(service, _files(adapter_dir))
    assert adapter.status is AdapterStatus.READY and adapter.report is None
    assert (adapter.base_model, adapter.rank) == (f"{BASE}@1.0.0", 4)
    assert adapter.target_modules == ("q_proj", "v_proj")
    assert smoke.calls == [f"{BASE}@1.0.0"]
    key = store.key_of(adapter.artifact_uri)
    assert key.startswith(f"adapters/{TENANT_A.tenant_id}/bot/")
    assert sorted(p.name for p in (store.root / key).iterdir()) == [f.path for f in adapter.files]
    assert await service.get(TENANT_A, "bot") == adapter
    assert await service.list(TENANT_A) == [adapter]
    assert await service.resolve(TENANT_A, "bot") == adapter
    local = await service.local_dir(adapter)
    assert (local / "adapter_model.safetensors").read_bytes() == (
        adapter_dir / "adapter_model.safetensors"
    ).read_bytes()
    assert list((service.work_dir / "uploads").iterdir()) == []


async def test_an_archive_with_the_files_in_one_folder_is_accepted(
    service: AdapterService, adapter_dir: Path, tmp_path: Path
) -> None:
    members = [*_adapter_members(adapter_dir, "my-adapter/"), ("my-adapter/README.md", None, b"")]
    archive = _tar(tmp_path / "a.tar.gz", members)
    assert (await _upload(service, [("archive", archive)])).status is AdapterStatus.READY
    zipped = tmp_path / "a.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, _, content in _adapter_members(adapter_dir):
            zf.writestr(name, content)
    assert (await _upload(service, [("archive", zipped)], "zipped")).is_ready


async def test_pickle_files_are_refused(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path, tmp_path: Path
) -> None:
    pickle = tmp_path / "adapter_model.bin"
    torch.save({"w": torch.zeros(2)}, pickle)
    files = [_files(adapter_dir)[0], ("adapter_model.bin", pickle)]
    with pytest.raises(InvalidRequestError, match=r"pickle checkpoints .* are refused"):
        await _upload(service, files)
    members = [_adapter_members(adapter_dir)[0], ("adapter_model.pt", None, pickle.read_bytes())]
    with pytest.raises(InvalidRequestError, match="pickle"):
        await _upload(service, [("archive", _tar(tmp_path / "p.tar.gz", members))])
    # A pickle under the safetensors name is not a safetensors file.
    disguised = tmp_path / "weights"
    disguised.write_bytes(pickle.read_bytes())
    with pytest.raises(InvalidRequestError, match="not a safetensors file"):
        await _upload(service, [_files(adapter_dir)[0], ("adapter_model.safetensors", disguised)])
    await _nothing_kept(service, store)


async def test_an_upload_above_the_size_limit_is_refused(
    make_service: Callable[..., AdapterService], store: LocalArtifactStore, adapter_dir: Path
) -> None:
    service = make_service(max_adapter_bytes=2000)
    with pytest.raises(AdapterTooLargeError, match="above the adapter size limit of 2000"):
        await _upload(service, _files(adapter_dir))
    await _nothing_kept(service, store)


async def test_an_unknown_base_model_is_refused(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path
) -> None:
    with pytest.raises(InvalidRequestError, match="base model 'nope' does not exist"):
        await _upload(service, _files(adapter_dir), base_model="nope")
    set_adapter_config(adapter_dir, base_model_name_or_path="/home/me/models/llama")
    with pytest.raises(InvalidRequestError, match="is not a catalog model"):
        await _upload(service, _files(adapter_dir))
    await _nothing_kept(service, store)


async def test_a_base_model_private_to_another_tenant_does_not_exist_for_the_uploader(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path
) -> None:
    with pytest.raises(InvalidRequestError, match="'private-llama' does not exist"):
        await _upload(service, _files(adapter_dir), base_model="private-llama")
    await _nothing_kept(service, store)
    owned = await _upload(service, _files(adapter_dir), ctx=TENANT_B, base_model="private-llama")
    assert owned.base_model == "private-llama@1.0.0" and owned.is_ready


async def test_a_target_module_the_base_model_lacks_is_refused(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path
) -> None:
    set_adapter_config(adapter_dir, target_modules=["q_proj", "v_proj", "c_attn"])
    with pytest.raises(InvalidRequestError, match="target module 'c_attn' is not supported"):
        await _upload(service, _files(adapter_dir))
    await _nothing_kept(service, store)


async def test_a_wrong_tensor_shape_is_refused_naming_the_module_and_both_shapes(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path
) -> None:
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"

    def widen(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key] = torch.ones(64, 4)  # the tiny model's v_proj has 32 outputs

    edit_adapter_tensors(adapter_dir, widen)
    with pytest.raises(InvalidRequestError) as e:
        await _upload(service, _files(adapter_dir))
    message = str(e.value)
    assert "layers.1.self_attn.v_proj.lora_B has shape (64, 4), expected (32, 4)" in message
    assert str(service.work_dir) not in message  # no server paths in a tenant's message
    await _nothing_kept(service, store)


async def test_a_rank_above_the_maximum_is_refused(
    service: AdapterService, store: LocalArtifactStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    big = write_random_adapter(tiny_model_dir, tmp_path / "big", MAX_RANK * 2, ["q_proj"], 2)
    set_adapter_config(big, base_model_name_or_path=BASE)
    with pytest.raises(InvalidRequestError, match=r"rank 16 .* above the limit max_lora_rank=8"):
        await _upload(service, _files(big))
    await _nothing_kept(service, store)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
async def test_nan_or_inf_weights_are_refused(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path, bad: float
) -> None:
    def poison(tensors: dict[str, torch.Tensor]) -> None:
        key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        tensors[key] = tensors[key].clone()
        tensors[key][0, 0] = bad

    edit_adapter_tensors(adapter_dir, poison)
    with pytest.raises(InvalidRequestError, match=r"q_proj.lora_A contains NaN or Inf"):
        await _upload(service, _files(adapter_dir))
    await _nothing_kept(service, store)


async def test_a_malformed_json_config_is_refused(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path
) -> None:
    (adapter_dir / "adapter_config.json").write_text('{"r": 4,')
    with pytest.raises(InvalidRequestError, match=r"adapter_config.json: not valid JSON"):
        await _upload(service, _files(adapter_dir))
    (adapter_dir / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(InvalidRequestError, match="expected a JSON object"):
        await _upload(service, _files(adapter_dir))
    await _nothing_kept(service, store)


async def test_a_truncated_or_oversized_header_safetensors_file_is_refused(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path
) -> None:
    weights = adapter_dir / "adapter_model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidRequestError, match="cannot read safetensors file"):
        await _upload(service, _files(adapter_dir))
    weights.write_bytes(whole[:100])
    with pytest.raises(InvalidRequestError, match="is truncated: its header needs"):
        await _upload(service, _files(adapter_dir))
    weights.write_bytes((1 << 40).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(InvalidRequestError, match="header is 1099511627776 bytes, above"):
        await _upload(service, _files(adapter_dir))
    await _nothing_kept(service, store)


async def test_an_archive_member_with_dot_dot_is_refused(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path, tmp_path: Path
) -> None:
    members = [(f"../{n}", None, c) for n, _, c in _adapter_members(adapter_dir)]
    with pytest.raises(InvalidRequestError, match="unsafe path"):
        await _upload(service, [("archive", _tar(tmp_path / "a.tar.gz", members))])
    zipped = tmp_path / "a.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("x/../../adapter_config.json", b"{}")
    with pytest.raises(InvalidRequestError, match="unsafe path"):
        await _upload(service, [("archive", zipped)])
    assert not (tmp_path / "work" / "adapter_config.json").exists()
    await _nothing_kept(service, store)


async def test_an_archive_with_a_symlink_is_refused(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path, tmp_path: Path
) -> None:
    members: list[tuple[str, bytes | None, bytes]] = [
        _adapter_members(adapter_dir)[1],
        ("adapter_config.json", b"/etc/passwd", b""),
    ]
    with pytest.raises(InvalidRequestError, match=r"'adapter_config.json' is a link"):
        await _upload(service, [("archive", _tar(tmp_path / "l.tar.gz", members))])
    await _nothing_kept(service, store)


async def test_an_archive_member_that_unpacks_above_the_limit_is_refused(
    make_service: Callable[..., AdapterService],
    store: LocalArtifactStore,
    adapter_dir: Path,
    tmp_path: Path,
) -> None:
    service = make_service(max_adapter_bytes=1 << 20)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("adapter_config.json", (adapter_dir / "adapter_config.json").read_bytes())
        zf.writestr("adapter_model.safetensors", b"\0" * (8 << 20))
    assert bomb.stat().st_size < 64 << 10
    with pytest.raises(AdapterTooLargeError, match=r"'adapter_model.safetensors' .* unpacks above"):
        await _upload(service, [("archive", bomb)])
    many = [(f"f{i}.txt", None, b"") for i in range(40)]
    with pytest.raises(InvalidRequestError, match="more than 32 members"):
        await _upload(service, [("archive", _tar(tmp_path / "many.tar.gz", many))])
    await _nothing_kept(service, store)


async def test_concurrent_uploads_with_one_name_store_exactly_one_adapter(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path, database: Database
) -> None:
    results = await asyncio.gather(
        *(_upload(service, _files(adapter_dir)) for _ in range(3)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and winners[0].is_ready
    assert len(losers) == 2 and all(isinstance(e, AdapterExistsError) for e in losers)
    assert await service.list(TENANT_A) == winners and winners[0].version == 1
    for loser in losers:
        assert "'bot' already exists" in str(loser)
    # Over a ready version, an upload makes the next one; without a rollout service it
    # replaces the current one at once.
    second = await _upload(service, _files(adapter_dir))
    assert second.is_ready and second.version == 2
    assert (await service.get(TENANT_A, "bot")).id == second.id
    assert [
        (v.version, v.superseded_at is not None) for v in await service.versions(TENANT_A, "bot")
    ] == [(1, True), (2, False)]
    # The database is the arbiter: a second row with the same version never lands.
    twin = replace(winners[0], id="adp_zzzzzzzzzzzzzzzz")
    async with RegistryUnitOfWork(database.sessionmaker) as uow:
        with pytest.raises(DuplicateAdapterError):
            await uow.adapters.add(twin)
    assert list((service.work_dir / "uploads").iterdir()) == []


async def test_a_failed_smoke_test_leaves_a_failed_unroutable_adapter_and_alerts_the_operator(
    service: AdapterService,
    smoke: FakeSmoke,
    store: LocalArtifactStore,
    adapter_dir: Path,
    events: list[tuple[str, str | None, dict[str, Any]]],
) -> None:
    smoke.verdict = SmokeReport(False, NO_CHANGE_REPORT)
    adapter = await _upload(service, _files(adapter_dir))
    assert adapter.status is AdapterStatus.FAILED and adapter.report == NO_CHANGE_REPORT
    assert await service.get(TENANT_A, "bot") == adapter
    assert await service.resolve(TENANT_A, "bot") is None
    assert not (store.root / store.key_of(adapter.artifact_uri)).exists()
    assert events == [
        (
            "adapter_failed",
            TENANT_A.tenant_id,
            {
                "adapter": "bot",
                "adapter_id": adapter.id,
                "base_model": f"{BASE}@1.0.0",
                "report": NO_CHANGE_REPORT,
            },
        )
    ]
    await service.delete(TENANT_A, "bot")
    smoke.verdict = SmokeReport(True)
    assert (await _upload(service, _files(adapter_dir))).is_ready


async def test_another_tenant_cannot_see_use_or_delete_an_adapter(
    service: AdapterService, adapter_dir: Path
) -> None:
    adapter = await _upload(service, _files(adapter_dir))
    assert await service.list(TENANT_B) == []
    with pytest.raises(NotFoundError):
        await service.get(TENANT_B, "bot")
    with pytest.raises(NotFoundError):
        await service.delete(TENANT_B, "bot")
    assert await service.resolve(TENANT_B, "bot") is None
    # B may use the same name for its own adapter; A's is untouched.
    theirs = await _upload(service, _files(adapter_dir), ctx=TENANT_B)
    assert theirs.id != adapter.id
    assert await service.get(TENANT_A, "bot") == adapter
    deleted = await service.delete(TENANT_A, "bot")
    assert deleted.id == adapter.id
    with pytest.raises(NotFoundError):
        await service.get(TENANT_A, "bot")
    assert (await service.get(TENANT_B, "bot")).id == theirs.id


async def test_the_engine_smoke_test_passes_a_real_adapter_and_fails_a_zero_b_one(
    make_service: Callable[..., AdapterService],
    tiny_model_dir: Path,
    adapter_dir: Path,
    events: list[tuple[str, str | None, dict[str, Any]]],
) -> None:
    config = EngineConfig(
        model_dir=tiny_model_dir, cache=replace(CacheConfig(), kv_cache_bytes=16 << 20)
    )
    async with AsyncEngineClient(config) as engine:
        tester = EngineSmokeTester(lambda ref: engine if ref == f"{BASE}@1.0.0" else None)
        service = make_service(smoke_tester=tester)
        assert (await _upload(service, _files(adapter_dir))).is_ready
        failed = await _upload(service, _files(zero_lora_b(adapter_dir)), "zero")
    assert failed.status is AdapterStatus.FAILED
    assert failed.report == NO_CHANGE_REPORT
    assert [(kind, details["adapter"]) for kind, _, details in events] == [
        ("adapter_failed", "zero")
    ]
    report = await tester.run(adapter_dir, tiny_model_dir, "other@1.0.0")
    assert not report.ok and "no engine here serves other@1.0.0" in (report.report or "")


class _HangingSmoke(FakeSmoke):
    """Never answers: the upload is cut off while `validating`."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def run(self, adapter_dir: Path, base_model_dir: Path, base_model: str) -> SmokeReport:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_an_upload_cut_off_while_validating_is_failed_at_the_next_start(
    make_service: Callable[..., AdapterService], adapter_dir: Path
) -> None:
    hanging = _HangingSmoke()
    upload = asyncio.create_task(_upload(make_service(hanging), _files(adapter_dir)))
    await asyncio.wait_for(hanging.started.wait(), 30)
    upload.cancel()  # the server went away mid-upload
    with pytest.raises(asyncio.CancelledError):
        await upload
    service = make_service()
    [stuck] = await service.list(TENANT_A)
    assert stuck.status is AdapterStatus.VALIDATING
    assert await service.fail_interrupted() == 0  # a recent upload may still be running
    later = make_service(clock=lambda: stuck.created_at + timedelta(minutes=20))
    assert await later.fail_interrupted() == 1
    failed = await service.get(TENANT_A, "bot")
    assert failed.status is AdapterStatus.FAILED and "interrupted" in (failed.report or "")
    assert await service.resolve(TENANT_A, "bot") is None


KEY_A = f"adapter:{TENANT_A.tenant_id}/bot"


def _with_rollouts(service: AdapterService, database: Database, **options: Any) -> RolloutService:
    service.rollouts = RolloutService(lambda: RegistryUnitOfWork(database.sessionmaker))
    service.rollout_options = options
    return service.rollouts


async def test_a_new_version_rolls_out_over_the_current_one_and_replaces_it_when_done(
    service: AdapterService, adapter_dir: Path, database: Database
) -> None:
    rollouts = _with_rollouts(service, database)
    first = await _upload(service, _files(adapter_dir))
    assert first.version == 1 and await rollouts.list_active() == []
    second = await _upload(service, _files(adapter_dir))
    assert second.is_ready and second.version == 2 and second.id != first.id
    assert second.artifact_uri != first.artifact_uri  # same content, own files
    [rollout] = await rollouts.list_active()
    # Shadow first, like a model version: all requests still go to the stable version.
    assert rollout.model == KEY_A and rollout.phase is RolloutPhase.SHADOW
    assert (rollout.plan.stable_ref, rollout.plan.candidate_ref) == (first.ref, second.ref)
    assert {rollouts.route(KEY_A, f"req-{i}") for i in range(200)} == {first.ref}
    assert (
        rollouts.shadow_target(
            KEY_A,
            next(f"req-{i}" for i in range(1000) if rollouts.shadow_target(KEY_A, f"req-{i}")),
        )
        == second.ref
    )
    rollout = await rollouts.promote(KEY_A, "the shadow looks fine")
    assert rollout.phase is RolloutPhase.CANARY
    # Until the rollout finishes the stable version is the current one.
    assert (await service.get(TENANT_A, "bot")).id == first.id
    assert (await service.resolve(TENANT_A, "bot")).id == first.id  # type: ignore[union-attr]
    assert (await service.resolve_version(TENANT_A, "bot", 2)).id == second.id  # type: ignore[union-attr]
    assert await service.resolve_version(TENANT_B, "bot", 2) is None
    assert {rollouts.route(KEY_A, f"req-{i}") for i in range(2000)} == {first.ref, second.ref}
    with pytest.raises(AdapterExistsError, match="being rolled out"):
        await _upload(service, _files(adapter_dir))
    for _ in rollout.plan.canary_steps:
        done = await rollouts.promote(KEY_A, "looks fine")
    assert done.phase is RolloutPhase.DONE
    assert f"{first.ref} superseded" in done.history[-1].reason
    assert (await service.resolve(TENANT_A, "bot")).id == second.id  # type: ignore[union-attr]
    [old, new] = await service.versions(TENANT_A, "bot")
    assert old.superseded_at is not None and new.superseded_at is None
    assert [a.id for a in await service.list(TENANT_A)] == [second.id]
    assert await service.resolve(TENANT_B, "bot") is None
    third = await _upload(service, _files(adapter_dir))
    assert third.version == 3
    [rollout] = await rollouts.list_active()
    assert rollout.plan.stable_ref == second.ref


async def test_a_regressing_version_is_rolled_back_and_the_stable_one_keeps_serving(
    service: AdapterService, adapter_dir: Path, database: Database
) -> None:
    rollouts = _with_rollouts(service, database, min_requests=5, step_seconds=0.0)
    first = await _upload(service, _files(adapter_dir))
    second = await _upload(service, _files(adapter_dir))
    for _ in range(10):
        rollouts.observe(first.ref, 0.1, error=False)
        rollouts.observe(second.ref, 0.1, error=True)
    [rolled_back] = await rollouts.tick()
    assert rolled_back.phase is RolloutPhase.ROLLED_BACK
    assert "error rate" in rolled_back.history[-1].reason
    failed = (await service.versions(TENANT_A, "bot"))[1]
    assert failed.id == second.id and failed.status is AdapterStatus.FAILED
    assert failed.superseded_at is not None and "error rate" in (failed.report or "")
    assert (await service.resolve(TENANT_A, "bot")).id == first.id  # type: ignore[union-attr]
    assert await service.resolve_version(TENANT_A, "bot", 2) is None
    # The next upload is version 3, rolled out over version 1 again.
    third = await _upload(service, _files(adapter_dir))
    [rollout] = await rollouts.list_active()
    assert (rollout.plan.stable_ref, rollout.plan.candidate_ref) == (first.ref, third.ref)


async def test_deleting_an_adapter_removes_every_version_and_stops_its_rollout(
    service: AdapterService, store: LocalArtifactStore, adapter_dir: Path, database: Database
) -> None:
    rollouts = _with_rollouts(service, database)
    first = await _upload(service, _files(adapter_dir))
    second = await _upload(service, _files(adapter_dir))
    assert (await service.delete(TENANT_A, "bot")).id == first.id
    assert await rollouts.list_active() == []
    assert (await rollouts.status(KEY_A)).phase is RolloutPhase.ROLLED_BACK
    with pytest.raises(NotFoundError):
        await service.versions(TENANT_A, "bot")
    for gone in (first, second):
        assert not (store.root / store.key_of(gone.artifact_uri)).exists()
    assert (await _upload(service, _files(adapter_dir))).version == 1


async def test_an_upload_while_the_newest_version_validates_is_refused(
    make_service: Callable[..., AdapterService], adapter_dir: Path
) -> None:
    hanging = _HangingSmoke()
    upload = asyncio.create_task(_upload(make_service(hanging), _files(adapter_dir)))
    await asyncio.wait_for(hanging.started.wait(), 30)
    try:
        with pytest.raises(AdapterExistsError, match=r"\(validating\)"):
            await _upload(make_service(), _files(adapter_dir))
    finally:
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
