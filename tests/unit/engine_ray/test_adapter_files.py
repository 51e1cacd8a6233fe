"""`ReplicaAdapterFiles`: a Ray replica pulls an adapter's files from the artifact store
into its own directory (checked against the manifest), reuses an intact copy, pulls a
damaged one again, and turns a store that cannot deliver into the engine's error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenantserve.config import ArtifactStoreConfig
from tenantserve.engine.request import LoraFile, LoraRef, LoraSource
from tenantserve.engine_ray.adapter_files import ReplicaAdapterFiles, ReplicaFilesConfig
from tenantserve.errors import EngineError
from tenantserve.registry.artifacts import (
    ARTIFACTS_DIR,
    LocalArtifactStore,
    scan_source,
)

FILES = {"adapter_config.json": b'{"r": 4}', "adapter_model.safetensors": b"\x00" * 4096}


async def _stored(data_dir: Path, tmp_path: Path) -> LoraSource:
    """An adapter's files put into the data dir's local artifact store."""
    source = tmp_path / "upload"
    source.mkdir()
    for name, data in FILES.items():
        (source / name).write_bytes(data)
    store = LocalArtifactStore(data_dir / ARTIFACTS_DIR)
    manifest = await store.put_dir("adapters/ten_a/bot/0123", scan_source(source))
    files = tuple(LoraFile(f.path, f.size_bytes, f.sha256) for f in manifest)
    return LoraSource(store.uri("adapters/ten_a/bot/0123"), files)


@pytest.fixture
def files(tmp_path: Path) -> ReplicaAdapterFiles:
    config = ReplicaFilesConfig(
        ArtifactStoreConfig(), str(tmp_path / "data"), str(tmp_path / "replica")
    )
    return ReplicaAdapterFiles(config)


async def test_an_adapter_is_pulled_into_the_replicas_own_directory(
    files: ReplicaAdapterFiles, tmp_path: Path
) -> None:
    source = await _stored(tmp_path / "data", tmp_path)
    gateway_copy = tmp_path / "elsewhere" / "not-on-this-node"
    local = await files.localize(LoraRef("ad_1", str(gateway_copy), source))
    assert local.adapter_id == "ad_1" and local.source is None
    path = Path(local.path)
    assert path == tmp_path / "replica" / "local" / "ray" / "ad_1"
    assert {p.name: p.read_bytes() for p in path.iterdir()} == FILES
    assert not any((tmp_path / "replica" / "uploads").iterdir())  # no pull left behind


async def test_an_intact_copy_is_reused_and_a_damaged_one_pulled_again(
    files: ReplicaAdapterFiles, tmp_path: Path
) -> None:
    source = await _stored(tmp_path / "data", tmp_path)
    ref = LoraRef("ad_1", "/nowhere", source)
    path = Path((await files.localize(ref)).path)
    weights = path / "adapter_model.safetensors"
    inode = weights.stat().st_ino
    assert Path((await files.localize(ref)).path) == path
    assert weights.stat().st_ino == inode  # reused, not pulled again
    weights.write_bytes(b"\x00" * 10)  # truncated
    await files.localize(ref)
    assert weights.read_bytes() == FILES["adapter_model.safetensors"]


async def test_without_a_source_the_reference_is_kept(files: ReplicaAdapterFiles) -> None:
    ref = LoraRef("smoke-1", "/work/smoke/adapter")
    assert await files.localize(ref) is ref


async def test_a_store_that_cannot_deliver_is_an_engine_error(
    files: ReplicaAdapterFiles, tmp_path: Path
) -> None:
    source = await _stored(tmp_path / "data", tmp_path)
    bad = LoraSource(
        source.artifact_uri, (source.files[0]._replace(sha256="0" * 64), *source.files[1:])
    )
    with pytest.raises(EngineError, match="ad_2: this replica could not pull its files"):
        await files.localize(LoraRef("ad_2", "/nowhere", bad))
    assert not (tmp_path / "replica" / "local" / "ray" / "ad_2").exists()
