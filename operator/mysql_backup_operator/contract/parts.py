"""The buffering half of every streaming upload: bytes in, numbered parts out, bounded memory.

S3 (multipart parts), Azure (staged blocks) and GCS (resumable-upload chunks) all publish a large
object from parts uploaded separately and committed at the end, so the part sizing, the buffer
reuse and the in-flight limit live here once and each backend supplies three calls: upload a
part, commit the parts, cancel.

Memory stays flat whatever the dump size: one part-sized buffer being filled plus at most
`max_in_flight` parts uploading.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .store import DEFAULT_PART_SIZE

# S3 allows 10,000 parts. Parts double in size every 2,000, so the limit is ~500 GiB of
# compressed dump while small dumps keep small (memory-cheap) parts. Every size is a multiple of
# 256 KiB, as GCS resumable chunks must be.
PARTS_PER_SIZE_STEP = 2000
FIRST_BUFFER = 64 * 1024


def part_size_for(number: int, base: int = DEFAULT_PART_SIZE) -> int:
    """Size of part `number` (1-based)."""
    return int(base * 2 ** ((number - 1) // PARTS_PER_SIZE_STEP))


class PartWriter:
    """write() bytes in any sizes; complete() publishes the object, abort() guarantees nothing is.

    The buffer is allocated once per part at its final size and handed to the upload as it is (no
    list of chunks joined into a second copy), so a part costs its size once. Subclasses implement
    `_upload_part`, `_commit` and `_cancel`; a pool of one thread uploads parts strictly in order
    (what GCS needs), more threads upload them concurrently (S3, Azure).
    """

    def __init__(self, *, part_size: int = DEFAULT_PART_SIZE, max_in_flight: int = 2, name: str = "part") -> None:
        self.part_size = part_size
        self.buf = bytearray(min(FIRST_BUFFER, part_size))
        self.filled = 0
        self.parts: list[Future[Any]] = []
        self.slots = threading.BoundedSemaphore(max_in_flight)
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix=name)
        self.bytes_written = 0
        self.submitted = 0  # bytes handed to parts so far: the next part's offset
        self.closed = False
        self.slot_wait = 0.0  # seconds the writer blocked because max_in_flight parts were uploading

    # ---------------------------------------------------------------- backend hooks

    def _upload_part(self, number: int, chunk: bytearray, *, offset: int, last: bool) -> Any:
        """Uploads part `number` (1-based) starting at byte `offset`; returns what `_commit` needs."""
        raise NotImplementedError

    def _commit(self, tokens: list[Any]) -> None:
        raise NotImplementedError

    def _cancel(self) -> None:
        """Best effort: frees what the backend holds for an unfinished upload (never raises)."""

    # ---------------------------------------------------------------- buffering

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
        self._submit(body, last=last)
        # After the first part an object is big: the next buffer is allocated at full size at once.
        self.buf = bytearray() if last else bytearray(self._target())
        self.filled = 0

    def _submit(self, chunk: bytearray, *, last: bool) -> None:
        for f in self.parts:  # surface an earlier part's failure as soon as possible
            if f.done() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        t = time.monotonic()
        self.slots.acquire()
        self.slot_wait += time.monotonic() - t
        number = len(self.parts) + 1
        offset = self.submitted
        self.submitted += len(chunk)
        self.parts.append(self.pool.submit(self._run, number, [chunk], offset, last))

    def _run(self, number: int, box: list[bytearray], offset: int, last: bool) -> Any:
        try:
            return self._upload_part(number, box[0], offset=offset, last=last)
        finally:
            # The part's buffer goes before its slot does. The pool's work item keeps its
            # arguments until the call returns, so a slot released first let the writer fill a
            # new buffer while the uploaded one was still alive: one part more at the peak.
            box.clear()
            self.slots.release()

    def complete(self) -> None:
        if self.filled or not self.parts:
            self._flush_pending(last=True)
        self.buf = bytearray()
        tokens = [f.result() for f in self.parts]
        self._commit(tokens)
        self.closed = True
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)
        # Best effort: an unfinished upload is never a visible object, even if this call fails.
        self._cancel()
