"""S3 access for the agent: a streaming multipart writer and a streaming reader.

Memory stays flat whatever the dump size: at most `max_in_flight` parts of `part_size` bytes are
held while they upload, and any failure aborts the multipart upload so that no partial object
ever becomes visible under the dump's key.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..contract.s3 import SseParams, client, sse_params

__all__ = ["MultipartWriter", "SseParams", "client", "iter_object", "part_size_for", "sse_params"]

DEFAULT_PART_SIZE = 8 * 1024 * 1024
# S3 allows 10,000 parts. Parts double in size every 2,000, so the limit is ~500 GiB of
# compressed dump while small dumps keep small (memory-cheap) parts.
PARTS_PER_SIZE_STEP = 2000
READ_CHUNK = 1024 * 1024
FIRST_BUFFER = 64 * 1024


def part_size_for(number: int, base: int = DEFAULT_PART_SIZE) -> int:
    """Size of part `number` (1-based)."""
    return int(base * 2 ** ((number - 1) // PARTS_PER_SIZE_STEP))


class MultipartWriter:
    """write() bytes in any sizes; complete() publishes the object, abort() guarantees nothing is.

    Memory: one part-sized buffer being filled plus at most `max_in_flight` parts uploading. The
    buffer is allocated once per part at its final size and handed to the upload as it is (no
    list of chunks joined into a second copy), so a part costs its size once.
    """

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
        self.part_size = part_size
        self.buf = bytearray(min(FIRST_BUFFER, part_size))
        self.filled = 0
        self.parts: list[Future[dict[str, Any]]] = []
        self.slots = threading.BoundedSemaphore(max_in_flight)
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="s3-part")
        self.upload_id: str = s3.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata=metadata or {}, **self.sse.create
        )["UploadId"]
        self.bytes_written = 0
        self.closed = False
        self.slot_wait = 0.0  # seconds the writer blocked because max_in_flight parts were uploading

    def _target(self) -> int:
        return part_size_for(len(self.parts) + 1, self.part_size)

    def _room(self, wanted: int) -> None:
        """Grows the buffer by doubling up to the part size, so small objects (a per-table
        backup's prologue, or a tiny table) never cost a full part of memory."""
        if self.filled + wanted <= len(self.buf):
            return
        bigger = bytearray(min(self._target(), max(2 * len(self.buf), self.filled + wanted)))
        bigger[: self.filled] = memoryview(self.buf)[: self.filled]
        self.buf = bigger

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        self.bytes_written += len(view)
        while view:
            n = min(len(view), self._target() - self.filled)
            self._room(n)
            self.buf[self.filled : self.filled + n] = view[:n]
            self.filled += n
            view = view[n:]
            if self.filled == self._target():
                self._flush_pending()

    def _flush_pending(self, *, last: bool = False) -> None:
        body = self.buf
        del body[self.filled :]  # only the last part is short; truncating in place copies nothing
        self._submit(body)
        # After the first part an object is big: the next buffer is allocated at full size at once.
        self.buf = bytearray() if last else bytearray(self._target())
        self.filled = 0

    def _submit(self, chunk: bytearray) -> None:
        for f in self.parts:  # surface an earlier part's failure as soon as possible
            if f.done() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        t = time.monotonic()
        self.slots.acquire()
        self.slot_wait += time.monotonic() - t
        number = len(self.parts) + 1
        self.parts.append(self.pool.submit(self._upload, number, chunk))

    def _upload(self, number: int, chunk: bytearray) -> dict[str, Any]:
        try:
            r = self.s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=chunk,
                **self.sse.part,
            )
            return {"PartNumber": number, "ETag": r["ETag"]}
        finally:
            self.slots.release()

    def complete(self) -> None:
        if self.filled or not self.parts:
            self._flush_pending(last=True)
        self.buf = bytearray()
        done = [f.result() for f in self.parts]
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": done}
        )
        self.closed = True
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)
        # Best effort: an unfinished upload is never a visible object, even if this call fails.
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
