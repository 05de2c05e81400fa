"""Recoverable windows, gaps and restore plans: pure functions over the binlog index and the
policy's completed full backups.

A window starts at a full backup and runs through the unbroken chain of archived segments that
follows the backup's binlog position: the same server, consecutive file numbers, no recorded gap.
It ends at the last event of the last segment of that chain. Several backups on one chain share
one window (from the oldest of them). Nothing here guesses: a segment that is not archived, or a
gap, ends a window, so a target there is refused instead of being restored incompletely.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .contract.binlog import Gap, Index, Segment, chain_order, digest

REFUSED = "TargetNotRecoverable"


@dataclass(frozen=True)
class FullBackup:
    """What a point-in-time restore needs of a completed Backup (from its status)."""

    name: str
    completed: int  # epoch seconds
    file: str
    position: int
    gtid: str | None = None


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    backups: tuple[str, ...]
    segments: tuple[Segment, ...]
    ends_at_gap: Gap | None = None

    def to_status(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "from": iso(self.start),
            "to": iso(self.end),
            "fullBackups": list(self.backups),
            "segments": len(self.segments),
            "firstFile": self.segments[0].file,
            "lastFile": self.segments[-1].file,
        }
        if self.ends_at_gap is not None:
            d["endsAtGap"] = self.ends_at_gap.reason
        return d


@dataclass(frozen=True)
class Plan:
    backup: str
    segments: tuple[Segment, ...]
    start_position: int
    stop_time: int | None  # replay events strictly before this epoch second
    stop_gtid: str | None  # or strictly before this GTID's transaction

    def to_status(self) -> dict[str, Any]:
        """Compact whatever the number of segments: the first and last key, the count and a
        fingerprint; the restore Job reads the list itself from the archive's index."""
        return {
            "backup": self.backup,
            "firstSegment": self.segments[0].key,
            "lastSegment": self.segments[-1].key,
            "segmentCount": len(self.segments),
            "segmentsDigest": digest(self.segments),
            "startPosition": self.start_position,
            "stopTime": iso(self.stop_time) if self.stop_time is not None else None,
            "stopGtid": self.stop_gtid,
        }


class NotRecoverable(ValueError):
    """The target lies outside every recoverable window. The message says why, for the user."""


def iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str) -> int:
    """Whole epoch seconds of an RFC 3339 time (fractions are dropped: binlog times are seconds)."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone offset (RFC 3339 needs Z or ±hh:mm)")
    return int(t.timestamp())


def _follows(prev: Segment, nxt: Segment, gaps: Sequence[Gap]) -> bool:
    if nxt.server_id != prev.server_id or nxt.sequence != prev.sequence + 1 or nxt.created < prev.created:
        return False
    return not any(g.after == prev.ident for g in gaps)


def _ordered(index: Index) -> list[Segment]:
    return chain_order(index.segments)


def chain_from(index: Index, start: Segment) -> tuple[list[Segment], Gap | None]:
    """The unbroken run of segments from `start`, and the gap that ends it (if one is recorded)."""
    ordered = _ordered(index)
    chain = [start]
    for seg in ordered[ordered.index(start) + 1 :]:
        if _follows(chain[-1], seg, index.gaps):
            chain.append(seg)
        elif seg.server_id == chain[-1].server_id and seg.sequence == chain[-1].sequence:
            continue  # the same file archived twice cannot happen with content keys; be safe anyway
        elif seg.created >= chain[-1].created:
            break
    gap = next((g for g in index.gaps if g.after == chain[-1].ident), None)
    return chain, gap


def segment_of(index: Index, backup: FullBackup) -> Segment | None:
    """The archived segment holding the backup's binlog position: the newest file of that name
    created before the backup completed."""
    found = [s for s in index.segments if s.file == backup.file and s.created <= backup.completed]
    return max(found, key=lambda s: s.created) if found else None


def windows(index: Index, backups: Sequence[FullBackup]) -> list[Window]:
    by_end: dict[str, Window] = {}
    for b in sorted(backups, key=lambda b: b.completed):
        first = segment_of(index, b)
        if first is None:
            continue
        chain, gap = chain_from(index, first)
        end = max((s.last_time or 0) for s in chain)
        if end < b.completed:
            end = b.completed
        key = chain[-1].ident
        w = by_end.get(key)
        if w is None:
            by_end[key] = Window(start=b.completed, end=end, backups=(b.name,), segments=tuple(chain), ends_at_gap=gap)
        else:
            by_end[key] = Window(
                start=w.start, end=w.end, backups=(*w.backups, b.name), segments=w.segments, ends_at_gap=gap
            )
    return sorted(by_end.values(), key=lambda w: w.start)


def _gtid_parts(gtid: str) -> tuple[int, int, int]:
    domain, server, seq = gtid.strip().split("-")
    return int(domain), int(server), int(seq)


def _seq_range(seg: Segment, domain: int) -> tuple[int, int] | None:
    if not seg.first_gtid or not seg.last_gtid:
        return None
    d1, _, s1 = _gtid_parts(seg.first_gtid)
    d2, _, s2 = _gtid_parts(seg.last_gtid)
    if d1 != domain or d2 != domain:
        return None
    return s1, s2


def plan(
    index: Index,
    backups: Sequence[FullBackup],
    *,
    time: int | None = None,
    gtid: str | None = None,
    base: str | None = None,
) -> Plan:
    """The full backup and the segments to replay for a target time (exclusive) or GTID (its
    transaction excluded). `base` forces a backup (a Restore that names both a backupRef and a
    target). Raises NotRecoverable with a user-facing reason."""
    if (time is None) == (gtid is None):
        raise ValueError("exactly one of time and gtid")
    done = sorted(backups, key=lambda b: b.completed)
    if base is not None:
        done = [b for b in done if b.name == base]
        if not done:
            raise NotRecoverable(f'Backup "{base}" is not a completed full backup with a binlog position')
    if time is not None:
        candidates = [b for b in done if b.completed <= time]
        if not candidates:
            raise NotRecoverable(f"no full backup completed before {iso(time)}")
    else:
        assert gtid is not None
        try:
            domain, _, seq = _gtid_parts(gtid)
        except ValueError:
            raise NotRecoverable(f"{gtid!r} is not a MariaDB GTID (domain-server-sequence)") from None
        candidates = [b for b in done if b.gtid and _below(b.gtid, domain, seq)]
        if not candidates:
            raise NotRecoverable(f"no full backup was taken before GTID {gtid}")
    b = candidates[-1]
    first = segment_of(index, b)
    if first is None:
        raise NotRecoverable(
            f'the binlog {b.file} holding full backup "{b.name}"\'s position is not archived '
            "(archiving started later, or it was purged first)"
        )
    chain, gap = chain_from(index, first)
    why_end = f"a gap ({gap.reason}: {gap.message})" if gap is not None else "the end of what is archived so far"
    if time is not None:
        end = max(s.last_time or 0 for s in chain)
        if time > end:
            raise NotRecoverable(
                f'{iso(time)} is after {iso(end)}, where the window from full backup "{b.name}" ends at {why_end}'
            )
        used = []
        for s in chain:
            used.append(s)
            if (s.last_time or 0) >= time:
                break
        return Plan(backup=b.name, segments=tuple(used), start_position=b.position, stop_time=time, stop_gtid=None)
    used = []
    for s in chain:
        used.append(s)
        r = _seq_range(s, domain)
        if r and r[0] <= seq <= r[1]:
            return Plan(backup=b.name, segments=tuple(used), start_position=b.position, stop_time=None, stop_gtid=gtid)
    raise NotRecoverable(f'GTID {gtid} is not in the chain after full backup "{b.name}" (it ends at {why_end})')


def _below(position: str, domain: int, seq: int) -> bool:
    """A backup's GTID position (a comma list, one per domain) is before `seq` in `domain`."""
    for part in position.split(","):
        try:
            d, _, s = _gtid_parts(part)
        except ValueError:
            continue
        if d == domain:
            return s < seq
    return False


def gap_status(gaps: Sequence[Gap]) -> list[dict[str, Any]]:
    out = []
    for g in gaps:
        d: dict[str, Any] = {"reason": g.reason, "after": g.after, "before": g.before, "message": g.message}
        if g.after_time is not None:
            d["from"] = iso(g.after_time)
        if g.before_time is not None:
            d["to"] = iso(g.before_time)
        out.append(d)
    return out


def needed_segments(index: Index, kept: Sequence[FullBackup]) -> set[str]:
    """Keys of every segment a kept full backup's window uses: retention must not delete these."""
    keys: set[str] = set()
    for w in windows(index, kept):
        keys.update(s.key for s in w.segments)
    return keys


def retention_floor(index: Index, kept: Sequence[FullBackup]) -> int | None:
    """The creation time of the oldest segment a kept full backup starts from: every segment
    created before it is needed by no kept backup. None (keep everything) when no kept backup
    has an archived segment: never delete on a guess."""
    firsts = [s for b in kept if (s := segment_of(index, b)) is not None]
    return min(s.created for s in firsts) if firsts else None


def expendable_segments(index: Index, kept: Sequence[FullBackup]) -> list[Segment]:
    """Segments older than the oldest kept backup's segment and used by no kept window."""
    floor = retention_floor(index, kept)
    if floor is None:
        return []
    needed = needed_segments(index, kept)
    return [s for s in index.segments if s.key not in needed and s.created < floor]
