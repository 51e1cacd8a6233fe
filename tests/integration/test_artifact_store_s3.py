"""Artifact stores for real: the S3 store against moto_server (a real S3-API server on
loopback, started here), the local store on disk; the same behaviours on both, then what
only S3 shows (multipart streaming), then the serving node's verified cache.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tenantserve.registry import artifacts
from tenantserve.registry.artifact_cache import ArtifactCache
from tenantserve.registry.artifacts import (
    ArtifactIntegrityError,
    ArtifactStore,
    ArtifactStoreError,
    LocalArtifactStore,
    TransferProgress,
    artifact_key,
    build_artifact_store,
    scan_source,
)
from tenantserve.registry.artifacts_s3 import S3ArtifactStore
from tenantserve.registry.model import (
    Device,
    ModelFormat,
    ModelStatus,
    ModelVersion,
    Quantization,
    manifest_digest,
)
from tenantserve.registry.service import RegistryService
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate
from tests.helpers.s3 import S3Server, moto_server

MIB = 1 << 20
PART_BYTES = 5 * MIB  # S3's smallest multipart part


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


def _new_bucket(server: S3Server) -> str:
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    return build_artifact_store(server.config(_new_bucket(server)), tmp_path)


def _write_random(path: Path, num_bytes: int) -> bytes:
    """Write `num_bytes` random bytes to `path` in 1 MiB pieces; returns their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = num_bytes
        while left:
            chunk = os.urandom(min(MIB, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.digest()


def _checkpoint(root: Path, weights_bytes: int = 3 * MIB) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"torch_dtype": "float32"}')
    (root / "sub" / "tokenizer.json").write_text('{"vocab": {}}')
    (root / ".cache").mkdir()
    (root / ".cache" / "lock").write_text("skipped")
    _write_random(root / "model.safetensors", weights_bytes)
    return root


def _version_of(store: ArtifactStore, key: str, files: list[Any]) -> ModelVersion:
    return ModelVersion(
        name="m",
        version="1.0.0",
        digest=manifest_digest(files),
        format=ModelFormat.SAFETENSORS,
        quantization=Quantization.FP32,
        runtimes=("tenantserve",),
        min_memory_bytes=0,
        device=Device.ANY,
        status=ModelStatus.ACTIVE,
        scope="public",
        created_at=datetime.now(UTC),
        artifact_uri=store.uri(key),
        files=tuple(files),
    )


async def _read_all(store: ArtifactStore, key: str, path: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, path)])


async def test_a_put_directory_reads_back_byte_for_byte_with_streamed_hashes(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = _checkpoint(tmp_path / "ckpt")
    files = scan_source(source)
    assert [f.path for f in files] == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    events: list[TransferProgress] = []
    stored = await store.put_dir("models/m/1.0.0/abc", files, events.append)
    for entry, f in zip(stored, files, strict=True):
        data = f.local_path.read_bytes()
        assert (entry.path, entry.size_bytes) == (f.path, len(data))
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert await _read_all(store, "models/m/1.0.0/abc", f.path) == data
    total = sum(f.size_bytes for f in files)
    assert events[-1] == TransferProgress("upload", "sub/tokenizer.json", total, total)
    assert [e.done_bytes for e in events] == sorted(e.done_bytes for e in events)
    assert await store.exists("models/m/1.0.0/abc")
    assert not await store.exists("models/m/1.0.0/ab")
    await store.delete("models/m/1.0.0/abc")
    assert not await store.exists("models/m/1.0.0/abc")
    await store.delete("models/m/1.0.0/abc")  # deleting nothing is fine


async def test_a_missing_file_is_a_store_error(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactStoreError):
        await store.download("models/none/1.0.0/x", "model.safetensors", tmp_path / "out")


async def test_the_cache_pulls_verifies_and_reuses_a_version(
    store: ArtifactStore, tmp_path: Path
) -> None:
    files = scan_source(_checkpoint(tmp_path / "ckpt"))
    key = artifact_key("m", "1.0.0", "sha256:" + "ab" * 32)
    version = _version_of(store, key, await store.put_dir(key, files))
    cache = ArtifactCache(store, tmp_path / "cache")
    pulled = await cache.pull(version)
    assert pulled == cache.path_of(version)
    for f in files:
        assert (pulled / f.path).read_bytes() == f.local_path.read_bytes()
    # A second pull reuses the copy: with the store emptied it still answers.
    await store.delete(key)
    assert await cache.pull(version) == pulled
    assert not list((tmp_path / "cache" / ".tmp").iterdir())


async def test_a_corrupt_cached_copy_is_detected_and_pulled_again(
    store: ArtifactStore, tmp_path: Path
) -> None:
    files = scan_source(_checkpoint(tmp_path / "ckpt"))
    key = "models/m/1.0.0/k"
    version = _version_of(store, key, await store.put_dir(key, files))
    cache = ArtifactCache(store, tmp_path / "cache")
    pulled = await cache.pull(version)
    weights = pulled / "model.safetensors"
    original = weights.read_bytes()
    with weights.open("r+b") as f:  # same size, one flipped byte
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    (pulled / "config.json").unlink()
    assert await cache.pull(version) == pulled
    assert weights.read_bytes() == original
    assert (pulled / "config.json").read_bytes() == files[0].local_path.read_bytes()


async def test_bytes_in_the_store_that_do_not_match_the_manifest_are_never_cached(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = _checkpoint(tmp_path / "ckpt")
    key = "models/m/1.0.0/k"
    version = _version_of(store, key, await store.put_dir(key, scan_source(source)))
    # Someone overwrites the stored weights with other bytes of the same size.
    other = os.urandom(version.files[1].size_bytes)
    if isinstance(store, LocalArtifactStore):
        (store.root / key / "model.safetensors").write_bytes(other)
    else:
        assert isinstance(store, S3ArtifactStore)
        object_key = f"{key}/model.safetensors"
        store._client.put_object(Bucket=store.bucket, Key=object_key, Body=other)
    cache = ArtifactCache(store, tmp_path / "cache")
    with pytest.raises(ArtifactIntegrityError, match=r"model\.safetensors .* does not match"):
        await cache.pull(version)
    assert not cache.path_of(version).exists()
    assert not list((tmp_path / "cache" / ".tmp").iterdir())


async def test_a_large_file_goes_up_in_multipart_pieces_never_read_whole(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 4 * PART_BYTES + 123
    expected = _write_random(tmp_path / "big" / "model.safetensors", size)
    reads: list[int] = []
    original_read = artifacts.HashingReader.read

    def recording_read(self: artifacts.HashingReader, n: int = -1) -> bytes:
        data = original_read(self, n)
        reads.append(len(data))
        return data

    monkeypatch.setattr(artifacts.HashingReader, "read", recording_read)
    bucket = _new_bucket(s3_server)
    client = s3_server.client()
    store = S3ArtifactStore(client, bucket, part_bytes=PART_BYTES, max_concurrent_parts=2)
    [entry] = await store.put_dir("models/big/1.0.0/k", scan_source(tmp_path / "big"))
    assert entry.sha256 == expected.hex() and entry.size_bytes == size
    assert sum(reads) == size and max(reads) <= PART_BYTES < size
    head = client.head_object(Bucket=bucket, Key="models/big/1.0.0/k/model.safetensors")
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith("-5")  # a multipart upload of 5 parts
    got = await store.download("models/big/1.0.0/k", "model.safetensors", tmp_path / "back")
    assert got.sha256 == expected.hex()


async def test_an_unreachable_or_missing_bucket_is_a_store_error(
    s3_server: S3Server, tmp_path: Path
) -> None:
    store = build_artifact_store(s3_server.config("no-such-bucket"), tmp_path)
    files = scan_source(_checkpoint(tmp_path / "ckpt", weights_bytes=1000))
    with pytest.raises(ArtifactStoreError, match="no-such-bucket"):
        await store.put_dir("models/m/1.0.0/k", files)


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    await migrate(url)
    db = Database(url)
    yield db
    await db.dispose()


async def test_a_version_registered_into_s3_is_pulled_by_a_serving_node(
    s3_server: S3Server, sqlite_db: Database, tmp_path: Path
) -> None:
    store = build_artifact_store(s3_server.config(_new_bucket(s3_server)), tmp_path)
    service = RegistryService(lambda: RegistryUnitOfWork(sqlite_db.sessionmaker), store)
    source = _checkpoint(tmp_path / "ckpt", weights_bytes=PART_BYTES + 1)
    result = await service.register(source, "m", "1.0.0")
    assert result.created and result.version.artifact_uri.startswith("s3://artifacts-")
    assert result.version.quantization is Quantization.FP32
    node = ArtifactCache(store, tmp_path / "node-cache")
    pulled = await node.pull(await service.get("m@1.0.0"))
    assert (pulled / "model.safetensors").read_bytes() == (
        source / "model.safetensors"
    ).read_bytes()
    assert not (pulled / ".cache").exists()
