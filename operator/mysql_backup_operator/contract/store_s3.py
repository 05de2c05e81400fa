"""S3 (and S3-compatible servers such as MinIO) behind the ObjectStore interface, with boto3.

The upload is a multipart upload: parts are invisible until CompleteMultipartUpload, and abort
(or a killed agent plus the bucket's AbortIncompleteMultipartUpload lifecycle rule) leaves no
object. Errors are boto3's own exceptions; `store.classify` reads their codes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .config import StorageConfig
from .parts import PartWriter
from .s3 import SseParams, client, sse_params
from .store import DEFAULT_PART_SIZE, READ_CHUNK, Backend, absent_ok, missing, size_in


class MultipartWriter(PartWriter):
    """An S3 multipart upload fed by PartWriter's buffering; up to `max_in_flight` parts at once."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        max_in_flight: int = 2,
        metadata: dict[str, str] | None = None,
        sse: SseParams | None = None,
    ) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.sse = sse or SseParams()
        self.upload_id: str = s3.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata=metadata or {}, **self.sse.create
        )["UploadId"]
        super().__init__(part_size=part_size, max_in_flight=max_in_flight, name="s3-part")

    def _upload_part(self, number: int, chunk: bytearray, *, offset: int, last: bool) -> dict[str, Any]:
        r = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=chunk, **self.sse.part
        )
        return {"PartNumber": number, "ETag": r["ETag"]}

    def _commit(self, tokens: list[Any]) -> None:
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": tokens}
        )

    def _cancel(self) -> None:
        with contextlib.suppress(Exception):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


def iter_object(
    s3: Any, bucket: str, key: str, chunk: int = READ_CHUNK, *, sse: SseParams | None = None
) -> Iterator[bytes]:
    body = s3.get_object(Bucket=bucket, Key=key, **(sse.read if sse else {}))["Body"]
    try:
        while True:
            data = body.read(chunk)
            if not data:
                return
            yield data
    finally:
        body.close()


class S3Store:
    backend = Backend.S3

    def __init__(self, cfg: StorageConfig, *, max_pool_connections: int = 10) -> None:
        self.bucket = cfg.bucket
        self.s3 = client(cfg, max_pool_connections=max_pool_connections)
        # Server-side encryption (storage.s3.serverSideEncryption): streamed data objects
        # (writer/iter) use all of it, SSE-C included; small documents (put/get: manifests,
        # indexes) get SSE-S3/KMS only, so the operator reads them without the customer key.
        self.sse = sse_params(cfg)

    @classmethod
    def from_client(cls, s3: Any, bucket: str) -> S3Store:
        """A store over an existing boto3 client (or a test double with its methods)."""
        store = cls.__new__(cls)
        store.bucket, store.s3, store.sse = bucket, s3, SseParams()
        return store

    def writer(self, key: str, *, metadata: dict[str, str] | None = None) -> MultipartWriter:
        return MultipartWriter(self.s3, self.bucket, key, metadata=metadata, sse=self.sse)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **self.sse.manifest)

    def get(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def iter(self, key: str, *, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        return iter_object(self.s3, self.bucket, key, chunk, sse=self.sse)

    def list(self, prefix: str) -> Iterator[str]:
        return (k for k, _ in self.sizes(prefix))

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                yield str(o["Key"]), int(o["Size"])

    def size(self, key: str) -> int | None:
        """One ListObjectsV2 of the key itself, not HEAD (which needs the SSE-C customer key). S3
        lists in UTF-8 binary order and a key sorts before every longer key it prefixes, so the
        first entry is the key when it exists."""
        try:
            page = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except Exception as e:
            if missing(e):  # no bucket: no object either
                return None
            raise
        return size_in(((str(o["Key"]), int(o["Size"])) for o in page.get("Contents", [])), key)

    def delete(self, key: str) -> None:
        with absent_ok():
            self.s3.delete_object(Bucket=self.bucket, Key=key)

    def close(self) -> None:
        pass
