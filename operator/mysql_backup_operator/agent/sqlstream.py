"""Pure helpers around the mysqldump stream: command lines, compression and the restore filter."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Protocol, cast

import zstandard

from ..api import Compression
from .config import DbConfig

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def client_binary(*names: str) -> str:
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    return names[-1]


def write_defaults_file(db: DbConfig, directory: str | None = None) -> str:
    """Credentials go to a 0600 option file: mysqldump and mysql read them; argv never sees them."""

    def q(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    fd, path = tempfile.mkstemp(prefix="mbo-", suffix=".cnf", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write("[client]\n")
        f.write(f"user={q(db.user)}\npassword={q(db.password)}\nhost={q(db.host)}\nport={db.port}\n")
    os.chmod(path, 0o600)
    return path


def tls_args(db: DbConfig) -> list[str]:
    if not db.tls_enabled:
        return []
    args = ["--ssl"]
    if db.tls_ca_file:
        args += [f"--ssl-ca={db.tls_ca_file}", "--ssl-verify-server-cert"]
    return args


# What every dump gets: one consistent snapshot, streamed row by row, with everything a restore
# needs. hack/bench.py imports this list so its hand-made references dump the same bytes.
DUMP_FLAGS: tuple[str, ...] = (
    "--single-transaction",
    "--quick",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--add-drop-database",
    "--default-character-set=utf8mb4",
    "--max-allowed-packet=1G",
)
# perTable: tables load concurrently, and a stream holding LOCK TABLES on a child table fails
# ("Table 'parent' was not locked", error 1100) when a parallel stream re-creates its FK parent;
# the locks only speed up MyISAM loads, so they are left out.
PER_TABLE_DUMP_FLAGS: tuple[str, ...] = ("--skip-add-locks",)


def dump_command(
    *,
    binary: str,
    defaults_file: str,
    db: DbConfig,
    databases: Sequence[str],
    is_mariadb: bool,
    capture_binlog: bool,
    extra_args: Sequence[str] = (),
) -> list[str]:
    argv = [binary, f"--defaults-extra-file={defaults_file}", *DUMP_FLAGS, *tls_args(db)]
    if capture_binlog:
        argv.append("--master-data=2")
        if is_mariadb:
            argv.append("--gtid")
    if not is_mariadb:
        argv += ["--set-gtid-purged=OFF", "--column-statistics=0"] if "mysqldump" in os.path.basename(binary) else []
    argv += list(extra_args)
    argv += ["--databases", *databases]
    return argv


# mariadb-dump writes its output through stdio, whose buffer for a pipe is 4 KiB: ~350,000
# write() calls per 1.5 GB of dump, each one waking the agent's reader (160,000 context switches
# of the agent per backup, measured). coreutils' stdbuf gives it a 1 MiB buffer instead: ~1,400
# writes, 6,000 context switches, ~2.5 s less CPU and ~1 s less wall time per 1.5 GB on two cores
# (docs/performance.md, "Data path"). The buffer costs the dump 1 MiB of memory.
DUMP_STDOUT_BUFFER = "1M"


def with_output_buffer(argv: Sequence[str], *, stdbuf: str | None) -> list[str]:
    """`argv` run under `stdbuf -o1M` when stdbuf is there (it execs the tool: same pid, same
    exit code, so killing and waiting work as before), else unchanged."""
    return [stdbuf, f"-o{DUMP_STDOUT_BUFFER}", *argv] if stdbuf else list(argv)


# A restore's client never reconnects: a new session would lose the stream's SET statements
# (foreign_key_checks, time_zone, sql_mode, the character set) and go on loading under other
# rules. Batch mode already implies it; saying so keeps it true for every client version. An
# unanswered connect fails after CLIENT_CONNECT_TIMEOUT seconds, not the kernel's two minutes,
# and is then retried (cli._with_connect_retries): a client that never connected ran nothing.
CLIENT_CONNECT_TIMEOUT = 20


def mysql_command(*, binary: str, defaults_file: str, db: DbConfig) -> list[str]:
    return [
        binary,
        f"--defaults-extra-file={defaults_file}",
        f"--connect-timeout={CLIENT_CONNECT_TIMEOUT}",
        "--skip-reconnect",
        "--binary-mode",
        "--default-character-set=utf8mb4",
        "--max-allowed-packet=1G",
        "--batch",
        *tls_args(db),
    ]


_BINLOG = re.compile(rb"(?:MASTER_LOG_FILE|SOURCE_LOG_FILE)='([^']+)',\s*(?:MASTER_LOG_POS|SOURCE_LOG_POS)=(\d+)")
_GTID = re.compile(rb"gtid_slave_pos='([^']*)'|GTID_PURGED='([^']*)'")


@dataclass(frozen=True)
class BinlogPosition:
    file: str | None
    position: int | None
    gtid: str | None


def parse_binlog(header: bytes) -> BinlogPosition | None:
    m = _BINLOG.search(header)
    g = _GTID.search(header)
    if not m and not g:
        return None
    gtid = None
    if g:
        gtid = (g.group(1) or g.group(2) or b"").decode()
    return BinlogPosition(
        file=m.group(1).decode() if m else None, position=int(m.group(2)) if m else None, gtid=gtid or None
    )


Buffer = bytes | bytearray | memoryview  # compressors take any of these (zstandard, zlib do)


class Compressor(Protocol):
    def compress(self, data: Buffer) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: Buffer) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self, level: int, threads: int) -> None:
        self._c = zstandard.ZstdCompressor(level=level, threads=threads).compressobj()

    def compress(self, data: Buffer) -> bytes:
        return bytes(self._c.compress(data))

    def flush(self) -> bytes:
        return bytes(self._c.flush())


class _Gzip:
    def __init__(self, level: int) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, 31)

    def compress(self, data: Buffer) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush()


def compressor(kind: Compression, level: int | None = None, *, threads: int = -1) -> Compressor:
    """threads=-1: zstd workers on every core (big streams); 0: single-threaded, small buffers."""
    if kind == Compression.ZSTD:
        return _Zstd(level or 3, threads)
    if kind == Compression.GZIP:
        return _Gzip(level or 6)
    return _Identity()


def detect_compression(head: bytes) -> Compression:
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    return Compression.NONE


# Decompressed output is handed on in pieces of at most this size, whatever the ratio: a 1 MiB
# read of a very compressible dump (empty pages, repeated rows) would otherwise come out as one
# buffer of tens of MiB, and each of a restore's parallel streams holds one.
DECOMPRESSED_PIECE = 256 * 1024


class _ChunkSource:
    """A file-like `read(n)` over an iterator of chunks, for zstandard's stream_reader."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.rest = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        while not self.rest:
            nxt = next(self.chunks, None)
            if nxt is None:
                return b""
            self.rest = memoryview(nxt)
        if n < 0 or n >= len(self.rest):
            out, self.rest = self.rest, memoryview(b"")
            return out.obj if isinstance(out.obj, bytes) and len(out) == len(out.obj) else bytes(out)
        out, self.rest = self.rest[:n], self.rest[n:]
        return bytes(out)


def decompress(chunks: Iterable[bytes], kind: Compression, *, piece: int = DECOMPRESSED_PIECE) -> Iterator[bytes]:
    """The decompressed stream in pieces of at most `piece` bytes. zstd: every frame, not only
    the first (a stream of concatenated frames decompresses to their concatenation)."""
    if kind == Compression.ZSTD:
        source = cast(IO[bytes], _ChunkSource(chunks))  # stream_reader only calls read(n)
        reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=1024 * 1024, read_across_frames=True)
        while out := reader.read(piece):
            yield out
        return
    if kind == Compression.GZIP:
        z = zlib.decompressobj(31)
        for c in chunks:
            out = z.decompress(c)
            if out:
                yield out
        rest = z.flush()
        if rest:
            yield rest
        if not z.eof:
            raise gzip.BadGzipFile("gzip stream is truncated")
        return
    yield from chunks


_CURRENT_DB = re.compile(rb"^-- Current Database: `((?:[^`]|``)+)`")


class DatabaseFilter:
    """Keeps only some databases of a `mysqldump --databases` stream, optionally renaming one.

    mysqldump writes each database as a section opened by a "-- Current Database: `x`" comment,
    and only CREATE DATABASE, DROP DATABASE and USE name the database itself; tables inside a
    section are unqualified. So selecting and renaming is a streaming, line-level job.
    """

    def __init__(self, keep: Sequence[str], rename_to: str | None) -> None:
        self.keep = {k.encode() for k in keep}
        self.rename_to = rename_to.encode() if rename_to else None
        self.current: bytes | None = None
        self.rest = b""
        self.seen: set[str] = set()

    def _line(self, line: bytes) -> bytes:
        m = _CURRENT_DB.match(line)
        if m:
            self.current = m.group(1).replace(b"``", b"`")
            if self.current in self.keep:
                self.seen.add(self.current.decode())
        if self.current is None:
            return line
        if self.current not in self.keep:
            return b""
        if self.rename_to:
            quoted = b"`" + self.current.replace(b"`", b"``") + b"`"
            target = b"`" + self.rename_to.replace(b"`", b"``") + b"`"
            if (
                line.startswith((b"CREATE DATABASE", b"USE ", b"/*!40000 DROP DATABASE", b"DROP DATABASE"))
                or m is not None
            ):
                line = line.replace(quoted, target)
        return line

    def feed(self, chunk: bytes) -> bytes:
        data = self.rest + chunk
        lines = data.split(b"\n")
        self.rest = lines.pop()
        return b"".join(self._line(line + b"\n") for line in lines)

    def flush(self) -> bytes:
        out = self._line(self.rest) if self.rest else b""
        self.rest = b""
        return out
