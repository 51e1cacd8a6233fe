"""`ArtifactCache`: a serving node's local copy of model versions' artifacts, so a restart
does not pull them again (cold-start avoidance), and nothing unverified is ever served.

    cache_dir/<name>/<version>-<digest prefix>/...   one complete, verified version
    cache_dir/.tmp/<random>/                         a pull in progress

A pull streams every file from the store into a temporary directory, checks each file's
size and sha256 against the version's manifest while writing, and renames the directory
into place. A cached copy is re-hashed before it is reused; a corrupt or incomplete one
is removed and pulled again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from pathlib import Path

from tenantserve.registry.artifacts import (
    ArtifactIntegrityError,
    ArtifactStore,
    Progress,
    ProgressCounter,
    fsync_dir,
    hash_file,
)
from tenantserve.registry.model import ArtifactFile, ModelVersion

logger = logging.getLogger(__name__)


class ArtifactCache:
    """Verified local copies of model versions pulled from `store` into `cache_dir`."""

    def __init__(self, store: ArtifactStore, cache_dir: Path) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir)

    def path_of(self, version: ModelVersion) -> Path:
        """Where the version's files are (or will be) cached."""
        digest_prefix = version.digest.removeprefix("sha256:")[:16]
        return self.cache_dir / version.name / f"{version.version}-{digest_prefix}"

    async def pull(self, version: ModelVersion, progress: Progress | None = None) -> Path:
        """The directory holding the version's verified files: the cached copy when it is
        intact, else a fresh pull. ArtifactIntegrityError when the store's bytes do not
        match the manifest (nothing is cached then)."""
        target = self.path_of(version)
        if await asyncio.to_thread(self._is_intact, target, version.files, progress):
            return target
        if target.exists():
            logger.warning("cached artifacts of %s are corrupt; pulling again", version.ref)
            await asyncio.to_thread(_remove_aside, target)
        tmp = self.cache_dir / ".tmp" / uuid.uuid4().hex
        try:
            await self._download_into(tmp, version, progress)
            await asyncio.to_thread(self._publish, tmp, target, version)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        return target

    async def evict(self, version: ModelVersion) -> None:
        """Drop the version's cached copy (absent is fine)."""
        await asyncio.to_thread(shutil.rmtree, self.path_of(version), True)

    async def _download_into(
        self, tmp: Path, version: ModelVersion, progress: Progress | None
    ) -> None:
        key = self.store.key_of(version.artifact_uri)
        counter = ProgressCounter("download", version.size_bytes, progress)
        for f in version.files:
            counter.path = f.path
            got = await self.store.download(key, f.path, tmp / f.path, counter)
            if (got.size_bytes, got.sha256) != (f.size_bytes, f.sha256):
                raise ArtifactIntegrityError(
                    f"{version.ref}: {f.path} from {version.artifact_uri} does not match its "
                    f"manifest (size {got.size_bytes} vs {f.size_bytes}, sha256 "
                    f"{got.sha256[:12]}… vs {f.sha256[:12]}…)"
                )

    def _publish(self, tmp: Path, target: Path, version: ModelVersion) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process published it meanwhile; keep theirs when it is intact.
            if not self._is_intact(target, version.files, None):
                raise
        fsync_dir(target.parent)

    @staticmethod
    def _is_intact(
        target: Path, files: tuple[ArtifactFile, ...], progress: Progress | None
    ) -> bool:
        if not target.is_dir():
            return False
        counter = ProgressCounter("verify", sum(f.size_bytes for f in files), progress)
        for f in files:
            local = target / f.path
            if not local.is_file() or local.stat().st_size != f.size_bytes:
                return False
            counter.path = f.path
            if hash_file(local, counter).sha256 != f.sha256:
                return False
        return True


def _remove_aside(target: Path) -> None:
    """Rename `target` out of the way first, so no reader sees a half-deleted directory."""
    aside = target.with_name(f".{target.name}.corrupt-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(target, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)
