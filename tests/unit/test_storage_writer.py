from __future__ import annotations

from typing import Any

import pytest
from mysql_backup_operator.agent.storage import MultipartWriter, part_size_for


class FakeS3:
    """Records calls; fails a chosen part. Only for the writer's own bookkeeping (real S3 is in e2e)."""

    def __init__(self, fail_part: int | None = None) -> None:
        self.parts: dict[int, bytes] = {}
        self.fail_part = fail_part
        self.completed: list[dict[str, Any]] | None = None
        self.aborted = False

    def create_multipart_upload(self, **_: Any) -> dict[str, str]:
        return {"UploadId": "u"}

    def upload_part(self, *, PartNumber: int, Body: bytes, **_: Any) -> dict[str, str]:
        if PartNumber == self.fail_part:
            raise RuntimeError("boom")
        self.parts[PartNumber] = Body
        return {"ETag": f"e{PartNumber}"}

    def complete_multipart_upload(self, *, MultipartUpload: dict[str, Any], **_: Any) -> None:
        self.completed = MultipartUpload["Parts"]

    def abort_multipart_upload(self, **_: Any) -> None:
        self.aborted = True


def test_parts_are_full_size_except_the_last_and_in_order() -> None:
    s3 = FakeS3()
    w = MultipartWriter(s3, "b", "k", part_size=10)
    data = bytes(range(256)) * 3
    for i in range(0, len(data), 7):
        w.write(data[i : i + 7])
    w.complete()
    assert s3.completed == [{"PartNumber": n, "ETag": f"e{n}"} for n in range(1, len(s3.parts) + 1)]
    bodies = [s3.parts[n] for n in sorted(s3.parts)]
    assert b"".join(bodies) == data
    assert all(len(b) >= 10 for b in bodies[:-1])
    assert w.bytes_written == len(data)


def test_empty_stream_still_makes_one_part() -> None:
    s3 = FakeS3()
    w = MultipartWriter(s3, "b", "k", part_size=10)
    w.complete()
    assert s3.completed == [{"PartNumber": 1, "ETag": "e1"}]


def test_a_failed_part_surfaces_and_abort_publishes_nothing() -> None:
    s3 = FakeS3(fail_part=2)
    w = MultipartWriter(s3, "b", "k", part_size=4)
    with pytest.raises(RuntimeError, match="boom"):
        for _ in range(20):
            w.write(b"abcd")
        w.complete()
    w.abort()
    assert s3.aborted and s3.completed is None


def test_part_size_grows_to_stay_within_ten_thousand_parts() -> None:
    assert part_size_for(1) == part_size_for(2000) == 8 * 2**20
    assert part_size_for(2001) == 16 * 2**20
    assert sum(part_size_for(n) for n in range(1, 10001)) > 400 * 2**30


def test_an_uploaded_part_is_freed_before_its_slot_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays at `max_in_flight` parts plus the one being filled: the writer may only
    allocate its next buffer once an uploaded part's buffer is gone."""
    from mysql_backup_operator.contract import parts

    alive: set[int] = set()

    class Tracked(bytearray):
        def __init__(self, *a: Any) -> None:
            super().__init__(*a)
            alive.add(id(self))

        def __del__(self) -> None:
            alive.discard(id(self))

    monkeypatch.setattr(parts, "bytearray", Tracked, raising=False)
    most = 0

    class Copying(FakeS3):  # keeps the bytes, not the buffer
        def upload_part(self, *, PartNumber: int, Body: bytes, **kw: Any) -> dict[str, str]:
            return super().upload_part(PartNumber=PartNumber, Body=bytes(Body), **kw)

    w = MultipartWriter(Copying(), "b", "k", part_size=64, max_in_flight=1)
    real_release = w.slots.release

    def release() -> None:
        nonlocal most
        most = max(most, len(alive))
        real_release()

    monkeypatch.setattr(w.slots, "release", release)
    for _ in range(40):
        w.write(b"x" * 16)
    w.complete()
    assert 0 < most <= 1  # only the buffer being filled is alive when a slot frees
