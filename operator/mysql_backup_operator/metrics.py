"""Prometheus metrics. Names follow the `mysqlbackup_` prefix and Prometheus base units.

Gauges describe the current state (refreshed by the policy reconciler from the Backups
themselves, so they are right after an operator restart); counters count events this process
observed (failures, restores), as Prometheus counters do.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, start_http_server

LABELS = ("namespace", "policy")

LAST_SUCCESS = Gauge(
    "mysqlbackup_backup_last_success_timestamp_seconds",
    "Completion time of the newest successful backup of the policy",
    LABELS,
)
AGE = Gauge(
    "mysqlbackup_backup_age_seconds",
    "Seconds since the newest successful backup of the policy completed",
    LABELS,
)
DURATION = Gauge("mysqlbackup_backup_duration_seconds", "Duration of the newest successful backup", LABELS)
DUMP_BYTES = Gauge("mysqlbackup_backup_dump_bytes", "Uncompressed size of the newest successful backup", LABELS)
STORED_BYTES = Gauge(
    "mysqlbackup_backup_stored_bytes", "Stored (compressed) size of the newest successful backup", LABELS
)
TOTAL_STORED = Gauge("mysqlbackup_policy_stored_bytes", "Stored bytes of all completed backups of the policy", LABELS)
BACKUPS = Gauge("mysqlbackup_policy_backups", "Backups of the policy by phase", (*LABELS, "phase"))
FAILURES = Counter("mysqlbackup_backup_failures", "Failed backups by reason", (*LABELS, "reason"))
RESTORES = Counter("mysqlbackup_restores", "Finished restores by result", ("namespace", "result"))
BINLOG_LAST = Gauge(
    "mysqlbackup_binlog_last_archived_timestamp_seconds", "Time of the newest archived binlog event", LABELS
)
BINLOG_SEGMENTS = Gauge("mysqlbackup_binlog_segments", "Archived binlog segments of the policy", LABELS)
QUEUE = Gauge("mysqlbackup_queue_length", "Operations waiting for the database lock", ("database",))


def serve(port: int) -> None:
    start_http_server(port)


def observe_policy(
    *,
    namespace: str,
    policy: str,
    last_success: float | None,
    duration: float | None,
    dump_bytes: int | None,
    stored_bytes: int | None,
    total_stored: int,
    phases: dict[str, int],
) -> None:
    labels = (namespace, policy)
    if last_success is not None:
        LAST_SUCCESS.labels(*labels).set(last_success)
        AGE.labels(*labels).set(max(0.0, time.time() - last_success))
    if duration is not None:
        DURATION.labels(*labels).set(duration)
    if dump_bytes is not None:
        DUMP_BYTES.labels(*labels).set(dump_bytes)
    if stored_bytes is not None:
        STORED_BYTES.labels(*labels).set(stored_bytes)
    TOTAL_STORED.labels(*labels).set(total_stored)
    for phase in ("Pending", "Running", "Completed", "Failed"):
        BACKUPS.labels(*labels, phase).set(phases.get(phase, 0))


def backup_failed(*, namespace: str, policy: str, reason: str) -> None:
    FAILURES.labels(namespace, policy, reason).inc()


def restore_finished(*, namespace: str, result: str) -> None:
    RESTORES.labels(namespace, result).inc()


def queue_length(database: str, n: int) -> None:
    QUEUE.labels(database).set(n)


def binlog_archived(*, namespace: str, policy: str, timestamp: int, segments: int) -> None:
    BINLOG_LAST.labels(namespace, policy).set(timestamp)
    BINLOG_SEGMENTS.labels(namespace, policy).set(segments)
