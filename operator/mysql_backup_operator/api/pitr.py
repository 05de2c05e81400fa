"""Point-in-time recovery in the API: the BackupPolicy's `spec.pointInTimeRecovery` and its status
block, and the Restore's `spec.pointInTime`/`spec.policyRef` and its recorded plan. Imported by
api.policy and api.restore (narrow hooks), so PITR's schema lives in one place."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .common import SpecError
from .schema import obj, prop, rule, wire

DEFAULT_SEGMENT_SECONDS = 60
DEFAULT_POLL_SECONDS = 5
DEFAULT_CHECK_INTERVAL_SECONDS = 30
MAX_SEGMENT_SECONDS = 86400
MAX_POLL_SECONDS = 3600
MIN_CHECK_INTERVAL_SECONDS = 5
GTID_PATTERN = "^[0-9]+-[0-9]+-[0-9]+$"
_GTID = re.compile(GTID_PATTERN)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class PitrSpec:
    """spec.pointInTimeRecovery: the binlog archiver's settings (opt-in)."""

    enabled: bool
    segment_seconds: int = DEFAULT_SEGMENT_SECONDS
    poll_seconds: int = DEFAULT_POLL_SECONDS
    check_interval_seconds: int = DEFAULT_CHECK_INTERVAL_SECONDS


def parse_pitr(raw: Mapping[str, Any] | None) -> PitrSpec | None:
    if not raw or not raw.get("enabled"):
        return None
    p = PitrSpec(
        enabled=True,
        segment_seconds=int(raw.get("segmentSeconds", DEFAULT_SEGMENT_SECONDS)),
        poll_seconds=int(raw.get("pollSeconds", DEFAULT_POLL_SECONDS)),
        check_interval_seconds=int(raw.get("checkIntervalSeconds", DEFAULT_CHECK_INTERVAL_SECONDS)),
    )
    if (
        not 1 <= p.segment_seconds <= MAX_SEGMENT_SECONDS
        or not 1 <= p.poll_seconds <= MAX_POLL_SECONDS
        or p.check_interval_seconds < MIN_CHECK_INTERVAL_SECONDS
    ):
        raise SpecError(
            f"spec.pointInTimeRecovery: segmentSeconds 1-{MAX_SEGMENT_SECONDS}, pollSeconds 1-{MAX_POLL_SECONDS}, "
            f"checkIntervalSeconds {MIN_CHECK_INTERVAL_SECONDS}+"
        )
    return p


POLICY_SPEC_SCHEMA = obj(
    {
        "enabled": prop("boolean", default=False),
        "segmentSeconds": prop(
            "integer",
            description=(
                "Rotate the open binlog (FLUSH BINARY LOGS) once it holds events this old; bounds the recovery point."
            ),
            minimum=1,
            maximum=MAX_SEGMENT_SECONDS,
            default=DEFAULT_SEGMENT_SECONDS,
        ),
        "pollSeconds": prop(
            "integer",
            description="How often the archiver looks for closed binlogs.",
            minimum=1,
            maximum=MAX_POLL_SECONDS,
            default=DEFAULT_POLL_SECONDS,
        ),
        "checkIntervalSeconds": prop(
            "integer",
            description="How often the operator re-reads the archive's index for the policy status.",
            minimum=MIN_CHECK_INTERVAL_SECONDS,
            maximum=MAX_POLL_SECONDS,
            default=DEFAULT_CHECK_INTERVAL_SECONDS,
        ),
    },
    rules=[
        rule(
            "!has(self.segmentSeconds) || !has(self.pollSeconds) || self.pollSeconds <= self.segmentSeconds",
            "pollSeconds must not exceed segmentSeconds",
        )
    ],
    description=(
        "Archive the server's binlogs continuously (one archiver Deployment per policy) so that a Restore can "
        "recover to any moment after a full backup. The database user needs REPLICATION SLAVE, BINLOG MONITOR "
        "and RELOAD."
    ),
)


@dataclass(frozen=True)
class WindowStatus:
    from_: str | None = wire(format="date-time")
    to: str | None = wire(format="date-time")
    full_backups: tuple[str, ...] = wire(default=())
    segments: int | None = wire()
    first_file: str | None = wire()
    last_file: str | None = wire()
    ends_at_gap: str | None = wire(description="The reason of the gap that ends this window.")


@dataclass(frozen=True)
class GapStatus:
    reason: str | None = wire()
    after: str | None = wire()
    before: str | None = wire()
    message: str | None = wire()
    from_: str | None = wire(format="date-time")
    to: str | None = wire(format="date-time")


@dataclass(frozen=True)
class PitrStatus:
    """status.pointInTimeRecovery of a BackupPolicy: what the archive holds, as windows and gaps."""

    archiver: str | None = wire()
    segments: int | None = wire()
    last_archived_time: str | None = wire(format="date-time")
    retain_from: str | None = wire(format="date-time")
    message: str | None = wire()
    windows: tuple[WindowStatus, ...] = wire(default=())
    gaps: tuple[GapStatus, ...] = wire(default=())


@dataclass(frozen=True)
class PointInTimeStatus:
    """status.pointInTime of a Restore: the plan, fixed at its first step."""

    backup: str | None = wire()
    policy: str | None = wire()
    database: str | None = wire()
    start_position: int | None = wire(format="int64")
    stop_time: str | None = wire(format="date-time")
    stop_gtid: str | None = wire()
    first_segment: str | None = wire(description="Storage key of the first binlog segment replayed.")
    last_segment: str | None = wire(description="Storage key of the last binlog segment replayed.")
    segment_count: int | None = wire()
    segments_digest: str | None = wire(description="sha256 over the planned segments' keys and sha256s.")


@dataclass(frozen=True)
class PointInTimeTarget:
    policy: str
    time: str | None
    gtid: str | None


def parse_target(spec: Mapping[str, Any], *, has_backup: bool, selects: bool) -> PointInTimeTarget | None:
    """spec.pointInTime and spec.policyRef of a Restore; None when it is not a point-in-time one.
    `selects`: the Restore also names target, databases or tables (not allowed with a point)."""
    pit = spec.get("pointInTime") or {}
    time, gtid = pit.get("time") or None, pit.get("gtid") or None
    policy = str((spec.get("policyRef") or {}).get("name") or "")
    if not time and not gtid:
        if policy:
            raise SpecError("spec.policyRef is only for point-in-time restores (spec.pointInTime)")
        return None
    if time and gtid:
        raise SpecError("spec.pointInTime: set either time or gtid, not both")
    if not has_backup and not policy:
        raise SpecError("a point-in-time restore needs spec.policyRef (or spec.backupRef)")
    if selects:
        raise SpecError(
            "a point-in-time restore restores the whole backup: spec.target, spec.databases and "
            "spec.tables cannot be used with spec.pointInTime"
        )
    if time and not _RFC3339.match(str(time)):
        raise SpecError(f"spec.pointInTime.time {time!r} is not an RFC 3339 time with a zone")
    if gtid and not _GTID.match(str(gtid)):
        raise SpecError(f"spec.pointInTime.gtid {gtid!r} is not a GTID (domain-server-sequence)")
    return PointInTimeTarget(policy=policy, time=str(time) if time else None, gtid=str(gtid) if gtid else None)


RESTORE_SPEC_PROPERTIES = {
    "policyRef": obj(
        {"name": prop("string", minLength=1, maxLength=253)},
        required=["name"],
        description="With pointInTime, the policy whose full backups and archived binlogs are used.",
    ),
    "pointInTime": obj(
        {
            "time": prop(
                "string",
                format="date-time",
                description="RFC 3339; events strictly before this whole second are replayed.",
            ),
            "gtid": prop(
                "string",
                description="A MariaDB GTID (domain-server-sequence); its transaction is not replayed.",
                pattern=GTID_PATTERN,
                maxLength=64,
            ),
        },
        rules=[rule("has(self.time) != has(self.gtid)", "set exactly one of time and gtid")],
        description=(
            "Recover to a moment: the newest full backup before it is restored, then the archived binlogs are "
            "replayed up to it, exclusively. Needs spec.pointInTimeRecovery on the policy."
        ),
    ),
}
RESTORE_SPEC_RULES = [
    rule(
        "has(self.backupRef) || (has(self.pointInTime) && has(self.policyRef))",
        "set backupRef, or pointInTime with policyRef (the operator then picks the backup)",
    ),
    rule("!has(self.policyRef) || has(self.pointInTime)", "policyRef is only for point-in-time restores (pointInTime)"),
    rule(
        "!has(self.pointInTime) || (!has(self.target) && !has(self.databases) && !has(self.tables))",
        "a point-in-time restore restores the whole backup (no target, databases or tables)",
    ),
]
