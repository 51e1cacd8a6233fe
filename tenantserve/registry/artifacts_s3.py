"""`S3ArtifactStore`: artifact sets as objects `<key>/<path>` in one bucket of any S3-API
server (AWS S3, MinIO, Ceph, moto_server in tests), through boto3.

Large files go up as multipart uploads (`upload_fileobj`), read strictly in order through
a hashing reader, so at most a few parts are in memory at once; downloads stream into a
hashing writer the same way. Every blocking boto3 call runs on a worker thread
(`asyncio.to_thread`); boto3 clients are thread-safe. S3 has no rename: a set becomes
visible to the registry only when its row commits after the last upload, and a failed
put deletes what it uploaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tenantserve.config import ArtifactStoreConfig
from tenantserve.registry.artifacts import (
    CHUNK_BYTES,
    ArtifactStore,
    ArtifactStoreError,
    HashingReader,
    HashingWriter,
    Progress,
    ProgressCounter,
    SourceFile,
)
from tenantserve.registry.model import ArtifactFile, validate_artifact_path

# S3's smallest multipart part is 5 MiB; larger files go up in parts of this size.
DEFAULT_PART_BYTES = 16 << 20
MAX_CONCURRENT_PARTS = 4
_DELETE_BATCH = 1000


class S3ArtifactStore(ArtifactStore):
    """Artifact sets in `bucket` (an S3-API server); `client` is a boto3 S3 client."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        part_bytes: int = DEFAULT_PART_BYTES,
        max_concurrent_parts: int = MAX_CONCURRENT_PARTS,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self._transfer = TransferConfig(
            multipart_threshold=part_bytes,
            multipart_chunksize=part_bytes,
            max_concurrency=max_concurrent_parts,
            io_chunksize=CHUNK_BYTES,
        )

    @classmethod
    def from_config(cls, config: ArtifactStoreConfig) -> S3ArtifactStore:
        """A store on the configured endpoint, bucket, region and credentials (unset ones:
        boto3's defaults and credential chain). Connects to nothing yet."""
        assert config.s3_bucket is not None
        options: dict[str, Any] = {}
        if config.s3_endpoint_url:
            # Path-style addressing works with every S3-compatible server behind one host.
            options["s3"] = {"addressing_style": "path"}
        client = boto3.client(
            "s3",
            endpoint_url=config.s3_endpoint_url,
            region_name=config.s3_region,
            aws_access_key_id=config.s3_access_key_id,
            aws_secret_access_key=config.s3_secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, **options),
        )
        return cls(client, config.s3_bucket)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_of(self, uri: str) -> str:
        prefix = f"s3://{self.bucket}/"
        if not uri.startswith(prefix):
            raise ArtifactStoreError(f"{uri} is not in the S3 artifact bucket {self.bucket}")
        return uri.removeprefix(prefix)

    async def put_dir(
        self, key: str, files: list[SourceFile], progress: Progress | None = None
    ) -> list[ArtifactFile]:
        try:
            return await asyncio.to_thread(self._put_dir, key, files, progress)
        except BaseException:
            await asyncio.shield(self.delete(key))
            raise

    def _put_dir(
        self, key: str, files: list[SourceFile], progress: Progress | None
    ) -> list[ArtifactFile]:
        counter = ProgressCounter("upload", sum(f.size_bytes for f in files), progress)
        out = []
        for f in files:
            counter.path = f.path
            with f.local_path.open("rb") as raw:
                reader = HashingReader(raw, counter)
                self._call(
                    "upload",
                    self._client.upload_fileobj,
                    reader,
                    self.bucket,
                    self._object(key, f.path),
                    Config=self._transfer,
                )
            out.append(ArtifactFile(f.path, reader.num_bytes, reader.hasher.hexdigest()))
        return out

    async def download(
        self, key: str, path: str, dest: Path, counter: ProgressCounter | None = None
    ) -> ArtifactFile:
        def fetch() -> ArtifactFile:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("wb") as out:
                writer = HashingWriter(out, counter)
                self._call(
                    "download",
                    self._client.download_fileobj,
                    self.bucket,
                    self._object(key, path),
                    writer,
                    Config=self._transfer,
                )
            return ArtifactFile(dest.name, writer.num_bytes, writer.hasher.hexdigest())

        return await asyncio.to_thread(fetch)

    async def read(self, key: str, path: str) -> AsyncIterator[bytes]:
        response = await asyncio.to_thread(
            self._call,
            "read",
            self._client.get_object,
            Bucket=self.bucket,
            Key=self._object(key, path),
        )
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def exists(self, key: str) -> bool:
        response = await asyncio.to_thread(
            self._call,
            "list",
            self._client.list_objects_v2,
            Bucket=self.bucket,
            Prefix=key.rstrip("/") + "/",
            MaxKeys=1,
        )
        return bool(response.get("KeyCount", 0))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
        paginator = self._client.get_paginator("list_objects_v2")
        prefix = validate_artifact_path(key) + "/"
        pages = self._call(
            "list", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix))
        )
        for page in pages:
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for i in range(0, len(objects), _DELETE_BATCH):
                self._call(
                    "delete",
                    self._client.delete_objects,
                    Bucket=self.bucket,
                    Delete={"Objects": objects[i : i + _DELETE_BATCH], "Quiet": True},
                )

    def _object(self, key: str, path: str) -> str:
        return f"{validate_artifact_path(key)}/{validate_artifact_path(path)}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, with boto errors as ArtifactStoreError naming the bucket."""
        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            raise ArtifactStoreError(
                f"S3 {what} in bucket {self.bucket!r} failed ({code}): {e}"
            ) from e
        except BotoCoreError as e:
            raise ArtifactStoreError(f"S3 {what} in bucket {self.bucket!r} failed: {e}") from e
