"""SplitUpload's bookkeeping against a fake bucket (the real S3 path is in tests/e2e/test_per_table.py)."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any

import pytest
import zstandard
from mysql_backup_operator.agent.pipeline import (
    AUTO_LEVEL_MIN_BYTES,
    LEVEL_SAMPLE,
    SplitUpload,
    choose_level,
    compress_stream,
    start_level,
)
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


def _hex_rows(n: int) -> bytes:
    """Rows of hash columns, like the benchmark's tables: high entropy, where level 1 wins."""
    md5 = lambda i: hashlib.md5(str(i).encode()).hexdigest()  # noqa: E731
    return b"".join(f"({i},'{md5(i)}','{md5(i + 1)}','{md5(i * 7)}'),\n".encode() for i in range(n))


def _text_rows(n: int) -> bytes:
    """Rows of words drawn as in text (Zipf-distributed over a vocabulary), where level 3 is
    smaller. (Evenly drawn or periodic words are not: levels 1 and 2 win on those too.)"""
    rnd = random.Random(3)
    vocab = [bytes(rnd.choices(b"etaoinshrdlcumwfgypbvk", k=rnd.randint(3, 10))) for _ in range(2000)]
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    return b"".join(b"(%d,'%s','',''),\n" % (i, b" ".join(rnd.choices(vocab, weights, k=8))) for i in range(n))


def test_the_level_is_the_cheapest_one_no_larger_than_level_3() -> None:
    hexed = choose_level(_hex_rows(40_000)[:LEVEL_SAMPLE])
    assert hexed.level in (1, 2) and hexed.sizes[hexed.level] <= hexed.sizes[3]
    text = choose_level(_text_rows(60_000)[:LEVEL_SAMPLE])
    assert text.level == 3 and text.sizes[1] > text.sizes[3] and text.sizes[2] > text.sizes[3]
    small = choose_level(b"x" * 1000)
    assert small.level == 3 and not small.sizes


@pytest.mark.parametrize("rows", [_hex_rows, _text_rows])
def test_an_unset_level_is_chosen_per_table_and_recorded(rows: Any) -> None:
    """Each table object holds back its first LEVEL_SAMPLE bytes, then compresses everything at
    the chosen level: the object still decompresses to exactly its bytes, and a table smaller
    than the sample gets level 3."""
    big = rows(60_000)
    assert len(big) > LEVEL_SAMPLE
    dump = (
        b"-- MariaDB dump\n--\n-- Current Database: `db`\n--\n\nUSE `db`;\n"
        b"--\n-- Table structure for table `big`\n--\n\nCREATE TABLE `big` (id int);\nINSERT INTO `big` VALUES "
        + big
        + b"(0,'','','');\n--\n-- Table structure for table `small`\n--\n\nCREATE TABLE `small` (id int);\n"
        b"INSERT INTO `small` VALUES (1);\n-- Dump completed on 2026-12-07\n"
    )
    bucket = FakeBucket()
    up = SplitUpload(
        store=S3Store.from_client(bucket, "b"), directory="d", kind=Compression.ZSTD, level=None, metadata={}
    )
    up.stream(io.BufferedReader(io.BytesIO(dump)))  # type: ignore[arg-type]
    objects = up.finish()
    tables = {o.table: o for o in objects if o.kind == ObjectKind.TABLE}
    big_obj = tables["big"]
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bucket.objects[big_obj.key])).read()
    assert big + b"(0,'','','');\n" in data
    assert hashlib.sha256(bucket.objects[big_obj.key]).hexdigest() == big_obj.sha256
    assert big_obj.compression_level == (3 if rows is _text_rows else choose_level(data[:LEVEL_SAMPLE]).level)
    assert tables["small"].compression_level == 3
    assert big_obj.to_dict()["compressionLevel"] == big_obj.compression_level


def test_an_unset_level_is_chosen_for_a_single_object_dump() -> None:
    dump = b"-- MariaDB dump\nINSERT INTO `t` VALUES " + _hex_rows(60_000) + b"(0,'','','');\n"
    sink = io.BytesIO()
    stats = compress_stream(
        io.BufferedReader(io.BytesIO(dump)),  # type: ignore[arg-type]
        kind=Compression.ZSTD,
        level=None,
        sink=sink.write,
    )
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(sink.getvalue())).read() == dump
    assert stats.raw_bytes == len(dump) and stats.level == choose_level(dump[:LEVEL_SAMPLE]).level
    assert stats.level in (1, 2)


def test_only_tables_the_server_estimates_large_are_sampled() -> None:
    """The sample's three trial compressions cost more than a small table's own compression, so a
    table estimated below AUTO_LEVEL_MIN_BYTES starts at level 3; a large or unknown one is sampled;
    a level set in the policy, or another compression, is left alone."""
    z, gz = Compression.ZSTD, Compression.GZIP
    assert start_level(z, None, estimated_bytes=AUTO_LEVEL_MIN_BYTES - 1) == 3
    assert start_level(z, None, estimated_bytes=AUTO_LEVEL_MIN_BYTES) is None
    assert start_level(z, None, estimated_bytes=None) is None
    assert start_level(z, 7, estimated_bytes=0) == 7
    assert start_level(gz, None, estimated_bytes=0) is None

    rows = _hex_rows(60_000)
    tables = [(name, rows) for name in ("estimated_small", "estimated_large", "unknown")]
    dump = b"-- MariaDB dump\n--\n-- Current Database: `db`\n--\n\nUSE `db`;\n" + b"".join(
        b"--\n-- Table structure for table `%s`\n--\n\nCREATE TABLE `%s` (id int);\nINSERT INTO `%s` VALUES "
        % (n.encode(), n.encode(), n.encode())
        + r
        + b"(0,'','','');\n"
        for n, r in tables
    )
    bucket = FakeBucket()
    up = SplitUpload(
        store=S3Store.from_client(bucket, "b"),
        directory="d",
        kind=Compression.ZSTD,
        level=None,
        metadata={},
        table_bytes={("db", "estimated_small"): 16 << 20, ("db", "estimated_large"): 1 << 30},
    )
    up.stream(io.BufferedReader(io.BytesIO(dump)))  # type: ignore[arg-type]
    levels = {o.table: o.compression_level for o in up.finish() if o.kind == ObjectKind.TABLE}
    sampled = choose_level(rows[:LEVEL_SAMPLE]).level
    assert sampled in (1, 2)
    assert levels == {"estimated_small": 3, "estimated_large": sampled, "unknown": sampled}
