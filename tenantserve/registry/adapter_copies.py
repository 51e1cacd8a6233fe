"""`AdapterCopies`: this node's local copies of ready adapters' files, the path the engine
loads an adapter from (`LoraRef.path`).

    work_dir/local/<tenant>/<adapter id>/...   one complete copy of an adapter version
    work_dir/uploads/pull-<random>/            a pull in progress

A pull downloads every file from the artifact store into a temporary directory, checks
each file's size and sha256 against the adapter's manifest, and renames the directory into
place; a copy whose files are missing or of the wrong size is pulled again.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

from tenantserve.registry.adapters import Adapter
from tenantserve.registry.artifacts import ArtifactIntegrityError, ArtifactStore, fsync_dir
from tenantserve.registry.model import ArtifactFile


class AdapterCopies:
    """Verified local copies of adapter versions pulled from `store` below `work_dir`."""

    def __init__(self, store: ArtifactStore, work_dir: Path) -> None:
        self.store = store
        self.work_dir = work_dir

    def path(self, adapter: Adapter) -> Path:
        """Where the adapter's local copy lives (whether or not it was pulled)."""
        return self.work_dir / "local" / adapter.tenant_id / adapter.id

    async def pull(self, adapter: Adapter) -> Path:
        """The adapter's local copy: the one already there when intact, else a fresh pull;
        ArtifactIntegrityError when the store's bytes do not match the manifest."""
        target = self.path(adapter)
        if await asyncio.to_thread(_is_intact, target, adapter.files):
            return target
        tmp = self.work_dir / "uploads" / f"pull-{uuid.uuid4().hex}"
        try:
            key = self.store.key_of(adapter.artifact_uri)
            for f in adapter.files:
                got = await self.store.download(key, f.path, tmp / f.path)
                if (got.size_bytes, got.sha256) != (f.size_bytes, f.sha256):
                    raise ArtifactIntegrityError(f"adapter {adapter.id}: {f.path} is corrupt")
            await asyncio.to_thread(_publish, tmp, target)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        return target

    async def remove(self, adapter: Adapter) -> None:
        """Remove the adapter's local copy, if any."""
        await asyncio.to_thread(shutil.rmtree, self.path(adapter), True)


def _is_intact(target: Path, files: tuple[ArtifactFile, ...]) -> bool:
    return target.is_dir() and all(
        (target / f.path).is_file() and (target / f.path).stat().st_size == f.size_bytes
        for f in files
    )


def _publish(tmp: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:
        if not target.is_dir():
            raise
    fsync_dir(target.parent)
