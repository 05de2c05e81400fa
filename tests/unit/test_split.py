"""The dump splitter on a real mariadb-dump output (two databases, views across them, a trigger,
an event, a routine, an FK cycle, a generated column and a partitioned table)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from mysql_backup_operator.agent.split import DumpSplitter, Piece
from mysql_backup_operator.agent.sqlstream import DatabaseFilter

DUMP = (Path(__file__).parent / "data" / "awkward-dump.sql").read_bytes()


def split(data: bytes, sizes: list[int] | None = None) -> list[Piece]:
    s = DumpSplitter()
    out: list[Piece] = []
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)] if sizes else 1 << 20
        out += s.feed(data[pos : pos + n])
        pos, i = pos + n, i + 1
    out += s.flush()
    return out


def units(pieces: list[Piece]) -> dict[tuple[str, str | None, str | None], bytes]:
    acc: dict[tuple[str, str | None, str | None], bytes] = {}
    for p in pieces:
        k = (str(p.dest.unit), p.dest.database, p.dest.table)
        acc[k] = acc.get(k, b"") + p.data
    return acc


def test_the_original_bytes_all_arrive_in_order() -> None:
    pieces = split(DUMP)
    assert b"".join(p.data for p in pieces if not p.added) == DUMP


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8))
def test_chunking_does_not_change_the_split(sizes: list[int]) -> None:
    assert units(split(DUMP, sizes)) == units(split(DUMP))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8))
def test_a_reused_read_buffer_with_short_reads_splits_the_same(sizes: list[int]) -> None:
    """The agent reads the raw pipe into one bytearray: reads are short and the buffer is
    overwritten after each feed, so pieces must be used (here: copied) at once."""
    s, buf, out = DumpSplitter(), bytearray(700), []
    pos, i = 0, 0
    while pos < len(DUMP):
        n = min(sizes[i % len(sizes)], len(DUMP) - pos)
        buf[:n] = DUMP[pos : pos + n]
        out += [Piece(p.dest, bytes(p.data), p.added) for p in s.feed(buf, n)]
        buf[:] = b"\xff" * len(buf)  # whatever the next read brings
        pos, i = pos + n, i + 1
    out += [Piece(p.dest, bytes(p.data), p.added) for p in s.flush()]
    assert units(out) == units(split(DUMP))


def test_one_self_contained_unit_per_table_between_prologue_and_epilogue() -> None:
    u = units(split(DUMP))
    tables = [(k[1], k[2]) for k in u if k[0] == "table"]
    assert tables == [("awk1", "a"), ("awk1", "b"), ("awk1", "p"), ("awk2", "base")]
    for (_, db, table), sql in ((k, v) for k, v in u.items() if k[0] == "table"):
        assert b"-- MariaDB dump" in sql[:200], "each table unit carries the session settings"
        assert b"FOREIGN_KEY_CHECKS=0" in sql and f"USE `{db}`;".encode() in sql
        assert f"CREATE TABLE `{table}`".encode() in sql
        assert b"CREATE DATABASE" not in sql and b"DROP DATABASE" not in sql and b"VIEW" not in sql
    assert b"TRIGGER tr BEFORE INSERT ON p" in u[("table", "awk1", "p")]
    assert b"PARTITION BY HASH" in u[("table", "awk1", "p")]
    pro, epi = u[("prologue", None, None)], u[("epilogue", None, None)]
    assert pro.count(b"CREATE DATABASE") == 2 and b"INSERT" not in pro and b"CREATE TABLE `" not in pro
    assert b"EVENT `ev` ON SCHEDULE" in epi and b"CREATE DEFINER" in epi and b"VIEW `v_other` AS select `awk2`" in epi
    assert b"DROP DATABASE" not in epi and b"-- MariaDB dump" in epi[:200]
    assert epi.rstrip().endswith(b"-- Dump completed on 2026-01-01  0:00:00")
    # Events and routines of awk1 run in awk1, even though the epilogue is one stream.
    assert epi.index(b"USE `awk1`") < epi.index(b"EVENT `ev` ON SCHEDULE")


def test_each_unit_works_with_the_database_filter() -> None:
    u = units(split(DUMP))
    f = DatabaseFilter(["awk2"], "copy")
    out = f.feed(u[("table", "awk2", "base")]) + f.flush()
    assert b"USE `copy`;" in out and b"CREATE TABLE `base`" in out
    f = DatabaseFilter(["awk2"], None)
    assert b"CREATE TABLE" not in f.feed(u[("table", "awk1", "a")]) + f.flush()
