"""An in-memory S3 bucket with the boto3 client methods S3Store calls, for fast tests of the real
S3Store and of everything above it (the operator's Store, sync, the binlog SegmentStore).

It keeps the one S3 rule these tests are about: an object written with SSE-C can be listed by
anyone, but HEAD and GET of it without its customer key fail (400, as S3 and MinIO answer).
Listings are in key order, paged, as S3's are.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any


class S3Error(Exception):
    """Shaped like botocore's ClientError: store.classify reads `response`."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"{code} ({status})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class FakeS3Bucket:
    def __init__(self, bucket: str = "b", *, page_size: int = 1000) -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.customer_keys: dict[str, bytes] = {}  # key -> the SSE-C key it was written with
        self.page_size = page_size
        self.calls: list[str] = []
        self._uploads: dict[str, tuple[str, dict[int, bytes], bytes | None]] = {}

    # ------------------------------------------------------------------ helpers for tests

    def add(self, key: str, data: bytes, *, customer_key: bytes | None = None) -> None:
        self.objects[key] = data
        if customer_key is not None:
            self.customer_keys[key] = customer_key
        else:
            self.customer_keys.pop(key, None)

    # ------------------------------------------------------------------ the client's methods

    def _check(self, Bucket: str) -> None:
        if Bucket != self.bucket:
            raise S3Error("NoSuchBucket", 404)

    def _readable(self, key: str, kw: dict[str, Any]) -> bytes:
        if key not in self.objects:
            raise S3Error("NoSuchKey", 404)
        want = self.customer_keys.get(key)
        if want is not None and kw.get("SSECustomerKey") != want:
            raise S3Error("400", 400)  # HEAD has no body, so S3 sends only the status
        return self.objects[key]

    def list_objects_v2(
        self, *, Bucket: str, Prefix: str = "", MaxKeys: int = 1000, ContinuationToken: str = ""
    ) -> dict[str, Any]:
        self.calls.append("list")
        self._check(Bucket)
        keys = sorted(k for k in self.objects if k.startswith(Prefix) and k > ContinuationToken)
        page = keys[: min(MaxKeys, self.page_size)]
        out: dict[str, Any] = {"KeyCount": len(page), "IsTruncated": len(page) < len(keys)}
        if page:
            out["Contents"] = [{"Key": k, "Size": len(self.objects[k])} for k in page]
        if out["IsTruncated"]:
            out["NextContinuationToken"] = page[-1]
        return out

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        bucket = self

        class Paginator:
            def paginate(self, *, Bucket: str, Prefix: str = "") -> Iterator[dict[str, Any]]:
                token = ""
                while True:
                    page = bucket.list_objects_v2(Bucket=Bucket, Prefix=Prefix, ContinuationToken=token)
                    yield page
                    if not page["IsTruncated"]:
                        return
                    token = page["NextContinuationToken"]

        return Paginator()

    def head_object(self, *, Bucket: str, Key: str, **kw: Any) -> dict[str, Any]:
        self.calls.append("head")
        self._check(Bucket)
        return {"ContentLength": len(self._readable(Key, kw))}

    def get_object(self, *, Bucket: str, Key: str, **kw: Any) -> dict[str, Any]:
        self.calls.append("get")
        self._check(Bucket)
        return {"Body": io.BytesIO(self._readable(Key, kw))}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **kw: Any) -> None:
        self.calls.append("put")
        self._check(Bucket)
        self.add(Key, bytes(Body), customer_key=kw.get("SSECustomerKey"))

    def delete_object(self, *, Bucket: str, Key: str) -> None:
        self.calls.append("delete")
        self._check(Bucket)
        self.objects.pop(Key, None)
        self.customer_keys.pop(Key, None)

    def create_multipart_upload(self, *, Bucket: str, Key: str, **kw: Any) -> dict[str, str]:
        self._check(Bucket)
        upload_id = f"u{len(self._uploads) + 1}"
        self._uploads[upload_id] = (Key, {}, kw.get("SSECustomerKey"))
        return {"UploadId": upload_id}

    def upload_part(self, *, UploadId: str, PartNumber: int, Body: bytes, **_: Any) -> dict[str, str]:
        self._uploads[UploadId][1][PartNumber] = bytes(Body)
        return {"ETag": f"e{PartNumber}"}

    def complete_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str, **_: Any) -> None:
        key, parts, customer_key = self._uploads.pop(UploadId)
        assert key == Key
        self.add(key, b"".join(parts[n] for n in sorted(parts)), customer_key=customer_key)

    def abort_multipart_upload(self, *, UploadId: str, **_: Any) -> None:
        self._uploads.pop(UploadId, None)
