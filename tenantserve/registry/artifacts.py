"""Where model artifacts live: the `ArtifactStore` interface, the local-directory store
(the embedded default), source-directory scanning and streaming hashes.

    ArtifactStore            put_dir (streams file by file, sha256 while streaming),
    ├── LocalArtifactStore   download (get), read (open), exists, delete
    └── S3ArtifactStore      in `artifacts_s3.py` (any S3-API server)

An artifact set is addressed by a key (`models/<name>/<version>/<digest prefix>`) below
the store's root; its files by their relative POSIX paths. No call reads a whole file into
memory: bytes move in `CHUNK_BYTES` pieces, and blocking I/O runs on worker threads.
`build_artifact_store(config, data_dir)` is the factory the composition root calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

from tenantserve.config import ArtifactStoreConfig
from tenantserve.errors import InvalidRequestError, TenantServeError
from tenantserve.registry.model import ArtifactFile, validate_artifact_path

CHUNK_BYTES = 1 << 20
ARTIFACTS_DIR = "artifacts"


class ArtifactStoreError(TenantServeError):
    """The artifact store failed or does not hold what the registry says it should."""


class ArtifactIntegrityError(ArtifactStoreError):
    """Bytes read back do not match the manifest's size or sha256."""


class TransferProgress(NamedTuple):
    """Progress of one operation over a set of files: `done_bytes` of `total_bytes`."""

    phase: str  # "hash", "upload", "download", "verify"
    path: str
    done_bytes: int
    total_bytes: int


Progress = Callable[[TransferProgress], None]


@dataclass(frozen=True)
class SourceFile:
    """A file to store: its path below the artifact root, where it is, its size."""

    path: str
    local_path: Path
    size_bytes: int


def scan_source(source: Path) -> list[SourceFile]:
    """The regular files of `source` (a directory, or one file), sorted by relative path.

    Names starting with `.` (caches, lock files) are skipped; symlinks to files are
    followed. InvalidRequestError when there is nothing to store.
    """
    source = Path(source)
    if source.is_file():
        return [SourceFile(source.name, source, source.stat().st_size)]
    if not source.is_dir():
        raise InvalidRequestError(f"{source} is neither a directory nor a file")
    out: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            local = Path(dirpath) / name
            if name.startswith(".") or not local.is_file():
                continue
            rel = local.relative_to(source).as_posix()
            out.append(SourceFile(validate_artifact_path(rel), local, local.stat().st_size))
    if not out:
        raise InvalidRequestError(f"{source} holds no files to register")
    return sorted(out, key=lambda f: f.path)


class ProgressCounter:
    """Adds up bytes moved across the files of one operation and reports each step
    (thread-safe enough for one writer at a time, which is how the stores use it)."""

    def __init__(self, phase: str, total_bytes: int, progress: Progress | None) -> None:
        self.phase = phase
        self.total_bytes = total_bytes
        self.done_bytes = 0
        self.path = ""
        self._progress = progress

    def add(self, num_bytes: int) -> None:
        self.done_bytes += num_bytes
        if self._progress is not None:
            self._progress(
                TransferProgress(self.phase, self.path, self.done_bytes, self.total_bytes)
            )


class HashingReader:
    """A read-only, non-seekable view of a file that hashes what passes through it.

    Non-seekable on purpose: multipart uploaders then read it strictly in order, one part
    at a time, instead of seeking around (and hashing out of order)."""

    def __init__(self, raw: IO[bytes], counter: ProgressCounter | None = None) -> None:
        self._raw = raw
        self._counter = counter
        self.hasher = hashlib.sha256()
        self.num_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(CHUNK_BYTES if size is None or size < 0 else size)
        self.hasher.update(data)
        self.num_bytes += len(data)
        if self._counter is not None and data:
            self._counter.add(len(data))
        return data


class HashingWriter:
    """A write-only, non-seekable file wrapper that hashes what is written, in order."""

    def __init__(self, raw: IO[bytes], counter: ProgressCounter | None = None) -> None:
        self._raw = raw
        self._counter = counter
        self.hasher = hashlib.sha256()
        self.num_bytes = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.num_bytes += len(data)
        if self._counter is not None and data:
            self._counter.add(len(data))
        return self._raw.write(data)


def hash_file(path: Path, counter: ProgressCounter | None = None) -> ArtifactFile:
    """The manifest entry of one local file (`path` relative to its root is the caller's)."""
    with path.open("rb") as f:
        reader = HashingReader(f, counter)
        while reader.read(CHUNK_BYTES):
            pass
    return ArtifactFile(path.name, reader.num_bytes, reader.hasher.hexdigest())


def hash_source(files: list[SourceFile], progress: Progress | None = None) -> list[ArtifactFile]:
    """Manifest entries of `files`, streaming each one (blocking; run it on a thread)."""
    counter = ProgressCounter("hash", sum(f.size_bytes for f in files), progress)
    out = []
    for f in files:
        counter.path = f.path
        entry = hash_file(f.local_path, counter)
        out.append(ArtifactFile(f.path, entry.size_bytes, entry.sha256))
    return out


def copy_hashing(
    src: IO[bytes] | HashingReader, dest: Path, counter: ProgressCounter | None = None
) -> ArtifactFile:
    """Stream `src` into a new file at `dest` (fsynced), hashing on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as out:
        writer = HashingWriter(out, counter)
        while chunk := src.read(CHUNK_BYTES):
            writer.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return ArtifactFile(dest.name, writer.num_bytes, writer.hasher.hexdigest())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore(ABC):
    """Stores artifact sets under keys; every method streams, none loads a whole file."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where the set stored under `key` lives (`file://...`, `s3://bucket/...`)."""

    @abstractmethod
    def key_of(self, uri: str) -> str:
        """The key of a URI this store produced; ArtifactStoreError for another store's."""

    @abstractmethod
    async def put_dir(
        self, key: str, files: list[SourceFile], progress: Progress | None = None
    ) -> list[ArtifactFile]:
        """Store `files` under `key`, one after the other, each streamed in chunks; returns
        their manifest entries hashed while streaming. A failed put leaves nothing behind."""

    @abstractmethod
    async def download(
        self, key: str, path: str, dest: Path, counter: ProgressCounter | None = None
    ) -> ArtifactFile:
        """Stream one stored file into `dest` (created), hashing while writing."""

    @abstractmethod
    def read(self, key: str, path: str) -> AsyncIterator[bytes]:
        """The bytes of one stored file, in chunks."""

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether anything is stored under `key`."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove everything under `key` (nothing there is fine)."""


def artifact_key(name: str, version: str, digest: str) -> str:
    """`models/<name>/<version>/<first 16 hex digits of the digest>`: two contents of
    one name@version (a refused re-registration, a race) never share a key."""
    return f"models/{name}/{version}/{digest.removeprefix('sha256:')[:16]}"


class LocalArtifactStore(ArtifactStore):
    """Artifact sets as directories under `root` (the data dir's `artifacts/`); a put is
    written into a temporary directory and renamed into place, so a key either does not
    exist or is complete."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def key_of(self, uri: str) -> str:
        prefix = self.root.as_uri() + "/"
        if not uri.startswith(prefix):
            raise ArtifactStoreError(f"{uri} is not in the local artifact store {self.root}")
        return uri.removeprefix(prefix)

    async def put_dir(
        self, key: str, files: list[SourceFile], progress: Progress | None = None
    ) -> list[ArtifactFile]:
        return await asyncio.to_thread(self._put_dir, key, files, progress)

    def _put_dir(
        self, key: str, files: list[SourceFile], progress: Progress | None
    ) -> list[ArtifactFile]:
        target = self._dir(key)
        tmp = self.root / ".tmp" / uuid.uuid4().hex
        counter = ProgressCounter("upload", sum(f.size_bytes for f in files), progress)
        try:
            out = []
            for f in files:
                counter.path = f.path
                with f.local_path.open("rb") as src:
                    entry = copy_hashing(src, tmp / f.path, counter)
                out.append(ArtifactFile(f.path, entry.size_bytes, entry.sha256))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                # The same key (same digest) was stored meanwhile: keep that one.
                shutil.rmtree(tmp, ignore_errors=True)
            fsync_dir(target.parent)
            return out
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    async def download(
        self, key: str, path: str, dest: Path, counter: ProgressCounter | None = None
    ) -> ArtifactFile:
        source = self._file(key, path)

        def copy() -> ArtifactFile:
            with source.open("rb") as src:
                return copy_hashing(src, dest, counter)

        try:
            return await asyncio.to_thread(copy)
        except FileNotFoundError as e:
            raise ArtifactStoreError(f"{self.uri(key)}/{path} does not exist") from e

    async def read(self, key: str, path: str) -> AsyncIterator[bytes]:
        source = self._file(key, path)
        try:
            f = await asyncio.to_thread(source.open, "rb")
        except FileNotFoundError as e:
            raise ArtifactStoreError(f"{self.uri(key)}/{path} does not exist") from e
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
                yield chunk
        finally:
            f.close()

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._dir(key).is_dir)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._dir(key), True)

    def _dir(self, key: str) -> Path:
        return self.root / validate_artifact_path(key)

    def _file(self, key: str, path: str) -> Path:
        return self._dir(key) / validate_artifact_path(path)


def build_artifact_store(config: ArtifactStoreConfig, data_dir: Path) -> ArtifactStore:
    """The configured store: `data_dir/artifacts` (local) or the S3 bucket."""
    if config.kind == "s3":
        from tenantserve.registry.artifacts_s3 import S3ArtifactStore

        return S3ArtifactStore.from_config(config)
    return LocalArtifactStore(Path(data_dir) / ARTIFACTS_DIR)
