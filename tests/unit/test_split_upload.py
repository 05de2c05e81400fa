"""SplitUpload's bookkeeping against a fake bucket (the real S3 path is in tests/e2e/test_per_table.py)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import zstandard
from mysql_backup_operator.agent.pipeline import SplitUpload
from mysql_backup_operator.api import Compression
from mysql_backup_operator.contract.manifest import ObjectKind
from mysql_backup_operator.contract.store_s3 import S3Store

DUMP = (Path(__file__).parent / "data" / "awkward-dump.sql").read_bytes()


class FakeBucket:
    def __init__(self, fail_key_part: str | None = None) -> None:
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.objects: dict[str, bytes] = {}
        self.fail_key_part = fail_key_part

    def create_multipart_upload(self, *, Key: str, **_: Any) -> dict[str, str]:
        self.uploads[Key] = {}
        return {"UploadId": Key}

    def upload_part(self, *, Key: str, PartNumber: int, Body: bytes, **_: Any) -> dict[str, str]:
        if self.fail_key_part and self.fail_key_part in Key:
            raise RuntimeError("boom")
        self.uploads[Key][PartNumber] = bytes(Body)
        return {"ETag": str(PartNumber)}

    def complete_multipart_upload(self, *, Key: str, **_: Any) -> None:
        parts = self.uploads.pop(Key)
        self.objects[Key] = b"".join(parts[n] for n in sorted(parts))

    def abort_multipart_upload(self, *, Key: str, **_: Any) -> None:
        self.uploads.pop(Key, None)

    def delete_object(self, *, Key: str, **_: Any) -> None:
        self.objects.pop(Key, None)


def test_objects_decompress_to_the_dump_and_match_their_manifest_entries() -> None:
    bucket = FakeBucket()
    up = SplitUpload(store=S3Store.from_client(bucket, "b"), directory="d", kind=Compression.ZSTD, level=3, metadata={})
    stats = up.stream(io.BufferedReader(io.BytesIO(DUMP)))  # type: ignore[arg-type]
    objects = up.finish()
    assert stats.raw_bytes == len(DUMP) and b"-- Dump completed" in stats.tail
    assert objects[0].kind == ObjectKind.PROLOGUE and objects[-1].kind == ObjectKind.EPILOGUE
    assert [(o.database, o.table) for o in objects if o.kind == ObjectKind.TABLE] == [
        ("awk1", "a"),
        ("awk1", "b"),
        ("awk1", "p"),
        ("awk2", "base"),
    ]
    assert set(bucket.objects) == {o.key for o in objects} and not bucket.uploads
    d = zstandard.ZstdDecompressor()
    for o in objects:
        body = bucket.objects[o.key]
        assert hashlib.sha256(body).hexdigest() == o.sha256 and len(body) == o.stored_bytes
        assert len(d.decompressobj().decompress(body)) == o.size_bytes
    assert objects[1].key == "d/1-tables/00001-awk1.a.sql.zst"


def test_a_failure_leaves_nothing_behind() -> None:
    bucket = FakeBucket(fail_key_part="awk2.base")
    up = SplitUpload(store=S3Store.from_client(bucket, "b"), directory="d", kind=Compression.ZSTD, level=3, metadata={})
    with pytest.raises(RuntimeError, match="boom"):
        up.stream(io.BufferedReader(io.BytesIO(DUMP)))  # type: ignore[arg-type]
        up.finish()
    assert bucket.objects, "earlier tables were published before the failure"
    up.abort()
    assert not bucket.objects and not bucket.uploads


def test_sigterm_while_a_table_object_opens_leaves_no_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod is deleted just as the next table's upload is created (the killed-agent e2e test
    hit it): the signal waits until the object is reachable, so abort() finds every upload."""
    import os
    import signal

    from mysql_backup_operator.agent import interrupt

    class SignalOnCreate(FakeBucket):
        def create_multipart_upload(self, *, Key: str, **kw: Any) -> dict[str, str]:
            r = super().create_multipart_upload(Key=Key, **kw)
            if "/1-tables/" in Key:
                os.kill(os.getpid(), signal.SIGTERM)
            return r

    previous = signal.getsignal(signal.SIGTERM)
    interrupt.install()
    try:
        bucket = SignalOnCreate()
        up = SplitUpload(
            store=S3Store.from_client(bucket, "b"), directory="d", kind=Compression.ZSTD, level=3, metadata={}
        )
        with pytest.raises(interrupt.Terminated):
            up.stream(io.BufferedReader(io.BytesIO(DUMP)))  # type: ignore[arg-type]
        up.abort()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not bucket.uploads and not bucket.objects


def test_an_object_that_fails_to_open_aborts_its_own_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    from mysql_backup_operator.agent import pipeline

    monkeypatch.setattr(pipeline, "zstd_command", lambda level: ["/nonexistent/zstd"])
    bucket = FakeBucket()
    with pytest.raises(FileNotFoundError):
        pipeline.CompressedObject(
            store=S3Store.from_client(bucket, "b"), key="d/t.sql.zst", kind=Compression.ZSTD, level=3
        )
    assert not bucket.uploads
