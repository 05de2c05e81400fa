"""Binlog archiving (`mysql-backup-agent archive`) and point-in-time replay (after a restore).

The archiver runs in a one-replica Deployment per policy. Each round it copies every *closed*
binlog file after the last archived one, in order, with `mariadb-binlog --read-from-remote-server
--raw`, and rotates the open file (`FLUSH BINARY LOGS`) once it holds events older than
`segmentSeconds`. Crash safety comes from the order of writes and the keys, not from local state:
the segment object first (its key follows from its content), then its entry, then the index (a
cache rebuilt from the entries). A kill at any point leaves either nothing, or a segment without
entry (re-uploaded identically next time), or a complete entry.

Replay downloads and verifies every planned segment before the database is touched, then pipes
`mariadb-binlog` into `mariadb` and asks the server for `@@last_gtid` at the end of that same
session: it must be the GTID the plan expects, or the restore fails with ReplayIncomplete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..api import Reason
from ..contract import binlog as bl
from ..contract.store import ObjectStore, missing
from . import errors
from .config import AgentConfig
from .errors import AgentError
from .sqlstream import client_binary, mysql_command, tls_args, write_defaults_file

LOG = logging.getLogger("mysql-backup-agent")
CHUNK = 1024 * 1024
LAST_GTID_MARK = b"MBO-LAST-GTID:"
UTC_ENV = {"TZ": "UTC"}  # mariadb-binlog reads --stop-datetime in the local time zone


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_file(path: str) -> bl.Parsed:
    """Parses a local binlog through mmap: a 1 GiB segment is never read into memory at once."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return bl.parse(m)  # type: ignore[arg-type]


def _run(argv: Sequence[str], cfg: AgentConfig, *, what: str) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env={**os.environ, **UTC_ENV})
    if proc.returncode != 0:
        text = errors.scrub(proc.stderr.decode(errors="replace"), cfg.secrets)
        raise errors.from_tool_stderr(text, proc.returncode, tool="mariadb-binlog", what=what)


def fetch_remote(cfg: AgentConfig, defaults: str, file: str, workdir: str) -> str:
    """One closed binlog file, byte for byte, into workdir (credentials from the option file)."""
    argv = [
        client_binary("mariadb-binlog", "mysqlbinlog"),
        f"--defaults-extra-file={defaults}",
        "--read-from-remote-server",
        "--raw",
        f"--result-file={workdir.rstrip('/')}/",
        *tls_args(cfg.db),
        file,
    ]
    _run(argv, cfg, what="binlog archive")
    return os.path.join(workdir, file)


# ----------------------------------------------------------------------------- storage (one place)


class SegmentStore:
    """Every storage call of archiving and replay, in one small class, over the backend-neutral
    ObjectStore (contract.store): S3, Azure Blob and GCS alike.

    Segments are data, so they are streamed through `writer`/`iter` (with S3 SSE-C, under the
    customer key, like dumps); entries, gaps and the index are small documents written with `put`
    (never SSE-C, so the operator reads the index without the key). A segment upload that fails
    is aborted: no partial segment is ever visible, and its entry is never written."""

    def __init__(self, store: ObjectStore, policy_dir: str) -> None:
        self.store, self.dir = store, policy_dir

    def _json(self, key: str) -> Any:
        return json.loads(self.store.get(key))

    def load(self) -> bl.Index:
        """The source of truth: every entry and gap object (index.json is only a cache of these)."""
        root = bl.binlog_dir(self.dir) + "/"
        segs: list[Any] = []
        gaps: list[Any] = []
        for key in list(self.store.list(root)):
            folder = key[len(root) :].split("/", 1)[0]
            if not key.endswith(".json") or "/" not in key[len(root) :]:
                continue  # the segments themselves, index.json, retention.json
            if folder == "gaps":
                gaps.append(self._json(key))
            elif folder.isdigit():
                segs.append(self._json(key))
        return bl.Index(
            segments=tuple(bl.Segment.from_dict(d) for d in segs), gaps=tuple(bl.Gap.from_dict(g) for g in gaps)
        )

    def put_segment(self, path: str, seg: bl.Segment) -> None:
        """The data (streamed, published in one step), then its entry."""
        upload = self.store.writer(seg.key)
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    upload.write(chunk)
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        self.put_json(bl.entry_key(seg.key), seg.to_dict())

    def put_gap(self, gap: bl.Gap) -> None:
        self.put_json(bl.gap_key(self.dir, gap), gap.to_dict())

    def retention_floor(self) -> int | None:
        try:
            doc = self._json(bl.retention_key(self.dir))
        except Exception as e:
            if missing(e):
                return None
            raise
        return int(doc["before"]) if isinstance(doc, dict) and doc.get("before") is not None else None

    def delete(self, key: str) -> None:
        """Missing is success (the store's contract), so a retried prune finishes the job."""
        self.store.delete(key)

    def read_index(self) -> bl.Index:
        return bl.Index.parse(self._json(bl.index_key(self.dir)))

    def put_index(self, index: bl.Index) -> None:
        self.store.put(bl.index_key(self.dir), index.to_json(), content_type="application/json")

    def put_json(self, key: str, doc: Any) -> None:
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        self.store.put(key, body, content_type="application/json")

    def download(self, key: str, path: str) -> None:
        with open(path, "wb") as f:
            for chunk in self.store.iter(key, chunk=CHUNK):
                f.write(chunk)


# ----------------------------------------------------------------------------- archiving


@dataclass(frozen=True)
class ServerState:
    server_id: int
    files: tuple[tuple[str, int], ...]  # (name, size), oldest first
    current: str
    position: int


def next_files(index: bl.Index, server: ServerState, now: int) -> tuple[list[str], bl.Gap | None]:
    """Pure: which closed files to archive next, and the gap to record first (if any).

    Continuity is by file number: after the last archived segment comes the file numbered one
    higher. If the server no longer has it (purged) or numbers went backwards (RESET MASTER), the
    chain is broken: a gap is recorded and archiving continues from the oldest file the server still
    has. A server id change is judged per file, by content (`server_change_gap`)."""
    closed = [name for name, _ in server.files if name != server.current]
    if not index.segments:
        return closed, None
    last = max(index.segments, key=lambda s: (s.created, s.sequence))
    after_gap = any(g.after == last.ident for g in index.gaps)
    seqs = {bl.file_sequence(n)[1]: n for n, _ in server.files}
    first_name = server.files[0][0] if server.files else server.current

    def gap(reason: str, message: str) -> bl.Gap:
        return bl.Gap(
            after=last.ident,
            before=f"{server.server_id}/{first_name}",
            reason=reason,
            message=message,
            detected=now,
            after_time=last.last_time,
        )

    if after_gap:
        # The gap is recorded; archive what the server has that is not archived yet.
        done = {s.file for s in index.segments if s.server_id == server.server_id and s.created >= last.created}
        return [n for n in closed if n not in done and bl.file_sequence(n)[1] <= max(seqs)], None
    expected = last.sequence + 1
    if expected in seqs:
        return [n for n in closed if bl.file_sequence(n)[1] >= expected], None
    if seqs and max(seqs) < expected:
        return closed, gap("BinlogReset", f"binlog numbering restarted at {first_name} after {last.file}")
    if seqs and min(seqs) > expected:
        missing = f"{bl.file_sequence(last.file)[0]}.{expected:06d}"
        msg = f"binlogs from {missing} to before {first_name} were purged before they were archived"
        return closed, gap("BinlogsPurged", msg)
    return [], None


def server_change_gap(index: bl.Index, seg: bl.Segment, now: int) -> bl.Gap | None:
    """Pure: the gap to record before archiving `seg` when its own server id (from its
    format-description event) differs from the previous segment's. Judged by content, not by the
    live server id: the file open while the id changed still belongs to the old id."""
    earlier = [s for s in index.segments if (s.created, s.sequence) < (seg.created, seg.sequence)]
    if not earlier:
        return None
    prev = max(earlier, key=lambda s: (s.created, s.sequence))
    if prev.server_id == seg.server_id or any(g.after == prev.ident for g in index.gaps):
        return None
    return bl.Gap(
        after=prev.ident,
        before=seg.ident,
        reason="ServerChanged",
        message=f"server id changed from {prev.server_id} to {seg.server_id} after {prev.file}",
        detected=now,
        after_time=prev.last_time,
        before_time=seg.first_time,
    )


def server_state(conn: Any) -> ServerState:
    with conn.cursor() as cur:
        cur.execute("SELECT @@server_id")
        server_id = int(cur.fetchone()[0])
        cur.execute("SHOW BINARY LOGS")
        files = tuple((str(r[0]), int(r[1])) for r in cur.fetchall())
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    if not row:
        raise AgentError(Reason.DUMP_FAILED, "binary logging is off on the server (log-bin)", permanent=True)
    return ServerState(server_id=server_id, files=files, current=str(row[0]), position=int(row[1]))


class Archiver:
    def __init__(
        self, cfg: AgentConfig, store: SegmentStore, *, connect: Callable[[], Any], workdir: str, defaults: str
    ) -> None:
        self.cfg, self.store, self.connect = cfg, store, connect
        self.workdir, self.defaults = workdir, defaults
        self.segment_seconds = float(cfg.archive.get("segmentSeconds") or 60)
        self.index = store.load()
        self._open: tuple[str, int] | None = None
        self._dirty_since: float | None = None

    def round(self) -> int:
        """One pass: rotate if due, record a gap if one appeared, archive closed files. Returns
        the number of segments archived."""
        conn = self.connect()
        try:
            server = server_state(conn)
            if self._rotate_due(server):
                with conn.cursor() as cur:
                    cur.execute("FLUSH BINARY LOGS")
                server = server_state(conn)
                # The new file as we created it; anything written after this makes it due.
                self._open, self._dirty_since = (server.current, server.position), None
        finally:
            conn.close()
        self.prune(self.store.retention_floor())
        files, gap = next_files(self.index, server, int(time.time()))
        if gap is not None:
            LOG.warning("binlog gap: %s: %s", gap.reason, gap.message)
            self.store.put_gap(gap)
            self.index = bl.Index(segments=self.index.segments, gaps=(*self.index.gaps, gap))
            self._publish()
        sizes = dict(server.files)
        count = 0
        for name in files:
            self.archive_file(name, sizes.get(name), server.server_id)
            count += 1
        return count

    def prune(self, floor: int | None) -> int:
        """Deletes the segments the operator's retention floor releases (no kept full backup needs
        them): the entry first, so a half-done deletion never leaves an entry without its data;
        the newest segment is always kept (it anchors the chain). Gaps before the floor go too."""
        if floor is None or not self.index.segments:
            return 0
        newest = max(self.index.segments, key=lambda s: (s.created, s.sequence))
        doomed = [s for s in self.index.segments if s.created < floor and s is not newest]
        old_gaps = [g for g in self.index.gaps if g.detected and g.detected < floor]
        if not doomed and not old_gaps:
            return 0
        for seg in doomed:
            self.store.delete(bl.entry_key(seg.key))
            self.store.delete(seg.key)
        for g in old_gaps:
            self.store.delete(bl.gap_key(self.store.dir, g))
        self.index = bl.Index(
            segments=tuple(s for s in self.index.segments if s not in doomed),
            gaps=tuple(g for g in self.index.gaps if g not in old_gaps),
        )
        self._publish()
        LOG.info("retention removed %d segments and %d gaps created before %d", len(doomed), len(old_gaps), floor)
        return len(doomed)

    def _rotate_due(self, server: ServerState) -> bool:
        seen = (server.current, server.position)
        if self._open is None or self._open[0] != server.current:
            # A file we did not open ourselves (start-up, a rotation by the server or someone else)
            # may already hold events we cannot see: rotate it once after segmentSeconds.
            self._open, self._dirty_since = seen, time.monotonic()
            return False
        if seen != self._open and self._dirty_since is None:
            self._dirty_since = time.monotonic()
        return self._dirty_since is not None and time.monotonic() - self._dirty_since >= self.segment_seconds

    def archive_file(self, name: str, size: int | None, server_id: int) -> bl.Segment:
        path = fetch_remote(self.cfg, self.defaults, name, self.workdir)
        try:
            actual = os.path.getsize(path)
            if size is not None and actual != size:
                raise AgentError(
                    Reason.STORAGE_UNAVAILABLE, f"{name}: copied {actual} bytes, server has {size}", permanent=False
                )
            parsed = parse_file(path)
            seg = bl.Segment(
                key=bl.segment_key(
                    self.store.dir, server_id=parsed.server_id or server_id, file=name, created=parsed.created
                ),
                file=name,
                server_id=parsed.server_id or server_id,
                created=parsed.created,
                size=actual,
                sha256=_sha256(path),
                first_time=parsed.first_time,
                last_time=parsed.last_time,
                first_gtid=parsed.first_gtid,
                last_gtid=parsed.last_gtid,
                transactions=len(parsed.transactions),
            )
            changed = server_change_gap(self.index, seg, int(time.time()))
            if changed is not None:  # recorded before the segment, so no window ever bridges it
                LOG.warning("binlog gap: %s: %s", changed.reason, changed.message)
                self.store.put_gap(changed)
                self.index = bl.Index(segments=self.index.segments, gaps=(*self.index.gaps, changed))
            self.store.put_segment(path, seg)  # the data, then its entry
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        others = tuple(s for s in self.index.segments if s.key != seg.key)
        self.index = bl.Index(segments=(*others, seg), gaps=self.index.gaps)
        self._publish()
        LOG.info("archived %s (%d bytes, %d transactions) as %s", name, seg.size, seg.transactions, seg.key)
        return seg

    def _publish(self) -> None:
        self.store.put_index(bl.Index(segments=self.index.segments, gaps=self.index.gaps, updated=int(time.time())))


def archive(cfg: AgentConfig, *, connect: Callable[[], Any], store: ObjectStore) -> None:
    """Runs until SIGTERM. Errors are logged and retried after a pause, never fatal: the pod
    stays up and the index shows how far archiving got."""
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    workdir = os.path.join(os.environ.get("MBO_WORKDIR") or tmpdir, "binlogs")
    os.makedirs(workdir, exist_ok=True)
    poll = float(cfg.archive.get("pollSeconds") or 5)
    segments = SegmentStore(store, str(cfg.archive["directory"]))
    defaults = write_defaults_file(cfg.db, tmpdir)
    try:
        archiver: Archiver | None = None
        while True:
            try:
                if archiver is None:
                    archiver = Archiver(cfg, segments, connect=connect, workdir=workdir, defaults=defaults)
                archiver.round()
            except AgentError as e:
                LOG.error("archive round failed: %s: %s", e.reason, errors.scrub(e.message, cfg.secrets))
            except Exception as e:  # storage or database blips: log, wait, retry
                LOG.error("archive round failed: %s", errors.scrub(f"{type(e).__name__}: {e}", cfg.secrets))
            time.sleep(poll)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(defaults)


# ----------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Prepared:
    paths: tuple[str, ...]
    start_position: int
    stop_time: int | None
    stop_position: int | None  # the target GTID's event, on the last file
    expected_last: str | None  # the last GTID the replay must apply (None: nothing to apply)
    transactions: int


def expected_last(
    parsed: Sequence[bl.Parsed],
    *,
    start_position: int,
    stop_time: int | None,
    stop_gtid: str | None,
    database: str | None,
) -> tuple[str | None, int | None, int]:
    """Pure: (the last GTID a correct replay applies, the stop position for a GTID target, how many
    transactions it applies). Mirrors mariadb-binlog: --start-position on the first file,
    --stop-datetime (first event at or after it stops) or --stop-position on the last, and
    --database keeping only transactions that touch that database."""
    last: str | None = None
    count = 0
    for i, p in enumerate(parsed):
        for tx in p.transactions:
            if i == 0 and tx.position < start_position:
                continue
            if stop_time is not None and tx.time >= stop_time:
                return last, None, count
            if stop_gtid is not None and tx.gtid == stop_gtid:
                if i != len(parsed) - 1:
                    msg = f"GTID {stop_gtid} is not in the last segment"
                    raise AgentError(Reason.RESTORE_FAILED, msg, permanent=True)
                return last, tx.position, count
            if database is None or database in tx.databases:
                last = tx.gtid
                count += 1
    if stop_gtid is not None:
        msg = f"GTID {stop_gtid} was not found in the archived binlogs"
        raise AgentError(Reason.RESTORE_FAILED, msg, permanent=True)
    return last, None, count


def planned_segments(store: SegmentStore, plan: Mapping[str, Any]) -> list[bl.Segment]:
    """The plan's run of segments from index.json (one GET), or from the entries themselves when
    the index is behind; it must be exactly the run the operator planned (count and digest)."""
    want = {
        "first": str(plan["firstSegment"]),
        "last": str(plan["lastSegment"]),
        "count": int(plan["segmentCount"]),
        "fingerprint": str(plan["segmentsDigest"]),
    }
    try:
        run = bl.select_range(store.read_index(), **want)  # type: ignore[arg-type]
        if run is None:
            run = bl.select_range(store.load(), **want)  # type: ignore[arg-type]
    except Exception as e:
        raise errors.from_s3(e, what="binlog index", missing_means_not_found=True) from None
    if run is None:
        raise AgentError(
            Reason.CHECKSUM_MISMATCH,
            f"the archive no longer holds the {want['count']} planned binlog segments from {want['first']} "
            f"to {want['last']} unchanged; nothing was restored",
            permanent=True,
        )
    return run


def prepare(cfg: AgentConfig, objects: ObjectStore, plan: dict[str, Any]) -> Prepared:
    """Downloads every planned segment and checks its sha256 before the database is touched."""
    workdir = os.path.join(os.environ.get("MBO_WORKDIR") or os.environ.get("TMPDIR", "/tmp"), "replay")
    os.makedirs(workdir, exist_ok=True)
    store = SegmentStore(objects, str(plan["directory"]))
    segments = planned_segments(store, plan)
    paths, parsed = [], []
    for seg in segments:
        path = os.path.join(workdir, os.path.basename(seg.key))
        try:
            store.download(seg.key, path)
        except Exception as e:
            raise errors.from_s3(e, what="binlog download", missing_means_not_found=True) from None
        digest = _sha256(path)
        if digest != seg.sha256:
            raise AgentError(
                Reason.CHECKSUM_MISMATCH,
                f"binlog segment {seg.key} has sha256 {digest}, its index entry says {seg.sha256}; "
                "nothing was restored",
                permanent=True,
            )
        paths.append(path)
        parsed.append(parse_file(path))
    stop_time = int(plan["stopTime"]) if plan.get("stopTime") is not None else None
    database = plan.get("database")
    last, stop_pos, count = expected_last(
        parsed,
        start_position=int(plan["startPosition"]),
        stop_time=stop_time,
        stop_gtid=plan.get("stopGtid"),
        database=database,
    )
    return Prepared(
        paths=tuple(paths),
        start_position=int(plan["startPosition"]),
        stop_time=stop_time,
        stop_position=stop_pos,
        expected_last=last,
        transactions=count,
    )


def binlog_argv(prep: Prepared, *, database: str | None) -> list[str]:
    import datetime as dt

    argv = [client_binary("mariadb-binlog", "mysqlbinlog"), f"--start-position={prep.start_position}"]
    if prep.stop_time is not None:
        stop = dt.datetime.fromtimestamp(prep.stop_time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        argv.append(f"--stop-datetime={stop}")
    if prep.stop_position is not None:
        argv.append(f"--stop-position={prep.stop_position}")
    if database:
        argv.append(f"--database={database}")
    return [*argv, *prep.paths]


def replay(cfg: AgentConfig, prep: Prepared, *, database: str | None) -> dict[str, Any]:
    """mariadb-binlog | mariadb, then the server's @@last_gtid must be the planned last GTID."""
    defaults = write_defaults_file(cfg.db, os.environ.get("TMPDIR", "/tmp"))
    reader = writer = None
    try:
        reader = subprocess.Popen(
            binlog_argv(prep, database=database),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **UTC_ENV},
        )
        writer = subprocess.Popen(
            mysql_command(binary=client_binary("mariadb", "mysql"), defaults_file=defaults, db=cfg.db),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert reader.stdout and reader.stderr and writer.stdin and writer.stdout and writer.stderr
        applied = 0
        try:
            for chunk in iter(lambda: reader.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
                writer.stdin.write(chunk)
                applied += len(chunk)
            # Split in two literals so the column header (the expression) never carries the mark.
            mark = LAST_GTID_MARK.decode()
            writer.stdin.write(f"\nSELECT CONCAT('{mark[:4]}', '{mark[4:]}', @@last_gtid) AS g;\n".encode())
        except BrokenPipeError:
            pass  # mariadb died; its exit code and stderr tell why
        out, werr = writer.communicate()  # closes stdin, reads the answer
        rcode, rerr = reader.wait(), reader.stderr.read()
        if rcode != 0:
            text = errors.scrub(rerr.decode(errors="replace"), cfg.secrets)
            raise errors.from_tool_stderr(text, rcode, tool="mariadb-binlog", what="replay")
        if writer.returncode != 0:
            text = errors.scrub(werr.decode(errors="replace"), cfg.secrets)
            raise errors.from_tool_stderr(text, writer.returncode, tool="mysql", what="replay")
    except BaseException:
        for p in (reader, writer):
            if p and p.poll() is None:
                p.kill()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(defaults)
        for path in prep.paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
    got = next(
        (line.split(LAST_GTID_MARK, 1)[1].strip().decode() for line in out.splitlines() if LAST_GTID_MARK in line), ""
    )
    if got != (prep.expected_last or ""):
        raise AgentError(
            Reason.REPLAY_INCOMPLETE,
            f"binlog replay ended at GTID {got or '(none)'}, but the archive holds transactions up to "
            f"{prep.expected_last} before the target: the replay did not apply everything",
            permanent=True,
        )
    return {"replayedTransactions": prep.transactions, "lastGtid": prep.expected_last, "replayedBytes": applied}
