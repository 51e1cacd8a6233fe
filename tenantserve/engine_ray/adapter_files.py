"""`ReplicaAdapterFiles`: a Ray Serve replica's own copies of the adapters it serves.

A replica may run on another node than the gateway, whose copy of an adapter
(`LoraRef.path`) it cannot read. From the adapter's `source` it pulls the files out of the
artifact store (S3 on a cluster; a local store where its directory is shared) into a
directory of its own, each checked against the manifest's size and sha256, once per
adapter version (`AdapterCopies.pull_files`; an intact copy is reused):

    <adapter_dir>/local/ray/<adapter id>/...     one adapter version's files
    <adapter_dir>/uploads/pull-<random>/         a pull in progress

Concurrent pulls of one adapter (two requests, two replicas on one node) each write their
own temporary directory; the first rename wins and the others use its copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tenantserve.config import ArtifactStoreConfig
from tenantserve.engine.request import LoraRef
from tenantserve.errors import EngineError
from tenantserve.registry.adapter_copies import AdapterCopies
from tenantserve.registry.artifacts import build_artifact_store


@dataclass(frozen=True)
class ReplicaFilesConfig:
    """What a replica needs to pull adapters: the gateway's artifact store settings (and
    data dir, the root of a local store) and the replica's own adapter directory."""

    artifacts: ArtifactStoreConfig
    data_dir: str
    adapter_dir: str


class ReplicaAdapterFiles:
    """This replica's adapter copies, pulled from the artifact store on first use."""

    def __init__(self, config: ReplicaFilesConfig) -> None:
        store = build_artifact_store(config.artifacts, Path(config.data_dir))
        self._copies = AdapterCopies(store, Path(config.adapter_dir))

    async def localize(self, lora: LoraRef) -> LoraRef:
        """`lora` pointing at this replica's copy (pulled when missing or damaged); as it
        is without a `source`. EngineError when the files cannot be pulled."""
        source = lora.source
        if source is None:
            return lora
        target = self._copies.work_dir / "local" / "ray" / lora.adapter_id
        try:
            path = await self._copies.pull_files(
                target, source.artifact_uri, source.files, lora.adapter_id
            )
        except Exception as e:  # the store unreachable, missing or corrupt bytes
            raise EngineError(
                f"adapter {lora.adapter_id}: this replica could not pull its files "
                f"({type(e).__name__}: {e})"
            ) from e
        return LoraRef(lora.adapter_id, str(path))
