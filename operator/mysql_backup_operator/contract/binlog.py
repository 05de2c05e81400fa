"""Archived binlog segments: the event-header parser, the segment entry and index formats, and keys.

Shared by the archiver and the restore (agent side) and by the operator (which reads the index to
show windows and plan restores). Pure: bytes and dicts in, frozen dataclasses out.

Storage layout, under the policy's folder (`<prefix>/<namespace>/<policy>`):

    binlog/<serverId>/<file>.<created>          the raw binlog file (a segment)
    binlog/<serverId>/<file>.<created>.json     its entry: written only after the segment is stored
    binlog/gaps/<after>--<before>.json          a detected gap
    binlog/index.json                           every entry and gap in one document (a cache)

`<created>` is the epoch second in the file's format-description event, so the key follows from the
file's content: a re-upload after a crash overwrites the same object with the same bytes, and a
file name reused after `RESET MASTER` gets a different key.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server id, event size, next position, flags
QUERY_EVENT = 2
ROTATE_EVENT = 4
FORMAT_DESCRIPTION_EVENT = 15
TABLE_MAP_EVENT = 19
GTID_EVENT = 162  # MariaDB
INDEX_NAME = "index.json"
RETENTION_NAME = "retention.json"
INDEX_VERSION = 1
_FILE_SEQ = re.compile(r"^(.*)\.(\d+)$")


class BinlogError(ValueError):
    """The bytes are not a binlog this parser understands."""


@dataclass(frozen=True)
class Transaction:
    """One GTID event: where it starts, its GTID, its time, and the databases its events touch."""

    position: int
    gtid: str
    time: int
    databases: frozenset[str]


@dataclass(frozen=True)
class Parsed:
    server_id: int | None
    created: int
    first_time: int | None
    last_time: int | None
    transactions: tuple[Transaction, ...]

    @property
    def first_gtid(self) -> str | None:
        return self.transactions[0].gtid if self.transactions else None

    @property
    def last_gtid(self) -> str | None:
        return self.transactions[-1].gtid if self.transactions else None


def _query_db(body: bytes) -> str:
    # Post-header: thread id 4, exec time 4, db length 1, error code 2, status vars length 2.
    if len(body) < 13:
        return ""
    db_len = body[8]
    status_len = struct.unpack_from("<H", body, 11)[0]
    start = 13 + status_len
    return body[start : start + db_len].decode(errors="replace")


def _table_map_db(body: bytes) -> str:
    # Post-header: table id 6, flags 2; then db length 1, db, NUL, ...
    if len(body) < 9:
        return ""
    db_len = body[8]
    return body[9 : 9 + db_len].decode(errors="replace")


def events(data: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
    """(position, timestamp, type, server id, body) of every event; the body excludes the header."""
    if data[: len(MAGIC)] != MAGIC:
        raise BinlogError("not a binlog file (bad magic)")
    pos = len(MAGIC)
    while pos + HEADER.size <= len(data):
        ts, kind, server_id, size, _, _ = HEADER.unpack_from(data, pos)
        if size < HEADER.size or pos + size > len(data):
            raise BinlogError(f"truncated event at position {pos}")
        yield pos, ts, kind, server_id, data[pos + HEADER.size : pos + size]
        pos += size
    if pos != len(data):
        raise BinlogError(f"trailing bytes after position {pos}")


def parse(data: bytes) -> Parsed:
    """The facts an index entry records, and every transaction (for replay planning and checks)."""
    server_id: int | None = None
    created = 0
    first: int | None = None
    last: int | None = None
    txs: list[Transaction] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        if current is not None:
            dbs, qdbs = current.pop("dbs"), current.pop("qdbs")
            txs.append(Transaction(databases=frozenset(dbs or qdbs), **current))

    for pos, ts, kind, sid, body in events(data):
        if kind == FORMAT_DESCRIPTION_EVENT and not created:
            created = ts
            server_id = sid
        if ts:
            first = ts if first is None else first
            last = ts
        if kind == GTID_EVENT and len(body) >= 12:
            close()
            seq, domain = struct.unpack_from("<QI", body, 0)
            current = {"position": pos, "gtid": f"{domain}-{sid}-{seq}", "time": ts, "dbs": set(), "qdbs": set()}
            server_id = sid
        elif current is not None and kind == TABLE_MAP_EVENT:
            current["dbs"].add(_table_map_db(body))
        elif current is not None and kind == QUERY_EVENT:
            db = _query_db(body)
            if db:
                current["qdbs"].add(db)
    close()
    return Parsed(server_id=server_id, created=created, first_time=first, last_time=last, transactions=tuple(txs))


def file_sequence(file: str) -> tuple[str, int]:
    """("mysql-bin", 7) for "mysql-bin.000007"."""
    m = _FILE_SEQ.match(file)
    if not m:
        raise BinlogError(f"unexpected binlog file name {file!r}")
    return m.group(1), int(m.group(2))


def binlog_dir(policy_dir: str) -> str:
    return f"{policy_dir}/binlog"


def segment_key(policy_dir: str, *, server_id: int, file: str, created: int) -> str:
    return f"{binlog_dir(policy_dir)}/{server_id}/{file}.{created}"


def entry_key(segment: str) -> str:
    return f"{segment}.json"


def gap_key(policy_dir: str, gap: Gap) -> str:
    return f"{binlog_dir(policy_dir)}/gaps/{gap.after or 'start'}--{gap.before}.json"


def index_key(policy_dir: str) -> str:
    return f"{binlog_dir(policy_dir)}/{INDEX_NAME}"


def retention_key(policy_dir: str) -> str:
    """Written by the operator: {"before": <created>}; the archiver deletes older segments."""
    return f"{binlog_dir(policy_dir)}/{RETENTION_NAME}"


def _iso(ts: int | None) -> str | None:
    import datetime as dt

    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Segment:
    """One archived binlog file, as its entry JSON records it."""

    key: str
    file: str
    server_id: int
    created: int
    size: int
    sha256: str
    first_time: int | None
    last_time: int | None
    first_gtid: str | None = None
    last_gtid: str | None = None
    transactions: int = 0
    server_uuid: str | None = None  # MySQL only; MariaDB has none (the server id stands for it)

    @property
    def sequence(self) -> int:
        return file_sequence(self.file)[1]

    @property
    def ident(self) -> str:
        """ "<serverId>/<file>.<created>": unique and stable, used in gap records."""
        return f"{self.server_id}/{self.file}.{self.created}"

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        d["firstEventTime"], d["lastEventTime"] = _iso(self.first_time), _iso(self.last_time)
        return {_camel(k): v for k, v in d.items()}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Segment:
        return Segment(
            key=str(d["key"]),
            file=str(d["file"]),
            server_id=int(d["serverId"]),
            created=int(d["created"]),
            size=int(d["size"]),
            sha256=str(d["sha256"]),
            first_time=_opt_int(d.get("firstTime")),
            last_time=_opt_int(d.get("lastTime")),
            first_gtid=d.get("firstGtid"),
            last_gtid=d.get("lastGtid"),
            transactions=int(d.get("transactions") or 0),
            server_uuid=d.get("serverUuid"),
        )


@dataclass(frozen=True)
class Gap:
    """Binlogs between two segments that can never be archived: a recoverable window ends here."""

    after: str | None  # the last segment before the gap (Segment.ident), None at the very start
    before: str  # the first segment (or server file) after it
    reason: str  # BinlogsPurged | ServerChanged | BinlogReset
    message: str
    detected: int = 0
    after_time: int | None = None  # the last event time before the gap
    before_time: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items() if v is not None}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Gap:
        return Gap(
            after=d.get("after"),
            before=str(d["before"]),
            reason=str(d["reason"]),
            message=str(d.get("message") or ""),
            detected=int(d.get("detected") or 0),
            after_time=_opt_int(d.get("afterTime")),
            before_time=_opt_int(d.get("beforeTime")),
        )


@dataclass(frozen=True)
class Index:
    segments: tuple[Segment, ...] = ()
    gaps: tuple[Gap, ...] = ()
    updated: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {
            "version": INDEX_VERSION,
            "updated": self.updated,
            "segments": [s.to_dict() for s in self.segments],
            "gaps": [g.to_dict() for g in self.gaps],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def parse(data: bytes | Mapping[str, Any]) -> Index:
        doc = json.loads(data) if isinstance(data, bytes | str) else data
        if not isinstance(doc, Mapping) or not isinstance(doc.get("segments", []), list):
            raise BinlogError("the binlog index is not an object with a segments list")
        return Index(
            segments=tuple(Segment.from_dict(s) for s in doc.get("segments") or ()),
            gaps=tuple(Gap.from_dict(g) for g in doc.get("gaps") or ()),
            updated=int(doc.get("updated") or 0),
        )


def chain_order(segments: Iterable[Segment]) -> list[Segment]:
    """The order segments were written in: file creation time, then file number."""
    return sorted(segments, key=lambda s: (s.created, s.sequence, s.server_id))


def digest(segments: Sequence[Segment]) -> str:
    """Fingerprint of a replay's segment list (keys and contents), recorded in the plan."""
    return hashlib.sha256("".join(f"{s.key} {s.sha256}\n" for s in segments).encode()).hexdigest()


def select_range(index: Index, *, first: str, last: str, count: int, fingerprint: str) -> list[Segment] | None:
    """The planned run of segments, from `first` to `last` in chain order, if the index still
    holds exactly that run (same count, same keys and sha256s); None otherwise."""
    ordered = chain_order(index.segments)
    keys = [s.key for s in ordered]
    if first not in keys or last not in keys:
        return None
    run = ordered[keys.index(first) : keys.index(last) + 1]
    return run if len(run) == count and digest(run) == fingerprint else None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)
