"""Tenant adapter use cases: upload (receive, check, store, smoke-test), list, get, delete,
and `resolve` for the gateway (ready adapters only).

An upload goes through these steps; each failure before the row is written is a 4xx and
leaves nothing behind (the upload's temporary directory is always removed):

    receive   parts streamed into `work_dir/<random>/` under the byte limit (413), or one
              archive unpacked safely (`archive.py`); pickle files refused
    check     adapter_config.json, the safetensors header, the base model it names
              (resolved for the tenant), every tensor against it (`adapter_check.py`)
    record    row `validating`, version n+1 over the name's newest version n (1 for a new
              name; refused while the newest is validating or a rollout of the name
              runs); the database's unique (tenant, name, version) decides between
              concurrent uploads of one version: the other one gets AdapterExistsError
    store     the files into the artifact store (`adapters/<tenant>/<name>/<digest16>`,
              `-v<n>` appended from version 2 on)
    smoke     an engine generates with and without it (`adapter_smoke.py`), then the
              tenant's eval set of the name, if any, must reach its min_score (`eval_service`)
    finish    `ready`, or `failed` with the tenant-facing report, an operator event, and
              its stored files removed
    roll out  a ready version n+1 over a current (ready) version: a rollout keyed
              `adapter:<tenant>/<name>` starts (`RolloutService.start_adapter`); the
              current version keeps serving what the rollout does not send to the new
              one until it finishes (the old one superseded) or is rolled back (the new
              one failed). Without a rollout service the new version replaces the old at
              once.

A `validating`, `failed` or superseded version is never routable; `resolve` returns the
current version only (the gateway asks the rollout for the candidate's request ids).
The engine loads a version from its verified local copy (`local_dir`, `adapter_copies.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.adapter_check import CheckedUpload, check_upload
from tenantserve.registry.adapter_copies import AdapterCopies
from tenantserve.registry.adapter_smoke import SmokeReport, SmokeTester
from tenantserve.registry.adapter_upload import UploadPart, receive_upload
from tenantserve.registry.adapters import (
    Adapter,
    AdapterExistsError,
    AdapterStatus,
    adapter_key,
    adapter_rollout_key,
    new_adapter_id,
    validate_adapter_name,
)
from tenantserve.registry.artifact_cache import ArtifactCache
from tenantserve.registry.artifacts import ArtifactIntegrityError, ArtifactStore, scan_source
from tenantserve.registry.model import manifest_digest
from tenantserve.registry.repository import DuplicateAdapterError
from tenantserve.registry.rollout_service import RolloutConflictError, RolloutService
from tenantserve.registry.service import RegistryService, utc_now
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.tenancy.model import TenantContext

logger = logging.getLogger(__name__)

FAILED_EVENT = "adapter_failed"
INTERNAL_FAILURE_REPORT = "the upload could not be completed (internal error); upload it again"

# on_event(kind, tenant_id, details): the operator's event log (`EventLog.append`).
OnEvent = Callable[[str, str | None, Mapping[str, Any]], object]


def _no_event(kind: str, tenant_id: str | None, details: Mapping[str, Any]) -> None:
    return None


# An upload (receive, validate, store, smoke test) never takes this long.
STALE_UPLOAD_AFTER = timedelta(minutes=15)


class AdapterService:
    """Tenant adapters over the registry's unit of work, artifact store and cache."""

    def __init__(
        self,
        uow_factory: Callable[[], RegistryUnitOfWork],
        registry: RegistryService,
        cache: ArtifactCache,
        smoke: SmokeTester,
        work_dir: Path,
        *,
        max_adapter_bytes: int,
        max_lora_rank: int,
        on_event: OnEvent = _no_event,
        clock: Callable[[], datetime] = utc_now,
        on_change: Callable[[str, str], None] | None = None,
        rollouts: RolloutService | None = None,
        rollout_options: Mapping[str, Any] | None = None,
        evals: Callable[[Adapter, Path], Awaitable[SmokeReport]] | None = None,
    ) -> None:
        self._uow = uow_factory
        self._registry = registry
        self._cache = cache
        self._smoke = smoke
        # Uploads in progress and local copies of ready adapters live below it.
        self.work_dir = Path(work_dir)
        self._copies = AdapterCopies(cache.store, self.work_dir)
        self.max_adapter_bytes = max_adapter_bytes
        self.max_lora_rank = max_lora_rank
        self._on_event = on_event
        self._clock = clock
        # on_change(tenant_id, name): an adapter became routable or stopped being (caches
        # of resolutions forget that name).
        self.on_change = on_change
        # Rolls new versions out over the current one; None: a new version replaces the
        # current one as soon as it is ready.
        self.rollouts = rollouts
        # `RolloutService.start_adapter`'s plan options (step_seconds, canary_steps, ...).
        self.rollout_options: dict[str, Any] = dict(rollout_options or {})
        # After a passed smoke test: the tenant's eval set (`EvalService.check_adapter`).
        self._evals = evals

    @property
    def store(self) -> ArtifactStore:
        return self._cache.store

    async def upload(
        self,
        ctx: TenantContext,
        name: str,
        parts: Sequence[UploadPart],
        base_model: str | None = None,
    ) -> Adapter:
        """Receive, check, store and smoke-test an adapter; returns it `ready` or `failed`
        (with its report). InvalidRequestError naming the problem for a bad upload (nothing
        is kept), AdapterTooLargeError above the limit, AdapterExistsError for a name the
        tenant already uses. `base_model` overrides the config's `base_model_name_or_path`.
        A name the tenant already has gets its next version (rolled out over the current
        one once ready); AdapterExistsError while its newest version is validating, while
        a rollout of it runs, or when a concurrent upload made the same version first."""
        name = validate_adapter_name(name)
        version = await self._next_version(ctx.tenant_id, name)
        tmp = self.work_dir / "uploads" / uuid.uuid4().hex
        files_dir = tmp / "files"
        await asyncio.to_thread(files_dir.mkdir, parents=True)
        try:
            await asyncio.to_thread(receive_upload, parts, tmp, files_dir, self.max_adapter_bytes)
            checked = await check_upload(
                ctx,
                files_dir,
                base_model,
                registry=self._registry,
                cache=self._cache,
                max_lora_rank=self.max_lora_rank,
            )
            adapter = await self._record(ctx.tenant_id, name, version, checked)
            stored = await self._store_and_test(adapter, checked, files_dir)
            if stored.is_ready:
                await self._roll_out(stored)
            self._changed(ctx.tenant_id, name)
            return stored
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    async def list(self, ctx: TenantContext) -> Sequence[Adapter]:
        """The caller's adapters (every status), by name: each name's current version."""
        async with self._uow() as uow:
            return await uow.adapters.list(ctx.tenant_id)

    async def get(self, ctx: TenantContext, name: str) -> Adapter:
        """The caller's adapter (its current version); NotFoundError for unknown names and
        other tenants' ones."""
        async with self._uow() as uow:
            found = await uow.adapters.get(ctx.tenant_id, name)
        if found is None:
            raise NotFoundError(f"adapter {name!r} does not exist")
        return found

    async def versions(self, ctx: TenantContext, name: str) -> Sequence[Adapter]:
        """Every version of the caller's adapter, oldest first; NotFoundError when none."""
        async with self._uow() as uow:
            found = await uow.adapters.versions(ctx.tenant_id, name)
        if not found:
            raise NotFoundError(f"adapter {name!r} does not exist")
        return found

    async def delete(self, ctx: TenantContext, name: str) -> Adapter:
        """Delete every version of the caller's adapter (any status) and their files (a
        running rollout of it is rolled back first); NotFoundError otherwise. Returns the
        current version. The rows go first, so none is routable without its files."""
        key = adapter_rollout_key(ctx.tenant_id, name)
        if self.rollouts is not None:
            async with self._uow() as uow:
                running = await uow.rollouts.active(key)
            if running:
                with contextlib.suppress(NotFoundError, RolloutConflictError):
                    await self.rollouts.rollback(key, "the adapter was deleted")
        async with self._uow() as uow:
            versions = await uow.adapters.versions(ctx.tenant_id, name)
            found = await uow.adapters.get(ctx.tenant_id, name)
            deleted = [v for v in versions if await uow.adapters.delete(v)]
            if found is None or not deleted:
                raise NotFoundError(f"adapter {name!r} does not exist")
            await uow.commit()
        self._changed(ctx.tenant_id, name)
        for version in deleted:
            await self.store.delete(self.store.key_of(version.artifact_uri))
            await self._copies.remove(version)
        return found

    async def fail_interrupted(self, older_than: timedelta = STALE_UPLOAD_AFTER) -> int:
        """At start-up: uploads left `validating` for longer than any upload takes were cut
        off (a restart, a crash); mark them failed so their names can be used again."""
        now = self._clock()
        report = "the upload was interrupted (the server restarted); upload the adapter again"
        async with self._uow() as uow:
            count = await uow.adapters.fail_stale(now - older_than, report, now)
            await uow.commit()
        return count

    def _changed(self, tenant_id: str, name: str) -> None:
        if self.on_change is not None:
            self.on_change(tenant_id, name)

    async def resolve(self, ctx: TenantContext, name: str) -> Adapter | None:
        """The caller's current (ready) version of the adapter `name`, else None (for the
        gateway's routing; during a rollout the stable version)."""
        try:
            validate_adapter_name(name)
        except InvalidRequestError:
            return None
        async with self._uow() as uow:
            found = await uow.adapters.get(ctx.tenant_id, name)
        return found if found is not None and found.is_routable else None

    async def resolve_version(self, ctx: TenantContext, name: str, version: int) -> Adapter | None:
        """One routable (ready, not superseded) version of the caller's adapter `name`, else
        None (the gateway serves a rollout's candidate with it)."""
        try:
            validate_adapter_name(name)
        except InvalidRequestError:
            return None
        async with self._uow() as uow:
            found = await uow.adapters.get_version(ctx.tenant_id, name, version)
        return found if found is not None and found.is_routable else None

    async def local_dir(self, adapter: Adapter) -> Path:
        """A verified local copy of the adapter's files (for the engine's `LoraRef.path`),
        pulled from the artifact store on first use."""
        return await self._copies.pull(adapter)

    # -- upload steps -------------------------------------------------------------------

    async def _next_version(self, tenant_id: str, name: str) -> int:
        """The version an upload of `name` makes: 1, or the newest one's + 1; refused while
        the newest is validating or a rollout of the name runs."""
        async with self._uow() as uow:
            versions = await uow.adapters.versions(tenant_id, name)
            running = await uow.rollouts.active(adapter_rollout_key(tenant_id, name))
        if not versions:
            return 1
        newest = versions[-1]
        if newest.status is AdapterStatus.VALIDATING:
            raise _exists(name, newest.status)
        if running:
            raise AdapterExistsError(
                f"adapter {name!r} version {newest.version} is being rolled out; upload a "
                "new version once its rollout has finished or was rolled back"
            )
        return newest.version + 1

    async def _roll_out(self, adapter: Adapter) -> None:
        """A new ready version over a current one: start its rollout (or, without a rollout
        service, supersede the older versions at once)."""
        async with self._uow() as uow:
            versions = await uow.adapters.versions(adapter.tenant_id, adapter.name)
        stable = next((v for v in versions if v.is_routable and v.version < adapter.version), None)
        if stable is None:
            return  # the first routable version: current as it is
        if self.rollouts is not None:
            try:
                await self.rollouts.start_adapter(
                    adapter.tenant_id,
                    adapter.name,
                    stable.version,
                    adapter.version,
                    **self.rollout_options,
                    reason="uploaded",
                )
                return
            except RolloutConflictError:
                logger.warning(
                    "adapter %s: a rollout already runs; version %d replaces the current one",
                    adapter.rollout_key,
                    adapter.version,
                )
        now = self._clock()
        async with self._uow() as uow:
            for old in versions:
                if old.version < adapter.version and old.superseded_at is None:
                    old.supersede(now)
                    await uow.adapters.update(old)
            await uow.commit()

    async def _record(
        self, tenant_id: str, name: str, version: int, checked: CheckedUpload
    ) -> Adapter:
        digest = manifest_digest(checked.manifest)
        adapter = Adapter(
            id=new_adapter_id(),
            tenant_id=tenant_id,
            name=name,
            version=version,
            base_model=checked.base.ref,
            rank=checked.rank,
            target_modules=checked.target_modules,
            digest=digest,
            artifact_uri=self.store.uri(adapter_key(tenant_id, name, digest, version)),
            files=checked.manifest,
            status=AdapterStatus.VALIDATING,
            created_at=self._clock(),
        )
        try:
            async with self._uow() as uow:
                await uow.adapters.add(adapter)
                await uow.commit()
        except DuplicateAdapterError:
            raise _exists(name, None, version) from None
        return adapter

    async def _store_and_test(
        self, adapter: Adapter, checked: CheckedUpload, files_dir: Path
    ) -> Adapter:
        key = self.store.key_of(adapter.artifact_uri)
        try:
            files = await asyncio.to_thread(scan_source, files_dir)
            stored = await self.store.put_dir(key, files)
            if tuple(sorted(stored, key=lambda f: f.path)) != adapter.files:
                raise ArtifactIntegrityError(f"adapter {adapter.id}: stored files differ")
            verdict = await self._smoke.run(files_dir, checked.base_dir, checked.base.ref)
            if verdict.ok and self._evals is not None:
                verdict = await self._evals(adapter, files_dir)
        except Exception:
            logger.exception("upload of adapter %s (%s) failed", adapter.id, adapter.name)
            verdict = SmokeReport(False, INTERNAL_FAILURE_REPORT)
            await self._finish(adapter, verdict, key)
            raise
        return await self._finish(adapter, verdict, key)

    async def _finish(self, adapter: Adapter, verdict: SmokeReport, key: str) -> Adapter:
        now = self._clock()
        if verdict.ok:
            adapter.mark_ready(now, verdict.report)
        else:
            adapter.mark_failed(verdict.report or "the smoke test failed", now)
        async with self._uow() as uow:
            written = await uow.adapters.finish(adapter)
            await uow.commit()
        if not verdict.ok or not written:
            await self.store.delete(key)
        if not written:
            raise NotFoundError(f"adapter {adapter.name!r} was deleted while it was checked")
        if not verdict.ok:
            self._on_event(
                FAILED_EVENT,
                adapter.tenant_id,
                {
                    "adapter": adapter.name,
                    "adapter_id": adapter.id,
                    "base_model": adapter.base_model,
                    "report": adapter.report,
                },
            )
        return adapter


def _exists(name: str, status: AdapterStatus | None, version: int = 1) -> AdapterExistsError:
    if status is AdapterStatus.VALIDATING:
        return AdapterExistsError(
            f"adapter {name!r} already exists (validating); upload a new version once its "
            "newest one is ready or failed"
        )
    at = f" version {version}" if version > 1 else ""
    return AdapterExistsError(
        f"adapter {name!r}{at} already exists (another upload made it first); upload again"
    )
