"""`mysql-backup-agent`: the program inside backup and restore Jobs.

backup:  pymysql metadata -> mysqldump | compress | sha256 | S3 multipart upload -> manifest
restore: manifest -> verify sha256 of the stored object -> download | decompress | filter | mysql

It never imports kopf and needs no Kubernetes API access. Its one output is a JSON result,
written to the termination message (and stdout), which the operator copies into status.
Exit codes: 0 success, 1 failure worth a retry, 2 failure no retry can fix.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar, cast

from .. import __version__
from ..api import Compression, Reason
from ..contract import manifest as mf
from ..contract import result as res
from ..contract.config import DEFAULT_RESTORE_PARALLELISM, LAYOUT_PER_TABLE, default_restore_parallelism
from ..contract.keys import directory_of
from ..contract.store import SCHEMES, ObjectStore, is_sdk_error
from . import binlog, crypto, dumpstart, errors, interrupt, storage
from .config import AgentConfig, load
from .errors import AgentError
from .memory import BACKUP_SETTINGS, SETTINGS, tune_malloc
from .pipeline import SplitUpload, compress_stream, start_level, widen_pipe
from .sqlstream import (
    PER_TABLE_DUMP_FLAGS,
    DatabaseFilter,
    client_binary,
    decompress,
    detect_compression,
    dump_command,
    mysql_command,
    parse_binlog,
    with_output_buffer,
    write_defaults_file,
)

LOG = logging.getLogger("mysql-backup-agent")
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
READ_CHUNK = 1024 * 1024
APPLY_CHUNK = 1024 * 1024
HEADER_SCAN = 256 * 1024
TERMINATION_LOG = os.environ.get("MBO_TERMINATION_LOG", "/dev/termination-log")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- database metadata


# What pymysql reports for a connection that never got as far as a session (errmsg.h: 2002 socket,
# 2003 TCP refused or timed out, 2005 unknown host, 2013 lost during the greeting; the server's
# 1040 too many connections and 1053 shutting down): nothing was run, so it may be tried again.
_NEVER_CONNECTED_ERRNOS = frozenset({2002, 2003, 2005, 2013, 1040, 1053})


def connect(cfg: AgentConfig, database: str | None = None, *, pause: float | None = None) -> Any:
    """A pymysql session, tried up to DUMP_ATTEMPTS times while it never connects.

    Why the retries: the agent's first session (metadata for a backup, the credentials check
    before a restore) met the same lost SYNs as the dump (agent/dumpstart.py) with nothing to
    absorb them, so one 10 s connect timeout failed the whole operation DatabaseUnavailable.
    Access denied is never retried: it only locks accounts.
    """
    import pymysql

    ssl: dict[str, Any] | None = None
    if cfg.db.tls_enabled:
        ssl = {"ca": cfg.db.tls_ca_file} if cfg.db.tls_ca_file else {"check_hostname": False}

    def once(last: bool) -> Any:
        try:
            return pymysql.connect(
                host=cfg.db.host,
                port=cfg.db.port,
                user=cfg.db.user,
                password=cfg.db.password,
                database=database,
                connect_timeout=10,
                read_timeout=60,
                charset="utf8mb4",
                ssl=ssl,
            )
        except pymysql.err.MySQLError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
            message = errors.scrub(str(e.args[1] if len(e.args) > 1 else e), cfg.secrets)
            error = errors.from_mysql_errno(code, message, what="connect")
            if code in _NEVER_CONNECTED_ERRNOS and not last:
                raise _NotConnected(error, f"{code}: {message}") from None
            raise error from None

    return _with_connect_retries(once, tool="pymysql", pause=DUMP_RETRY_PAUSE if pause is None else pause)


def server_cpus(conn: Any) -> int | None:
    """The server's CPU count as MariaDB tells it (@@thread_pool_size defaults to it); None from
    servers without that variable (MySQL)."""
    import pymysql

    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@thread_pool_size")
            row = cur.fetchone()
    except pymysql.err.MySQLError:
        return None
    return int(row[0]) if row and row[0] is not None else None


def collect_metadata(cfg: AgentConfig) -> dict[str, Any]:
    import pymysql

    conn = connect(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = str(cur.fetchone()[0])
            scope = cfg.backup.get("scope") or {}
            ignore: list[str] = []
            if scope:
                databases, ignore = scoped_databases(cur, scope)
            elif cfg.db.databases:
                databases = list(cfg.db.databases)
                cur.execute(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN %s", (tuple(databases),)
                )
                found = {r[0] for r in cur.fetchall()}
                missing = [d for d in databases if d not in found]
                if missing:
                    raise AgentError(
                        Reason.DUMP_FAILED, f"database(s) not found on the server: {', '.join(missing)}", permanent=True
                    )
            else:
                cur.execute(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN %s ORDER BY 1",
                    (SYSTEM_SCHEMAS,),
                )
                databases = [r[0] for r in cur.fetchall()]
            counts: dict[str, int] = {"tables": 0, "views": 0, "routines": 0, "triggers": 0, "events": 0}
            table_bytes: dict[tuple[str, str], int] = {}
            if databases:
                dbs = tuple(databases)
                # DATA_LENGTH is the server's estimate (InnoDB: from its statistics, no table is
                # read); it decides which tables are worth sampling for a zstd level.
                cur.execute(
                    "SELECT TABLE_SCHEMA, TABLE_NAME, DATA_LENGTH FROM information_schema.TABLES "
                    "WHERE TABLE_TYPE='BASE TABLE' AND TABLE_SCHEMA IN %s",
                    (dbs,),
                )
                table_bytes = {(str(d), str(t)): int(n or 0) for d, t, n in cur.fetchall()}
                counts["tables"] = len(table_bytes)
                queries = {
                    "views": "SELECT COUNT(*) FROM information_schema.TABLES "
                    "WHERE TABLE_TYPE='VIEW' AND TABLE_SCHEMA IN %s",
                    "routines": "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN %s",
                    "triggers": "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN %s",
                    "events": "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN %s",
                }
                for k, q in queries.items():
                    cur.execute(q, (dbs,))
                    counts[k] = int(cur.fetchone()[0])
                counts["tables"] -= len(ignore)
            binlog_on = False
            try:
                cur.execute("SHOW MASTER STATUS")
                binlog_on = cur.fetchone() is not None
            except pymysql.err.MySQLError:
                binlog_on = False
    except pymysql.err.MySQLError as e:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
        raise errors.from_mysql_errno(code, str(e.args[1] if len(e.args) > 1 else e), what="backup") from None
    finally:
        conn.close()
    if not databases and not scope:
        raise AgentError(Reason.DUMP_FAILED, "the server has no user databases to back up", permanent=True)
    return {
        "ignoreTables": ignore,
        "serverVersion": version,
        "isMariaDB": "mariadb" in version.lower(),
        "databases": databases,
        "counts": counts,
        "tableBytes": table_bytes,
        "binlogEnabled": binlog_on,
    }


def scoped_databases(cur: Any, scope: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A scoped backup (a partial Restore's safety backup): the databases to dump and the tables
    of theirs to leave out (`--ignore-table`), so the dump holds exactly the scope's databases or
    tables. What does not exist on the server is skipped: there is nothing of it to protect."""
    if scope.get("databases"):
        cur.execute(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN %s ORDER BY 1",
            (tuple(scope["databases"]),),
        )
        return [r[0] for r in cur.fetchall()], []
    wanted = {tuple(str(t).split(".", 1)) for t in scope.get("tables") or ()}
    cur.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
        "WHERE TABLE_TYPE='BASE TABLE' AND TABLE_SCHEMA IN %s ORDER BY 1, 2",
        (tuple(sorted({d for d, _ in wanted})),),
    )
    present = [(str(d), str(t)) for d, t in cur.fetchall()]
    databases = sorted({d for d, t in present if (d, t) in wanted})
    ignore = [f"{d}.{t}" for d, t in present if d in databases and (d, t) not in wanted]
    return databases, ignore


# ----------------------------------------------------------------------------- processes


class StderrTail:
    """Drains a pipe in the background, keeping only the last lines (never the whole output)."""

    def __init__(self, pipe: IO[bytes], lines: int = 40) -> None:
        self.buf: deque[str] = deque(maxlen=lines)
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.thread.start()

    def _run(self, pipe: IO[bytes]) -> None:
        for line in iter(pipe.readline, b""):
            self.buf.append(line.decode(errors="replace").rstrip())

    def text(self) -> str:
        self.thread.join(timeout=5)
        return "\n".join(self.buf)


def _is_storage_error(e: BaseException) -> bool:
    return is_sdk_error(e)


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc and proc.poll() is None:
        proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)


# A dump that never connected is started again, at most this many times in all, after these
# pauses (agent/dumpstart.py says why); a connection still unanswered after DUMP_CONNECT_STALL
# seconds counts as never connecting.
DUMP_ATTEMPTS = 3
DUMP_RETRY_PAUSE = 2.0
DUMP_CONNECT_STALL = 15.0


class _NotConnected(Exception):
    """A dump or restore client that exited (or was stopped) without ever connecting: it ran
    nothing and stored nothing, so it may run again. `error` is what to report if it is the last."""

    def __init__(self, error: AgentError, why: str) -> None:
        super().__init__(why)
        self.error, self.why = error, why


T = TypeVar("T")


def _with_connect_retries(
    run: Callable[[bool], T], *, tool: str, attempts: int = DUMP_ATTEMPTS, pause: float = DUMP_RETRY_PAUSE
) -> T:
    """`run(last)`, again after 2 s, then 4 s, while it raises _NotConnected; `last` tells the
    final attempt, which reports its failure as it is."""
    for attempt in range(1, attempts + 1):
        try:
            return run(attempt == attempts)
        except _NotConnected as e:
            if attempt == attempts:
                raise e.error from None
            wait = pause * attempt
            LOG.warning(
                "%s did not connect (%s); attempt %d of %d, next in %.0f s", tool, e.why, attempt, attempts, wait
            )
            time.sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


def start_dump(
    argv: list[str],
    *,
    secrets: Iterable[str | None],
    attempts: int = DUMP_ATTEMPTS,
    pause: float = DUMP_RETRY_PAUSE,
    stall: float = DUMP_CONNECT_STALL,
) -> tuple[subprocess.Popen[bytes], StderrTail]:
    """The dump process, once it is streaming (or has failed for a reason a retry cannot fix,
    or on its last attempt, which is left to connect as late as it may): its stdout not yet
    read, its stderr drained in the background."""

    def once(last: bool) -> tuple[subprocess.Popen[bytes], StderrTail]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stderr is not None
        widen_pipe(proc.stdout)
        err = StderrTail(proc.stderr)
        if last:
            return proc, err
        outcome = dumpstart.first_output(proc, stall=stall)
        if outcome == dumpstart.FirstOutput.OUTPUT:
            return proc, err
        if outcome == dumpstart.FirstOutput.STALLED:
            _kill(proc)
            why = f"its connection to the database went unanswered for {stall:.0f} s"
            error = AgentError(Reason.DATABASE_UNAVAILABLE, f"mysqldump: {why}", permanent=False)
        else:
            code = proc.wait()
            text = errors.scrub(err.text(), secrets)
            if not dumpstart.is_connect_failure(text):
                return proc, err
            why = errors.tail(text, 300)
            error = errors.from_tool_stderr(text, code, tool="mysqldump", what="backup")
        proc.stdout.close()
        raise _NotConnected(error, why)  # `error` goes unused: the last attempt is returned, never raised

    return _with_connect_retries(once, tool="mysqldump", attempts=attempts, pause=pause)


def _client_error(stderr: str, code: int, *, what: str) -> Exception:
    error = errors.from_tool_stderr(stderr, code, tool="mysql", what=what)
    if dumpstart.is_connect_failure(stderr):
        return _NotConnected(error, f"{what}: {errors.tail(stderr, 300)}")
    return error


# ----------------------------------------------------------------------------- backup


def backup(cfg: AgentConfig) -> dict[str, Any]:
    started = now()
    t0 = time.monotonic()
    # Key problems fail before the database is even asked anything.
    recipient, encryption = crypto.recipient_for(cfg.encryption_key) if cfg.encrypted else (None, None)
    meta = collect_metadata(cfg)
    t_meta = time.monotonic()
    store = storage.open_store(cfg.storage)
    t_store = time.monotonic()
    compression = cfg.compression
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    defaults = write_defaults_file(cfg.db, tmpdir)
    proc: subprocess.Popen[bytes] | None = None
    writer: storage.Upload | None = None
    split: SplitUpload | None = None
    per_table = cfg.backup.get("layout") == LAYOUT_PER_TABLE
    try:
        argv = dump_command(
            binary=client_binary("mariadb-dump", "mysqldump"),
            defaults_file=defaults,
            db=cfg.db,
            databases=meta["databases"],
            is_mariadb=meta["isMariaDB"],
            capture_binlog=meta["binlogEnabled"],
            extra_args=[
                *(cfg.backup.get("extraDumpArgs") or ()),
                *(PER_TABLE_DUMP_FLAGS if per_table else ()),
                *(f"--ignore-table={t}" for t in meta["ignoreTables"]),
            ],
        )
        argv = with_output_buffer(argv, stdbuf=shutil.which("stdbuf"))
        metadata = {"mysqlbackup-backup": str(cfg.backup.get("name", "")), "mysqlbackup-compression": compression}
        level = cfg.backup.get("compressionLevel")
        try:
            with interrupt.shielded():  # see agent/interrupt.py: an opened upload is always abortable
                if per_table:
                    split = SplitUpload(
                        store=store,
                        directory=directory_of(cfg.storage.manifest_key),
                        kind=compression,
                        level=level,
                        metadata=metadata,
                        recipient=recipient,
                        table_bytes=meta["tableBytes"],
                    )
                else:
                    writer = store.writer(cfg.storage.dump_key, metadata=metadata)
        except Exception as e:
            raise errors.from_s3(e, what="backup", missing_means_not_found=False) from None
        t_uploads = time.monotonic()
        dump_out: io.BufferedReader | io.BytesIO
        if meta["databases"]:
            proc, err = start_dump(argv, secrets=cfg.secrets)
            # Read in quarters of the widened pipe: see pipeline.chunks for why that size.
            dump_out = cast(io.BufferedReader, proc.stdout)  # IO[bytes] in typeshed; readinto is there
        else:  # a scoped backup of which nothing exists yet: it holds (and restores) nothing
            LOG.info("nothing of the scope %s exists on the server; the backup holds nothing", cfg.backup["scope"])
            dump_out = io.BytesIO(b"-- nothing of this backup's scope existed on the server\n")
        t_stream = time.monotonic()
        try:
            if split is not None:
                stats = split.stream(dump_out)
            else:
                assert writer is not None
                estimate = sum(n for (d, t), n in meta["tableBytes"].items() if f"{d}.{t}" not in meta["ignoreTables"])
                stats = compress_stream(
                    dump_out,
                    kind=compression,
                    level=start_level(compression, level, estimated_bytes=estimate),
                    sink=writer.write,
                    recipient=recipient,
                )
            code = proc.wait() if proc else 0
            if code != 0:
                raise errors.from_tool_stderr(
                    errors.scrub(err.text(), cfg.secrets), code, tool="mysqldump", what="backup"
                )
            skip_comments = "--skip-comments" in (cfg.backup.get("extraDumpArgs") or ())
            if proc and not skip_comments and b"-- Dump completed" not in stats.tail:
                raise AgentError(
                    Reason.DUMP_FAILED, "mysqldump output ended without its completion marker", permanent=False
                )
            t_complete = time.monotonic()
            if split is not None:
                objects = split.finish()
            else:
                assert writer is not None
                writer.complete()
                objects = [
                    mf.ManifestObject(
                        key=cfg.storage.dump_key,
                        kind=mf.ObjectKind.DUMP,
                        sha256=stats.sha256,
                        stored_bytes=writer.bytes_written,
                        size_bytes=stats.raw_bytes,
                        compression_level=stats.level,
                    )
                ]
            LOG.info(
                "metadata %.2fs, store %.2fs, uploads opened %.2fs, dump started %.2fs, stream %.2fs (%d bytes -> "
                "%d stored in %d objects, %.2fs waiting for upload slots), upload completion %.2fs",
                t_meta - t0,
                t_store - t_meta,
                t_uploads - t_store,
                t_stream - t_uploads,
                t_complete - t_stream,
                stats.raw_bytes,
                sum(o.stored_bytes or 0 for o in objects),
                len(objects),
                writer.slot_wait if writer else split.slot_wait if split else 0.0,
                time.monotonic() - t_complete,
            )
        except AgentError:
            raise
        except Exception as e:
            if _is_storage_error(e):
                raise errors.from_s3(e, what="backup", missing_means_not_found=False) from None
            if isinstance(e, OSError):
                raise errors.from_os_error(e, what="backup") from None
            raise
    except BaseException:
        _kill(proc)
        if writer is not None:
            writer.abort()
        if split is not None:
            split.abort()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(defaults)
    completed = now()
    binlog = parse_binlog(stats.header)
    manifest = mf.Manifest(
        objects=tuple(objects),
        compression=compression,
        databases=tuple(meta["databases"]),
        size_bytes=stats.raw_bytes,
        stored_bytes=sum(o.stored_bytes or 0 for o in objects),
        counts=meta["counts"],
        server_version=meta["serverVersion"],
        binlog=binlog.__dict__ if binlog else None,
        backup={k: cfg.backup.get(k) for k in ("name", "namespace", "uid", "policy", "trigger")},
        agent_version=__version__,
        started_at=iso(started),
        completed_at=iso(completed),
        duration_seconds=round(time.monotonic() - t0, 2),
        encryption=encryption,
    )
    try:
        store.put(cfg.storage.manifest_key, manifest.to_json(), content_type="application/json")
    except Exception as e:
        # A dump without its manifest is not a backup: remove it so nothing looks complete.
        for o in objects:
            with contextlib.suppress(Exception):
                store.delete(o.key)
        raise errors.from_s3(e, what="backup manifest", missing_means_not_found=False) from None
    return res.BackupResult(
        bucket=cfg.storage.bucket,
        manifest_key=cfg.storage.manifest_key,
        manifest=manifest,
        scheme=SCHEMES[store.backend],
    ).to_dict()


# ----------------------------------------------------------------------------- restore


def read_manifest(cfg: AgentConfig, store: ObjectStore) -> mf.Manifest:
    try:
        body = store.get(cfg.storage.manifest_key)
    except Exception as e:
        raise errors.from_s3(e, what="restore", missing_means_not_found=True) from None
    try:
        return mf.parse(body)
    except mf.ManifestError as e:
        raise AgentError(Reason.CHECKSUM_MISMATCH, str(e), permanent=True) from None


class _Hashing:
    """Passes stored chunks through while hashing and counting them (the verification pass)."""

    def __init__(self, source: Iterable[bytes]) -> None:
        self.source, self.sha, self.size, self.head = source, hashlib.sha256(), 0, b""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.source:
            if len(self.head) < 16:
                self.head += chunk[: 16 - len(self.head)]
            self.sha.update(chunk)
            self.size += len(chunk)
            yield chunk


def _read_verified(store: ObjectStore, key: str, *, identity: Any | None, check: Callable[[_Hashing], None]) -> bytes:
    """Reads a whole stored object once: `check` gets its sha256 and size and, when it is
    encrypted, it is decrypted to nowhere (authenticated: a wrong key, tampering or truncation is
    caught here, before anything touches the database). Returns the first plaintext bytes.
    A changed object reports ChecksumMismatch (the stored bytes differ from the manifest) rather
    than DecryptionFailed, so the reason says what happened to it."""
    hashing = _Hashing(store.iter(key))
    try:
        if identity is None:
            for _ in hashing:
                pass
            check(hashing)
            return hashing.head
        try:
            head = crypto.verify(hashing, identity, what=key)
        except AgentError:
            for _ in hashing:  # the rest of the object, for the digest
                pass
            check(hashing)
            raise
        check(hashing)
        return head
    except AgentError:
        raise
    except Exception as e:
        raise errors.from_s3(e, what="restore", missing_means_not_found=True) from None


def verify_object(
    cfg: AgentConfig, store: ObjectStore, expected: str, *, identity: Any | None = None
) -> tuple[int, bytes]:
    """Reads the whole stored object once and checks its sha256 before anything touches the database."""
    size = 0

    def check(h: _Hashing) -> None:
        nonlocal size
        size = h.size
        if h.sha.hexdigest() != expected:
            raise AgentError(
                Reason.CHECKSUM_MISMATCH,
                f"stored object sha256 {h.sha.hexdigest()} does not match the manifest's {expected}; "
                "nothing was restored",
                permanent=True,
            )

    head = _read_verified(store, cfg.storage.dump_key, identity=identity, check=check)
    return size, head


def _feed_sql(stdin: IO[bytes], chunks: Iterable[bytes], filt: DatabaseFilter | None) -> int:
    """Feeds decompressed SQL (through the database filter when one is needed) into a mysql client
    and closes its stdin; returns the bytes applied. Both restore paths load through this one loop.
    A client that dies mid-stream ends the feed quietly: its exit code and stderr tell why."""
    applied = 0
    try:
        for chunk in chunks:
            out = filt.feed(chunk) if filt else chunk
            if out:
                stdin.write(out)
                applied += len(out)
        if filt:
            stdin.write(filt.flush())
        stdin.close()
    except BrokenPipeError:
        pass
    return applied


def restore(cfg: AgentConfig) -> dict[str, Any]:
    started = now()
    t0 = time.monotonic()
    store = storage.open_store(cfg.storage)
    manifest = read_manifest(cfg, store)
    expected = str(cfg.restore.get("expectedSha256") or manifest.sha256)
    if manifest.sha256 != expected:
        raise AgentError(
            Reason.CHECKSUM_MISMATCH,
            f"manifest sha256 {manifest.sha256} differs from the Backup's recorded {expected}",
            permanent=True,
        )
    # A wrong or missing key fails here, before any object is read.
    identity = crypto.identity_for(manifest.encryption, cfg.encryption_key)
    if len(manifest.objects) > 1 or manifest.primary.kind != mf.ObjectKind.DUMP:
        return restore_per_table(cfg, store, manifest, started=started, t0=t0, identity=identity)
    if cfg.restore.get("tables"):
        raise AgentError(
            Reason.RESTORE_FAILED,
            "spec.tables needs a backup taken with layout perTable; this one is a single object",
            permanent=True,
        )
    size, head = verify_object(cfg, store, expected, identity=identity)
    declared = manifest.compression
    detected = detect_compression(head)
    if declared != Compression.NONE and detected != declared:
        raise AgentError(
            Reason.CHECKSUM_MISMATCH, f"manifest says {declared} but the object starts like {detected}", permanent=True
        )
    # Fail fast on credentials before streaming anything.
    connect(cfg).close()
    databases = list(cfg.restore.get("databases") or manifest.databases)
    target = cfg.restore.get("target")
    backed_up = list(manifest.databases)
    filt = None
    if sorted(databases) != sorted(backed_up) or target:
        filt = DatabaseFilter(databases, target)
    defaults = write_defaults_file(cfg.db, os.environ.get("TMPDIR", "/tmp"))
    argv = mysql_command(binary=client_binary("mariadb", "mysql"), defaults_file=defaults, db=cfg.db)

    def load() -> int:
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert proc.stdin is not None and proc.stderr is not None
            err = StderrTail(proc.stderr)
            try:
                stored = crypto.maybe_decrypt(store.iter(cfg.storage.dump_key), identity, what=cfg.storage.dump_key)
                stream: Iterator[bytes] = decompress(stored, declared)
                fed = _feed_sql(proc.stdin, stream, filt)
            except AgentError:
                raise
            except Exception as e:
                if _is_storage_error(e):
                    raise errors.from_s3(e, what="restore", missing_means_not_found=True) from None
                raise AgentError(
                    Reason.RESTORE_FAILED, f"cannot decode the backup stream: {e}", permanent=True
                ) from None
            code = proc.wait()
            if code != 0:
                raise _client_error(errors.scrub(err.text(), cfg.secrets), code, what="restore")
            return fed
        except BaseException:
            _kill(proc)
            raise

    try:
        applied = _with_connect_retries(lambda last: load(), tool="mysql")
        if filt and databases and not filt.seen:
            raise AgentError(
                Reason.RESTORE_FAILED, "none of the selected databases was found in the dump", permanent=True
            )
    finally:
        with contextlib.suppress(OSError):
            os.unlink(defaults)
    return res.RestoreResult(
        databases=(target,) if target else tuple(databases),
        source_databases=tuple(databases),
        stored_bytes=size,
        applied_bytes=applied,
        sha256=expected,
        started_at=iso(started),
        completed_at=iso(now()),
        duration_seconds=round(time.monotonic() - t0, 2),
    ).to_dict()


# ----------------------------------------------------------------------------- per-table restore


def _verify_key(store: ObjectStore, o: mf.ManifestObject, *, identity: Any | None = None) -> None:
    def check(h: _Hashing) -> None:
        sha, size = h.sha.hexdigest(), h.size
        if sha != o.sha256 or (o.stored_bytes is not None and size != o.stored_bytes):
            raise AgentError(
                Reason.CHECKSUM_MISMATCH,
                f"stored object {o.key} has sha256 {sha} ({size} bytes), the manifest says "
                f"{o.sha256} ({o.stored_bytes} bytes); nothing was restored",
                permanent=True,
            )

    _read_verified(store, o.key, identity=identity, check=check)


@dataclasses.dataclass(frozen=True)
class Selection:
    """What a restore applies: whole databases (optionally renamed), or only some tables."""

    databases: tuple[str, ...]
    target: str | None
    tables: tuple[tuple[str, str], ...]  # (database, table); empty = every table of `databases`
    rename: bool  # a DatabaseFilter is needed (subset of databases, or a target name)

    def wants(self, o: mf.ManifestObject) -> bool:
        if o.kind != mf.ObjectKind.TABLE:
            return not self.tables  # a table-level restore leaves schema objects alone
        if o.database not in self.databases:
            return False
        return not self.tables or (o.database or "", o.table or "") in self.tables


def _selection(cfg: AgentConfig, manifest: mf.Manifest) -> Selection:
    tables: list[tuple[str, str]] = []
    for t in cfg.restore.get("tables") or []:
        db, _, name = str(t).partition(".")
        tables.append((db, name))
    databases = tuple(cfg.restore.get("databases") or sorted({d for d, _ in tables}) or manifest.databases)
    target = cfg.restore.get("target") or None
    backed_up = {o.database for o in manifest.objects if o.kind == mf.ObjectKind.TABLE} | set(manifest.databases)
    missing = [d for d in databases if d not in backed_up]
    have = {(o.database, o.table) for o in manifest.objects if o.kind == mf.ObjectKind.TABLE}
    missing += [f"{d}.{t}" for d, t in tables if (d, t) not in have]
    if missing:
        raise AgentError(Reason.RESTORE_FAILED, f"not in this backup: {', '.join(missing)}", permanent=True)
    rename = bool(target) or sorted(databases) != sorted(manifest.databases)
    return Selection(databases=databases, target=target, tables=tuple(tables), rename=rename)


class _Applier:
    """Streams stored objects into `mysql` clients, one client per object, and can stop them all."""

    def __init__(
        self,
        cfg: AgentConfig,
        store: ObjectStore,
        manifest: mf.Manifest,
        sel: Selection,
        defaults: str,
        *,
        identity: Any | None = None,
    ) -> None:
        self.cfg, self.store, self.manifest, self.sel = cfg, store, manifest, sel
        self.identity = identity
        self.argv = mysql_command(binary=client_binary("mariadb", "mysql"), defaults_file=defaults, db=cfg.db)
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def apply(self, o: mf.ManifestObject, prefix: bytes = b"") -> int:
        return _with_connect_retries(lambda last: self._apply_once(o, prefix), tool="mysql")

    def _apply_once(self, o: mf.ManifestObject, prefix: bytes) -> int:
        if self.stopped.is_set():
            return 0
        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with self.lock:
            self.procs.add(proc)
        assert proc.stdin is not None and proc.stderr is not None
        err = StderrTail(proc.stderr)
        filt = DatabaseFilter(self.sel.databases, self.sel.target) if self.sel.rename else None
        applied = 0
        try:
            if prefix:
                proc.stdin.write(prefix)
            # Each of the `parallelism` streams holds one read and its decompressed output at a time.
            # 256 KiB reads took the pod peak from 131 to 113-116 MiB but both measured restores with
            # them were slower (noisy shared machine); 1 MiB gave the best measured speed-ups.
            source = crypto.maybe_decrypt(self.store.iter(o.key, chunk=APPLY_CHUNK), self.identity, what=o.key)
            applied = _feed_sql(proc.stdin, decompress(source, self.manifest.compression), filt)
        except BrokenPipeError:
            pass  # mysql died while reading the prefix; its exit code and stderr tell why
        except AgentError:
            _kill(proc)
            raise
        except Exception as e:
            _kill(proc)
            if _is_storage_error(e):
                raise errors.from_s3(e, what="restore", missing_means_not_found=True) from None
            raise AgentError(Reason.RESTORE_FAILED, f"cannot decode {o.key}: {e}", permanent=True) from None
        code = proc.wait()
        with self.lock:
            self.procs.discard(proc)
        if code != 0:
            what = f"restore of {o.database}.{o.table}" if o.table else f"restore ({o.kind})"
            raise _client_error(errors.scrub(err.text(), self.cfg.secrets), code, what=what)
        return applied

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            _kill(p)


def restore_per_table(
    cfg: AgentConfig,
    store: ObjectStore,
    manifest: mf.Manifest,
    *,
    started: dt.datetime,
    t0: float,
    identity: Any | None = None,
) -> dict[str, Any]:
    """Prologue, then the tables over `parallelism` concurrent mysql clients, then the epilogue.

    Every object's sha256 is checked before the first byte reaches the database. A table-level
    restore runs neither prologue nor epilogue (they would drop and re-create the database):
    it creates the database if missing and replaces only the chosen tables.
    """
    asked = int(cfg.restore.get("parallelism") or 0)
    sel = _selection(cfg, manifest)
    chosen = [o for o in manifest.objects if sel.wants(o)]
    verifiers = asked or DEFAULT_RESTORE_PARALLELISM  # reading the store, not loading the server
    with concurrent.futures.ThreadPoolExecutor(max_workers=verifiers, thread_name_prefix="verify") as pool:
        list(pool.map(lambda o: _verify_key(store, o, identity=identity), manifest.objects))
    t_verified = time.monotonic()
    conn = connect(cfg)  # fail fast on credentials before streaming anything
    try:
        parallelism = max(1, asked or default_restore_parallelism(server_cpus(conn)))
    finally:
        conn.close()
    defaults = write_defaults_file(cfg.db, os.environ.get("TMPDIR", "/tmp"))
    applier = _Applier(cfg, store, manifest, sel, defaults, identity=identity)
    applied = 0
    try:
        prologue = [o for o in chosen if o.kind == mf.ObjectKind.PROLOGUE]
        epilogue = [o for o in chosen if o.kind == mf.ObjectKind.EPILOGUE]
        tables = [o for o in chosen if o.kind == mf.ObjectKind.TABLE]
        create = b""
        if sel.tables:
            names = [sel.target] if sel.target else list(sel.databases)
            create = b"".join(
                b"CREATE DATABASE IF NOT EXISTS `" + n.replace("`", "``").encode() + b"`;\n" for n in names
            )
        for o in prologue:
            applied += applier.apply(o)
        # Largest first, so one big table does not start last and run alone at the end.
        tables.sort(key=lambda o: -(o.size_bytes or 0))
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="restore") as pool:
            futures = [pool.submit(applier.apply, o, create) for o in tables]
            try:
                for f in concurrent.futures.as_completed(futures):
                    applied += f.result()
            except BaseException:
                applier.stop()
                for f in futures:
                    f.cancel()
                raise
        for o in epilogue:
            applied += applier.apply(o)
    except BaseException:
        applier.stop()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(defaults)
    LOG.info(
        "verified %d objects in %.2fs; applied %d of them (%d tables, %d streams) in %.2fs",
        len(manifest.objects),
        t_verified - t0,
        len(chosen),
        len([o for o in chosen if o.kind == mf.ObjectKind.TABLE]),
        parallelism,
        time.monotonic() - t_verified,
    )
    restored = (sel.target,) if sel.target else sel.databases
    return res.RestoreResult(
        databases=tuple(restored),
        source_databases=sel.databases,
        stored_bytes=sum(o.stored_bytes or 0 for o in chosen),
        applied_bytes=applied,
        sha256=manifest.sha256,
        started_at=iso(started),
        completed_at=iso(now()),
        duration_seconds=round(time.monotonic() - t0, 2),
        objects_restored=len(chosen),
        parallelism=parallelism,
    ).to_dict()


def restore_to_point(cfg: AgentConfig) -> dict[str, Any]:
    """A restore, followed by a binlog replay when the Restore has a point-in-time target. Every
    segment is downloaded and checked before the dump touches the database."""
    plan = cfg.restore.get("pointInTime")
    if not plan:
        return restore(cfg)
    store = storage.open_store(cfg.storage)
    try:
        prepared = binlog.prepare(cfg, store, plan)
    finally:
        store.close()
    result = restore(cfg)
    replayed = binlog.replay(cfg, prepared, database=plan.get("database"))
    LOG.info("replayed %s transactions up to %s", replayed["replayedTransactions"], replayed["lastGtid"])
    return {**result, **replayed, "completedAt": iso(now())}


# ----------------------------------------------------------------------------- entry point


def write_result(result: dict[str, Any]) -> None:
    text = res.encode(result)
    print(text, flush=True)
    with contextlib.suppress(OSError), open(TERMINATION_LOG, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    if not args or args[0] in ("-h", "--help"):
        print("usage: mysql-backup-agent {backup|restore|archive|version}", file=sys.stderr)
        return 2
    if args[0] in ("version", "--version"):
        print(f"mysql-backup-agent {__version__}")
        return 0
    if args[0] == "archive":
        interrupt.install()
        cfg = load()
        LOG.info("binlog archiver starting (agent %s) for %s:%d", __version__, cfg.db.host, cfg.db.port)
        with contextlib.suppress(interrupt.Terminated):
            store = storage.open_store(cfg.storage)
            try:
                binlog.archive(cfg, connect=lambda: connect(cfg), store=store)
            finally:
                store.close()
        return 0
    if args[0] not in ("backup", "restore"):
        print(f"unknown command {args[0]!r}", file=sys.stderr)
        return 2
    interrupt.install()
    tune_malloc(SETTINGS if args[0] == "restore" else BACKUP_SETTINGS)  # see agent/memory.py
    cfg = load()
    op = args[0]
    LOG.info("%s starting (agent %s) for %s:%d", op, __version__, cfg.db.host, cfg.db.port)
    try:
        result = backup(cfg) if op == "backup" else restore_to_point(cfg)
    except AgentError as e:
        msg = errors.scrub(e.message, cfg.secrets)
        LOG.error("%s failed: %s: %s", op, e.reason, msg)
        write_result(res.Failure(operation=op, reason=str(e.reason), message=msg).to_dict())
        return 2 if e.permanent else 1
    except interrupt.Terminated:
        msg = f"{op} was stopped by SIGTERM (pod deleted or evicted); nothing partial was published"
        write_result(res.Failure(operation=op, reason=str(Reason.INTERRUPTED), message=msg).to_dict())
        return 1
    except Exception as e:
        msg = errors.scrub(f"{type(e).__name__}: {e}", cfg.secrets)
        LOG.error("%s failed unexpectedly: %s", op, msg)
        reason = Reason.DUMP_FAILED if op == "backup" else Reason.RESTORE_FAILED
        write_result(res.Failure(operation=op, reason=str(reason), message=msg).to_dict())
        return 1
    LOG.info("%s completed in %.1fs", op, result.get("durationSeconds", 0))
    write_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
