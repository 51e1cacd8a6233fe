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
import contextlib
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tenantserve.registry.adapters import Adapter
from tenantserve.registry.artifacts import ArtifactIntegrityError, ArtifactStore, fsync_dir


class FileEntry(Protocol):
    """A file of a manifest (`ArtifactFile`, or the engine's `LoraFile`)."""

    @property
    def path(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...


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
        return await self.pull_files(
            self.path(adapter), adapter.artifact_uri, adapter.files, adapter.id
        )

    async def pull_files(
        self, target: Path, artifact_uri: str, files: Sequence[FileEntry], label: str
    ) -> Path:
        """`target` holding `files` of the artifact at `artifact_uri`: as it is when intact,
        else pulled afresh (ArtifactIntegrityError naming `label` on a mismatch)."""
        if await asyncio.to_thread(_is_intact, target, files):
            return target
        tmp = self.work_dir / "uploads" / f"pull-{uuid.uuid4().hex}"
        try:
            key = self.store.key_of(artifact_uri)
            for f in files:
                got = await self.store.download(key, f.path, tmp / f.path)
                if (got.size_bytes, got.sha256) != (f.size_bytes, f.sha256):
                    raise ArtifactIntegrityError(f"adapter {label}: {f.path} is corrupt")
            await asyncio.to_thread(_publish, tmp, target, files)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        return target

    async def remove(self, adapter: Adapter) -> None:
        """Remove the adapter's local copy, if any."""
        await asyncio.to_thread(shutil.rmtree, self.path(adapter), True)


def _is_intact(target: Path, files: Sequence[FileEntry]) -> bool:
    return target.is_dir() and all(
        (target / f.path).is_file() and (target / f.path).stat().st_size == f.size_bytes
        for f in files
    )


def _publish(tmp: Path, target: Path, files: Sequence[FileEntry]) -> None:
    """Rename the pulled `tmp` into `target`. A concurrent pull that got there first with an
    intact copy wins; a damaged copy there is moved aside and replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            tmp.rename(target)
            break
        except OSError:
            if not target.is_dir():
                raise
            if _is_intact(target, files):
                return
            stale = target.with_name(f"{target.name}.stale-{uuid.uuid4().hex}")
            with contextlib.suppress(FileNotFoundError):  # another pull moved it already
                target.rename(stale)
            shutil.rmtree(stale, True)
    else:
        raise OSError(f"could not put a fresh copy at {target}")
    fsync_dir(target.parent)
