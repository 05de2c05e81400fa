from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mysql_backup_operator.agent import errors
from mysql_backup_operator.agent.config import DbConfig
from mysql_backup_operator.agent.sqlstream import (
    DatabaseFilter,
    compressor,
    decompress,
    detect_compression,
    dump_command,
    parse_binlog,
    with_output_buffer,
    write_defaults_file,
)
from mysql_backup_operator.api import Compression, Reason

DB = DbConfig(host="h", port=3306, user="u", password='p"w\\d', databases=(), tls_enabled=False, tls_ca_file=None)


def test_dump_command_never_carries_the_password(tmp_path: object) -> None:
    path = write_defaults_file(DB, str(tmp_path))
    try:
        argv = dump_command(
            binary="mariadb-dump", defaults_file=path, db=DB, databases=["a"], is_mariadb=True, capture_binlog=True
        )
        assert argv[1] == f"--defaults-extra-file={path}"
        assert not any(DB.password in a for a in argv)
        for flag in ("--single-transaction", "--quick", "--routines", "--triggers", "--events", "--hex-blob"):
            assert flag in argv
        assert argv[-2:] == ["--databases", "a"]
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        with open(path) as f:
            assert 'password="p\\"w\\\\d"' in f.read()
    finally:
        os.unlink(path)


def test_the_dump_runs_under_stdbuf_when_there_is_one() -> None:
    argv = ["mariadb-dump", "--databases", "a"]
    assert with_output_buffer(argv, stdbuf="/usr/bin/stdbuf") == ["/usr/bin/stdbuf", "-o1M", *argv]
    assert with_output_buffer(argv, stdbuf=None) == argv


def test_decompression_hands_out_bounded_pieces_of_every_frame() -> None:
    import zstandard

    # 40 MiB of zeros compress to a few KiB: one read must not become one 40 MiB buffer.
    big = zstandard.ZstdCompressor().compress(b"\0" * (40 << 20))
    second = zstandard.ZstdCompressor().compress(b"after the first frame")
    stored = big + second
    pieces = list(decompress([stored[i : i + 997] for i in range(0, len(stored), 997)], Compression.ZSTD))
    assert max(len(p) for p in pieces) <= 256 * 1024
    assert b"".join(pieces) == b"\0" * (40 << 20) + b"after the first frame"


def test_binlog_position_is_parsed_from_the_dump_header() -> None:
    header = (
        b"-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1234;\n"
        b"-- SET GLOBAL gtid_slave_pos='0-1-42';"
    )
    pos = parse_binlog(header)
    assert pos is not None and (pos.file, pos.position, pos.gtid) == ("mysql-bin.000003", 1234, "0-1-42")
    assert parse_binlog(b"nothing") is None


@pytest.mark.parametrize("kind", list(Compression))
@given(data=st.lists(st.binary(max_size=5000), max_size=8))
def test_compression_round_trip(kind: Compression, data: list[bytes]) -> None:
    c = compressor(kind)
    stored = b"".join([c.compress(d) for d in data] + [c.flush()])
    if kind != Compression.NONE:
        assert detect_compression(stored) == kind
    chunks = [stored[i : i + 997] for i in range(0, len(stored), 997)]
    assert b"".join(decompress(chunks, kind)) == b"".join(data)


DUMP = b"""-- header
/*!40101 SET NAMES utf8mb4 */;
--
-- Current Database: `a`
--

/*!40000 DROP DATABASE IF EXISTS `a`*/;
CREATE DATABASE /*!32312 IF NOT EXISTS*/ `a` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;
USE `a`;
CREATE TABLE `t` (`x` int);
INSERT INTO `t` VALUES (1);
--
-- Current Database: `b`
--

/*!40000 DROP DATABASE IF EXISTS `b`*/;
CREATE DATABASE /*!32312 IF NOT EXISTS*/ `b`;
USE `b`;
CREATE TABLE `u` (`y` int);
"""


@given(st.integers(min_value=1, max_value=50))
def test_database_filter_selects_and_renames_in_any_chunking(step: int) -> None:
    f = DatabaseFilter(["a"], "a_copy")
    out = b"".join(f.feed(DUMP[i : i + step]) for i in range(0, len(DUMP), step)) + f.flush()
    assert b"USE `a_copy`;" in out
    assert b"DROP DATABASE IF EXISTS `a_copy`" in out
    assert b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `a_copy`" in out
    assert b"`b`" not in out and b"CREATE TABLE `u`" not in out
    assert b"INSERT INTO `t` VALUES (1);" in out
    assert b"SET NAMES utf8mb4" in out
    assert f.seen == {"a"}


def test_scrub_removes_secret_values_and_assignments() -> None:
    text = "mysqldump: Got error: 1045: Access denied for user 'u' (using password: YES) pw=hunter22 token: abc"
    out = errors.scrub(text + " hunter22", ["hunter22"])
    assert "hunter22" not in out and "abc" not in out


def test_classification() -> None:
    assert errors.from_mysql_errno(1045, "denied", what="backup").reason == Reason.AUTHENTICATION_FAILED
    assert errors.from_mysql_errno(2003, "cannot connect", what="backup").reason == Reason.DATABASE_UNAVAILABLE
    e = errors.from_tool_stderr("mysqldump: Got error: 2002: Can't connect", 2, tool="mysqldump", what="backup")
    assert e.reason == Reason.DATABASE_UNAVAILABLE and not e.permanent
    e = errors.from_tool_stderr("ERROR 1040 (HY000): Too many connections", 1, tool="mysql", what="restore")
    assert e.reason == Reason.DATABASE_UNAVAILABLE
    # A syntax error on line 2013 of a dump is the dump's fault, not a connection's.
    e = errors.from_tool_stderr("ERROR 1064 (42000) at line 2013: You have an error", 1, tool="mysql", what="restore")
    assert e.reason == Reason.RESTORE_FAILED and e.permanent

    class FakeClientError(Exception):
        def __init__(self, code: str, status: int) -> None:
            self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}

    assert errors.from_s3(FakeClientError("AccessDenied", 403), what="b", missing_means_not_found=False).reason == (
        Reason.STORAGE_ACCESS_DENIED
    )
    assert errors.from_s3(FakeClientError("NoSuchKey", 404), what="r", missing_means_not_found=True).reason == (
        Reason.BACKUP_NOT_FOUND
    )
    assert errors.from_s3(
        FakeClientError("XMinioStorageFull", 507), what="b", missing_means_not_found=False
    ).reason == (Reason.INSUFFICIENT_STORAGE)


def test_the_restore_runs_as_many_streams_as_the_server_has_cpus_within_bounds() -> None:
    from mysql_backup_operator.contract.config import DEFAULT_RESTORE_PARALLELISM, default_restore_parallelism

    assert [default_restore_parallelism(n) for n in (1, 2, 3, 8, 64)] == [2, 2, 3, 8, 8]
    assert default_restore_parallelism(None) == default_restore_parallelism(0) == DEFAULT_RESTORE_PARALLELISM


def test_server_cpus_comes_from_thread_pool_size_and_mysql_has_none() -> None:
    import pymysql
    from mysql_backup_operator.agent.cli import server_cpus

    class Cursor:
        def __init__(self, row: tuple[object, ...] | None, fail: bool) -> None:
            self.row, self.fail = row, fail

        def __enter__(self) -> Cursor:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def execute(self, sql: str) -> None:
            assert sql == "SELECT @@thread_pool_size"
            if self.fail:
                raise pymysql.err.OperationalError(1193, "Unknown system variable 'thread_pool_size'")

        def fetchone(self) -> tuple[object, ...] | None:
            return self.row

    class Conn:
        def __init__(self, row: tuple[object, ...] | None = None, fail: bool = False) -> None:
            self.c = Cursor(row, fail)

        def cursor(self) -> Cursor:
            return self.c

    assert server_cpus(Conn((2,))) == 2
    assert server_cpus(Conn(fail=True)) is None
    assert server_cpus(Conn((None,))) is None


def test_the_restores_buffers_sit_under_the_fixed_mmap_threshold() -> None:
    """A restore's own buffers (the store's reads, decompressed pieces) come from the arenas and
    are reused: above the threshold each one was a fresh mmap and its page faults (agent/memory.py)."""
    from mysql_backup_operator.agent.memory import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, SETTINGS
    from mysql_backup_operator.agent.sqlstream import DECOMPRESSED_PIECE
    from mysql_backup_operator.contract.store import READ_CHUNK

    overhead = 64 * 1024  # a bytes object's header and malloc's own, with room to spare
    assert SETTINGS[M_MMAP_THRESHOLD] >= max(READ_CHUNK, DECOMPRESSED_PIECE) + overhead
    assert SETTINGS[M_TRIM_THRESHOLD] >= SETTINGS[M_MMAP_THRESHOLD]


def test_a_backups_part_buffers_are_mapped_and_its_reads_are_not() -> None:
    """Part buffers above the backup's fixed threshold are returned when their upload ends; zstd's
    output reads under it are reused rather than mapped and faulted in one by one."""
    from mysql_backup_operator.agent.memory import BACKUP_SETTINGS, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    from mysql_backup_operator.agent.pipeline import READ_CHUNK as ZSTD_READ
    from mysql_backup_operator.contract.store import DEFAULT_PART_SIZE

    threshold = BACKUP_SETTINGS[M_MMAP_THRESHOLD]
    assert ZSTD_READ + 64 * 1024 <= threshold < DEFAULT_PART_SIZE
    assert BACKUP_SETTINGS[M_TRIM_THRESHOLD] >= threshold
