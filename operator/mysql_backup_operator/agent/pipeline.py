"""The backup's hot path: dump bytes in, compressed + hashed bytes out to a sink, all overlapped.

Why this shape (measured, see docs/performance.md "Data path"): the first agent ran one Python
loop that read 1 MiB of dump, compressed it, hashed it and handed it to the uploader, one step
after the other, so the stages never overlapped, and the in-process multi-threaded zstd kept its
own large buffers. Here the `zstd` CLI compresses in its own process (its worker threads and
buffers are bounded by its job size, not by Python), a feeder thread copies the dump into it,
and the calling thread hashes and hands off the compressed output. Each stage runs while the
others do; every pipe is bounded, so memory does not grow with the dump.

The stages, in order: read (`chunks`: 256 KiB reads into one reused buffer) -> split (perTable
only, `agent.split`, views, no copies) -> compress (zstd process, or in-process) -> stored-side
stages (`crypto.stage`: age encryption when the policy has a key, else nothing; then
`CompressedObject._stored`: hash + count, then upload) -> the store's `Upload`
(contract/store.py: S3 multipart parts, Azure staged blocks or GCS resumable chunks, uploading
on their own threads; a finished table's completion runs in the background while the next
table streams).

Without a `zstd` binary (or for gzip/none) the in-process compressor is used, as before.

With no `compressionLevel` in the policy, each zstd object's level is chosen from its first
2 MiB (`choose_level`): see docs/design-compression-level.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, cast

import zstandard

from ..api import Compression, Reason
from ..contract.keys import part_key
from ..contract.manifest import ManifestObject, ObjectKind
from . import crypto, interrupt
from .errors import AgentError
from .split import Dest, DumpSplitter, Piece, Unit
from .sqlstream import Buffer, compressor
from .storage import ObjectStore

LOG = logging.getLogger("mysql-backup-agent")

READ_CHUNK = 1024 * 1024
HEADER_SCAN = 256 * 1024
TAIL = 512
ZSTD_JOB_MIB = 2
DEFAULT_ZSTD_LEVEL = 3
# The sample the level is chosen on: one zstd job's worth (ZSTD_JOB_MIB), which is what each of
# the CLI's workers compresses on its own, so the sample sees what a job sees.
LEVEL_SAMPLE = ZSTD_JOB_MIB * 1024 * 1024
CHEAPER_LEVELS = (1, 2)
# With no level set, an object the server estimates below this is compressed at level 3 without
# a sample: the three trial compressions cost ~50 ms of CPU, as much as a 2-20 MiB table's own
# compression at level 3 (50-170 MB/s per core on the benchmark's data) and 4-13 % of it at this
# size, while what a cheaper level saves on an object that small is small in absolute terms.
AUTO_LEVEL_MIN_BYTES = 64 * 1024 * 1024


@dataclass
class StreamStats:
    """What the backup learns from the stream while it flows (nothing is kept beyond these)."""

    raw_bytes: int = 0
    stored_bytes: int = 0
    header: bytes = b""
    tail: bytes = b""
    sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    level: int | None = None  # the compression level used, when it is known (zstd, gzip)

    def saw_raw(self, chunk: Bytes) -> None:
        self.raw_bytes += len(chunk)
        if len(self.header) < HEADER_SCAN:
            self.header += chunk[: HEADER_SCAN - len(self.header)]
        self.tail = (self.tail + chunk[-TAIL:])[-TAIL:]

    def saw_stored(self, chunk: Bytes) -> None:
        self.sha.update(chunk)
        self.stored_bytes += len(chunk)

    def stored_sink(self, sink: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """`sink` preceded by hashing and counting: the stored bytes are what gets verified."""

        def emit(chunk: bytes) -> None:
            self.saw_stored(chunk)
            sink(chunk)

        return emit

    @property
    def sha256(self) -> str:
        return self.sha.hexdigest()


PIPE_BYTES = 1024 * 1024
DUMP_READ = PIPE_BYTES // 4
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), spelled out for Pythons without the constant


def widen_pipe(f: IO[bytes] | None) -> None:
    """1 MiB pipe buffers instead of 64 KiB let each stage (dump, zstd, the agent's threads) run
    ahead while another is briefly descheduled on a busy machine. Best effort."""
    if f is not None:
        with contextlib.suppress(OSError, ValueError):
            fcntl.fcntl(f.fileno(), F_SETPIPE_SZ, PIPE_BYTES)


# What flows between stages; a view is used before the next read reuses its buffer.
Bytes = Buffer


class Readable(Protocol):
    def readinto(self, buffer: bytearray, /) -> int | None: ...


def chunks(source: Readable, size: int = DUMP_READ) -> Iterator[memoryview]:
    """The source's bytes as views of one reused buffer: no new object (and its page faults) per
    read. A view is valid until the next one is asked for: the consumer writes it on (to a pipe,
    a compressor, a part buffer) before it iterates again.

    The size matters (py-spy and read counts on the bench dump): a buffered read of 1 MiB from a
    1 MiB pipe waits for a full pipe, so mariadb-dump blocked at every read; reading the raw pipe
    returns its ~5 KiB writes one by one (70,000 reads per 364 MB, each through the splitter and
    a write to zstd). A quarter of the pipe lets the dump run ahead while we work and keeps the
    per-read Python cost small."""
    buf = bytearray(size)
    view = memoryview(buf)
    while n := source.readinto(buf):
        yield view[:n]


def zstd_command(level: int | None) -> list[str] | None:
    """The zstd CLI invocation, or None when the binary is missing (then zstandard is used)."""
    binary = shutil.which("zstd")
    if not binary:
        return None
    # -B2M: 2 MiB jobs per worker instead of the default (8 MiB at level 3) cut zstd's resident
    # memory from ~58 to ~20 MiB with two workers, and the output was no larger (measured).
    return [binary, f"-{level or DEFAULT_ZSTD_LEVEL}", "-T0", f"-B{ZSTD_JOB_MIB}M", "-q", "-c", "--no-progress"]


@dataclass(frozen=True)
class LevelChoice:
    """The level an object is compressed at, and the sample sizes it was chosen on (for the log)."""

    level: int
    sample_bytes: int
    sizes: dict[int, int]

    def describe(self) -> str:
        if not self.sizes:
            return f"zstd level {self.level} ({self.sample_bytes} bytes: too small to sample)"
        sizes = ", ".join(f"level {lvl} {n}" for lvl, n in sorted(self.sizes.items()))
        return f"zstd level {self.level} (first {self.sample_bytes} bytes: {sizes})"


def start_level(kind: Compression, level: int | None, *, estimated_bytes: int | None) -> int | None:
    """The level to open an object's compressor at: the policy's; else, for zstd, level 3 for an
    object the server estimates below AUTO_LEVEL_MIN_BYTES, and None (sample and choose) for a
    larger one or one without an estimate (a table created after the metadata step). Other
    compressions keep None, their own default."""
    if kind != Compression.ZSTD or level is not None:
        return level
    if estimated_bytes is None or estimated_bytes >= AUTO_LEVEL_MIN_BYTES:
        return None
    return DEFAULT_ZSTD_LEVEL


def recorded_level(kind: Compression, level: int | None) -> int | None:
    """The level recorded for an object whose level is known when it opens: zstd's default for
    zstd, whatever was asked for (None: the compressor's own default) otherwise."""
    return level or (DEFAULT_ZSTD_LEVEL if kind == Compression.ZSTD else None)


def choose_level(sample: Buffer) -> LevelChoice:
    """The cheapest zstd level whose output for `sample` is no larger than level 3's.

    Why: compression is the largest CPU cost of a backup (zstd -3 took 8.6 of the ~28 CPU-seconds
    of the benchmark's backup), and on high-entropy columns (hashes, UUIDs, random tokens) levels
    1 and 2 produce smaller output than 3 at a third to half of its CPU; on text-heavy data level
    3 is 3-10 % smaller. Deciding per object from a sample keeps the stored bytes at level 3's or
    below either way (measured on dumps of both kinds: docs/design-compression-level.md).
    A sample shorter than LEVEL_SAMPLE is not worth deciding on: level 3.
    """
    if len(sample) < LEVEL_SAMPLE:
        return LevelChoice(level=DEFAULT_ZSTD_LEVEL, sample_bytes=len(sample), sizes={})
    sizes = {
        lvl: len(zstandard.ZstdCompressor(level=lvl).compress(sample)) for lvl in (*CHEAPER_LEVELS, DEFAULT_ZSTD_LEVEL)
    }
    level = next((lvl for lvl in CHEAPER_LEVELS if sizes[lvl] <= sizes[DEFAULT_ZSTD_LEVEL]), DEFAULT_ZSTD_LEVEL)
    return LevelChoice(level=level, sample_bytes=len(sample), sizes=sizes)


def compress_stream(
    source: Readable,
    *,
    kind: Compression,
    level: int | None,
    sink: Callable[[bytes], None],
    recipient: Any | None = None,
) -> StreamStats:
    """Reads `source` to EOF, compresses, (encrypts to `recipient`,) hashes and passes every stored
    byte to `sink`.

    Raises AgentError if the compressor fails; whatever `sink` raises propagates unchanged (the
    caller maps storage errors). The caller owns `source`'s process and kills it on failure.
    """
    argv = zstd_command(level) if kind == Compression.ZSTD else None
    head = bytearray()
    if argv is not None and level is None:
        head = read_up_to(source, LEVEL_SAMPLE)
        choice = choose_level(head)
        LOG.info("dump: %s", choice.describe())
        level = choice.level
        argv = zstd_command(level)
        assert argv is not None
    stats = StreamStats(level=recorded_level(kind, level))
    out = crypto.stage(recipient, stats.stored_sink(sink))
    try:
        if argv is None:
            _in_process(source, kind=kind, level=level, stats=stats, out=out)
        else:
            _with_cli(source, argv=argv, head=head, stats=stats, out=out)
        out.close()
    except BaseException:
        out.abort()
        raise
    return stats


def _in_process(
    source: Readable, *, kind: Compression, level: int | None, stats: StreamStats, out: crypto.Stage
) -> None:
    comp = compressor(kind, level)
    for chunk in chunks(source):
        stats.saw_raw(chunk)
        data = comp.compress(chunk)
        if data:
            out.write(data)
    data = comp.flush()
    if data:
        out.write(data)


def read_up_to(source: Readable, size: int) -> bytearray:
    """The first `size` bytes of `source` (fewer at its end), for choose_level."""
    head = bytearray()
    for chunk in chunks(source):
        head += chunk
        if len(head) >= size:
            break
    return head


def _with_cli(source: Readable, *, argv: list[str], head: Bytes = b"", stats: StreamStats, out: crypto.Stage) -> None:
    """`head`: bytes already read from `source` (the level's sample), compressed first."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    widen_pipe(proc.stdin)
    widen_pipe(proc.stdout)
    feeder_error: list[BaseException] = []
    stdin = proc.stdin

    def feed() -> None:
        try:
            if head:
                stats.saw_raw(head)
                stdin.write(head)
            for chunk in chunks(source):
                stats.saw_raw(chunk)
                stdin.write(chunk)
        except BaseException as e:  # reported by the calling thread
            feeder_error.append(e)
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    feeder = threading.Thread(target=feed, name="dump-feeder", daemon=True)
    feeder.start()
    ok = False
    try:
        compressed = cast(io.BufferedReader, proc.stdout)  # read1: whatever is ready, up to 1 MiB
        while data := compressed.read1(READ_CHUNK):
            out.write(data)
        feeder.join()
        code = proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip()[-500:]
        if feeder_error:
            e = feeder_error[0]
            if isinstance(e, BrokenPipeError):
                raise AgentError(Reason.DUMP_FAILED, f"zstd stopped reading (exit {code}): {err}", permanent=False)
            raise e
        if code != 0:
            raise AgentError(Reason.DUMP_FAILED, f"zstd exited with code {code}: {err}", permanent=False)
        ok = True
    finally:
        if not ok and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        for f in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                f.close()


class CompressedObject:
    """One stored object being written: raw bytes in, compressed + hashed + multipart-uploaded.

    With the zstd CLI, `write` feeds its stdin from the calling thread while a reader thread
    hashes its output and hands it to the uploader, so reading, splitting, compressing, hashing
    and uploading overlap. `finish` publishes the object; `abort` guarantees it never appears
    (or, when already finished, deletes it).
    """

    def __init__(
        self,
        *,
        store: ObjectStore,
        key: str,
        kind: Compression,
        level: int | None,
        metadata: dict[str, str] | None = None,
        small: bool = False,
        recipient: Any | None = None,
    ) -> None:
        """`small`: schema-only objects, compressed in-process and single-threaded (no zstd process).
        `level` None with the zstd CLI: the zstd process starts once the first LEVEL_SAMPLE bytes
        have come in (or at the end of a smaller object), at the level chosen on them.
        `recipient`: encrypt (age) after compression."""
        self.store, self.key = store, key
        self.proc: subprocess.Popen[bytes] | None = None
        self.writer = store.writer(key, metadata=metadata)
        try:
            self.stats = StreamStats()
            self.out = crypto.stage(recipient, self._stored)
            self.finished = False
            argv = zstd_command(level) if kind == Compression.ZSTD and not small else None
            self.comp = None if argv else compressor(kind, level, threads=0 if small else -1)
            self.error: list[BaseException] = []
            self.stats.level = recorded_level(kind, level)
            # Bytes held back until the level is chosen (auto level only); None once it is.
            self.sample: bytearray | None = bytearray() if argv and level is None else None
            if argv and self.sample is None:
                self._start(argv)
        except BaseException:
            # Nobody holds this object yet, so nobody else would abort its upload.
            self.writer.abort()
            if self.proc is not None:
                self.proc.kill()
            raise

    def _start(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        widen_pipe(self.proc.stdin)
        widen_pipe(self.proc.stdout)
        self.reader = threading.Thread(target=self._drain, name=f"drain-{self.key[-24:]}", daemon=True)
        self.reader.start()

    def _start_sampled(self) -> None:
        """Chooses the level on the held-back bytes, starts zstd at it and feeds it those bytes."""
        assert self.sample is not None
        sample, self.sample = self.sample, None
        choice = choose_level(memoryview(sample)[:LEVEL_SAMPLE])
        if choice.sizes:  # objects too small to sample are not worth a line each
            LOG.info("%s: %s", self.key.rsplit("/", 1)[-1], choice.describe())
        self.stats.level = choice.level
        argv = zstd_command(choice.level)
        assert argv is not None  # the sample is only held when the CLI was found
        self._start(argv)
        self._feed(sample)

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out_pipe = cast(io.BufferedReader, self.proc.stdout)
        try:
            while out := out_pipe.read1(READ_CHUNK):
                self.out.write(out)
        except BaseException as e:
            self.error.append(e)
            with contextlib.suppress(Exception):
                self.proc.kill()

    def _stored(self, out: bytes) -> None:
        """The stored side: hash and count what is stored, then upload it. Encryption (`self.out`)
        runs before this, so the sha256 in the manifest is that of the bytes in the bucket."""
        self.stats.saw_stored(out)
        self.writer.write(out)

    def _raise_drain_error(self) -> None:
        if self.error:
            raise self.error[0]

    def write(self, data: Bytes) -> None:
        self.stats.saw_raw(data)
        if self.sample is not None:
            self.sample += data  # a copy: `data` may view a buffer that the next read reuses
            if len(self.sample) >= LEVEL_SAMPLE:
                self._start_sampled()
            return
        if self.proc is None:
            assert self.comp is not None
            out = self.comp.compress(data)
            if out:
                self.out.write(out)
            return
        self._feed(data)

    def _feed(self, data: Bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:
            self._raise_drain_error()
            raise AgentError(Reason.DUMP_FAILED, "zstd stopped reading its input", permanent=False) from None

    def end_stream(self) -> StreamStats:
        """Compresses and hands off the last bytes; after this only the upload may be running."""
        if self.sample is not None:
            self._start_sampled()  # an object smaller than the sample: level 3
        if self.proc is None:
            assert self.comp is not None
            out = self.comp.flush()
            if out:
                self.out.write(out)
        else:
            assert self.proc.stdin is not None and self.proc.stderr is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            self.reader.join()
            code = self.proc.wait()
            self._raise_drain_error()
            if code != 0:
                err = self.proc.stderr.read().decode(errors="replace").strip()[-500:]
                raise AgentError(Reason.DUMP_FAILED, f"zstd exited with code {code}: {err}", permanent=False)
        self.out.close()  # the encryption stage's final chunk
        return self.stats

    def publish(self) -> None:
        """Waits for the last parts and completes the multipart upload: the object exists."""
        self.writer.complete()
        self.finished = True

    def finish(self) -> StreamStats:
        self.end_stream()
        self.publish()
        return self.stats

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
        self.out.abort()
        self.writer.abort()
        # Always, not only when finish() returned: SIGTERM can land after S3 completed the upload
        # but before we recorded it (seen in the killed-agent test). Deleting a missing key is a no-op.
        with contextlib.suppress(Exception):
            self.store.delete(self.key)


class SplitUpload:
    """Per-table layout: routes the dump's pieces (agent.split) into one CompressedObject each.

    At most three objects are open at a time: the prologue and the epilogue (schema only, small,
    compressed in-process) and the current table (through a zstd process). A table's object is
    published as soon as its last piece has passed; that is safe because nothing is a backup
    until the manifest is written, and on failure `abort` deletes every object it published.
    """

    def __init__(
        self,
        *,
        store: ObjectStore,
        directory: str,
        kind: Compression,
        level: int | None,
        metadata: dict[str, str],
        recipient: Any | None = None,
        table_bytes: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """`table_bytes`: the server's size estimate per (database, table), which decides whether
        a table with no level set is sampled (start_level); None samples every table."""
        self.store, self.directory = store, directory
        self.table_bytes = table_bytes
        self.kind, self.level, self.metadata = kind, level, metadata
        self.recipient = recipient
        self.suffix = crypto.SUFFIX if recipient is not None else ""
        self.splitter = DumpSplitter()
        self.raw = StreamStats()
        self.prologue = self._open(part_key(directory, kind, kind="prologue"), level=level, small=True)
        try:
            self.epilogue = self._open(part_key(directory, kind, kind="epilogue"), level=level, small=True)
        except BaseException:
            self.prologue.abort()
            raise
        self.table: CompressedObject | None = None
        self.table_dest: Dest | None = None
        self.tables: list[tuple[CompressedObject, Dest]] = []
        # A finished table's last parts and its CompleteMultipartUpload run here while the dump
        # flows on into the next table (before, the dump stalled at every table boundary for
        # those round trips). One at a time: memory stays that of one table's upload.
        self.publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self.publishing: Future[None] | None = None

    def _open(self, key: str, *, level: int | None, small: bool = False) -> CompressedObject:
        return CompressedObject(
            store=self.store,
            key=key + self.suffix,
            kind=self.kind,
            level=level,
            metadata=self.metadata,
            small=small,
            recipient=self.recipient,
        )

    def _route(self, piece: Piece) -> None:
        unit = piece.dest.unit
        if unit == Unit.TABLE:
            if piece.dest != self.table_dest:
                self._close_table()
                index = len(self.tables) + 1
                d = piece.dest
                key = part_key(
                    self.directory, self.kind, kind="table", index=index, database=d.database or "", table=d.table or ""
                )
                estimate = None if self.table_bytes is None else self.table_bytes.get((d.database or "", d.table or ""))
                level = start_level(self.kind, self.level, estimated_bytes=estimate)
                # Shielded: a SIGTERM between the upload's creation and this assignment would
                # leave an upload that abort() cannot see (agent/interrupt.py).
                with interrupt.shielded():
                    self.table, self.table_dest = self._open(key, level=level), d
            assert self.table is not None
            self.table.write(piece.data)
        elif unit == Unit.PROLOGUE:
            self.prologue.write(piece.data)
        else:
            self.epilogue.write(piece.data)

    def _close_table(self) -> None:
        if self.table is not None and self.table_dest is not None:
            self.table.end_stream()
            self._published()
            self.publishing = self.publisher.submit(self.table.publish)
            self.tables.append((self.table, self.table_dest))
        self.table, self.table_dest = None, None

    def _published(self) -> None:
        """Waits for the table being published (raising its error)."""
        if self.publishing is not None:
            self.publishing.result()
            self.publishing = None

    def stream(self, source: Readable) -> StreamStats:
        for chunk in chunks(source):
            self.raw.saw_raw(chunk)
            # chunk views the start of chunks()' buffer: the splitter searches that bytearray.
            for piece in self.splitter.feed(cast(bytearray, chunk.obj), len(chunk)):
                self._route(piece)
        for piece in self.splitter.flush():
            self._route(piece)
        self._close_table()
        self._published()
        return self.raw

    def finish(self) -> list[ManifestObject]:
        """Publishes the prologue and epilogue; returns every object in restore order."""
        self.prologue.finish()
        self.epilogue.finish()

        def entry(o: CompressedObject, kind: ObjectKind, d: Dest | None = None) -> ManifestObject:
            return ManifestObject(
                key=o.key,
                kind=kind,
                sha256=o.stats.sha256,
                stored_bytes=o.stats.stored_bytes,
                size_bytes=o.stats.raw_bytes,
                database=d.database if d else None,
                table=d.table if d else None,
                compression_level=o.stats.level,
            )

        return [
            entry(self.prologue, ObjectKind.PROLOGUE),
            *(entry(o, ObjectKind.TABLE, d) for o, d in self.tables),
            entry(self.epilogue, ObjectKind.EPILOGUE),
        ]

    @property
    def slot_wait(self) -> float:
        return sum(o.writer.slot_wait for o, _ in self.tables) + self.prologue.writer.slot_wait

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._published()
        self.publisher.shutdown(wait=True)
        for o in [self.prologue, self.epilogue, *([self.table] if self.table else []), *(o for o, _ in self.tables)]:
            with contextlib.suppress(Exception):
                o.abort()
