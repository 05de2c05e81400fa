"""The backup's hot path: dump bytes in, compressed + hashed bytes out to a sink, all overlapped.

Why this shape (measured, see docs/performance.md "Data path"): the first agent ran one Python
loop that read 1 MiB of dump, compressed it, hashed it and handed it to the uploader, one step
after the other, so the stages never overlapped, and the in-process multi-threaded zstd kept its
own large buffers. Here the `zstd` CLI compresses in its own process (its worker threads and
buffers are bounded by its job size, not by Python), a feeder thread copies the dump into it,
and the calling thread hashes and hands off the compressed output. Each stage runs while the
others do; every pipe is bounded, so memory does not grow with the dump.

Without a `zstd` binary (or for gzip/none) the in-process compressor is used, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, cast

from ..api import Compression, Reason
from .errors import AgentError
from .sqlstream import compressor

READ_CHUNK = 1024 * 1024
HEADER_SCAN = 256 * 1024
TAIL = 512
ZSTD_JOB_MIB = 2


@dataclass
class StreamStats:
    """What the backup learns from the stream while it flows (nothing is kept beyond these)."""

    raw_bytes: int = 0
    stored_bytes: int = 0
    header: bytes = b""
    tail: bytes = b""
    sha: hashlib._Hash = field(default_factory=hashlib.sha256)

    def saw_raw(self, chunk: bytes) -> None:
        self.raw_bytes += len(chunk)
        if len(self.header) < HEADER_SCAN:
            self.header += chunk[: HEADER_SCAN - len(self.header)]
        self.tail = (self.tail + chunk[-TAIL:])[-TAIL:]

    def saw_stored(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.stored_bytes += len(chunk)

    @property
    def sha256(self) -> str:
        return self.sha.hexdigest()


def zstd_command(level: int | None) -> list[str] | None:
    """The zstd CLI invocation, or None when the binary is missing (then zstandard is used)."""
    binary = shutil.which("zstd")
    if not binary:
        return None
    # -B2M: 2 MiB jobs per worker instead of the default (8 MiB at level 3) cut zstd's resident
    # memory from ~58 to ~20 MiB with two workers, and the output was no larger (measured).
    return [binary, f"-{level or 3}", "-T0", f"-B{ZSTD_JOB_MIB}M", "-q", "-c", "--no-progress"]


def compress_stream(
    source: IO[bytes], *, kind: Compression, level: int | None, sink: Callable[[bytes], None]
) -> StreamStats:
    """Reads `source` to EOF, compresses, hashes and passes every compressed byte to `sink`.

    Raises AgentError if the compressor fails; whatever `sink` raises propagates unchanged (the
    caller maps storage errors). The caller owns `source`'s process and kills it on failure.
    """
    argv = zstd_command(level) if kind == Compression.ZSTD else None
    if argv is None:
        return _in_process(source, kind=kind, level=level, sink=sink)
    return _with_cli(source, argv=argv, sink=sink)


def _in_process(
    source: IO[bytes], *, kind: Compression, level: int | None, sink: Callable[[bytes], None]
) -> StreamStats:
    stats = StreamStats()
    comp = compressor(kind, level)
    while chunk := source.read(READ_CHUNK):
        stats.saw_raw(chunk)
        out = comp.compress(chunk)
        if out:
            stats.saw_stored(out)
            sink(out)
    out = comp.flush()
    if out:
        stats.saw_stored(out)
        sink(out)
    return stats


def _with_cli(source: IO[bytes], *, argv: list[str], sink: Callable[[bytes], None]) -> StreamStats:
    stats = StreamStats()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feeder_error: list[BaseException] = []
    stdin = proc.stdin

    def feed() -> None:
        try:
            while chunk := source.read(READ_CHUNK):
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
        while out := compressed.read1(READ_CHUNK):
            stats.saw_stored(out)
            sink(out)
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
        return stats
    finally:
        if not ok and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        for f in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                f.close()
