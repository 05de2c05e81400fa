"""The Python side of the API and crds/*.yaml must agree: a status field the operator writes but the
schema does not declare is silently pruned by the apiserver, and an enum value the schema lacks
makes every status patch fail. This test fails when they drift apart."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from mysql_backup_operator import conditions as c
from mysql_backup_operator.api import BackupPhase, Compression, DeletionPolicy, Reason, RestorePhase, Trigger
from mysql_backup_operator.controllers.cache import BackupRow
from mysql_backup_operator.controllers.policy import PolicyController

CRDS = Path(__file__).resolve().parents[2] / "crds"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def schema(plural: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / f"{plural}.yaml").read_text())
    return dict(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"])


def status_fields(plural: str) -> set[str]:
    return set(schema(plural)["status"]["properties"])


RESULT = {
    "location": "s3://b/k",
    "manifestLocation": "s3://b/m",
    "sizeBytes": 1,
    "storedBytes": 1,
    "sha256": "0" * 64,
    "compression": "zstd",
    "tableCount": 1,
    "databases": ["d"],
    "serverVersion": "10.11",
    "binlog": {"file": "x", "position": 4},
}


def test_every_backup_status_transition_writes_declared_fields_only() -> None:
    start: dict[str, Any] = {"startedAt": "2026-01-01T00:00:00Z"}
    patches = [
        c.backup_running({}, job_name="j", generation=1, now=NOW),
        c.backup_completed(start, result=RESULT, generation=1, now=NOW),
        c.failed(start, reason=Reason.DUMP_FAILED, message="m", generation=1, now=NOW),
        c.queued({}, holder="h", position=1, reason=Reason.DATABASE_BUSY, generation=1, now=NOW) or {},
        c.pending({}, message="m", generation=1) or {},
    ]
    written = {k for p in patches for k in p} | {"storage"}
    assert written <= status_fields("backups"), written - status_fields("backups")


def test_every_restore_status_transition_writes_declared_fields_only() -> None:
    patches = [
        c.restore_backing_up({}, pre_restore="p", generation=1, now=NOW),
        c.restore_restoring(
            {"startedAt": "2026-01-01T00:00:00Z"}, job_name="j", databases=("d",), generation=1, now=NOW
        ),
        c.restore_completed({"startedAt": "2026-01-01T00:00:00Z"}, generation=1, now=NOW),
        c.failed({}, reason=Reason.RESTORE_FAILED, message="m", generation=1, now=NOW),
    ]
    written = {k for p in patches for k in p}
    assert written <= status_fields("restores"), written - status_fields("restores")


def test_policy_roll_up_writes_declared_fields_only() -> None:
    rows = [
        BackupRow(name="a", namespace="n", uid="u", created="2026-01-01T00:00:00Z", policy="p", trigger="manual",
                  phase="Completed", completed_at="2026-01-01T00:01:00Z", stored_bytes=5),
        BackupRow(name="b", namespace="n", uid="v", created="2026-01-02T00:00:00Z", policy="p", trigger="scheduled",
                  phase="Failed", reason="DumpFailed"),
    ]  # fmt: skip
    written = set(PolicyController._rollup(rows))
    written |= {"observedGeneration", "reason", "message", "conditions", "nextScheduleTime", "lastScheduleTime"}
    written |= {"missedRuns", "skippedRuns", "lastSkippedTime", "lastPrunedAfter", "lastPruneTime", "prunedCount"}
    written |= {"lastSyncTime", "lastSyncError"}
    assert written <= status_fields("backuppolicies"), written - status_fields("backuppolicies")


def test_enums_match_the_schemas() -> None:
    assert set(schema("backups")["status"]["properties"]["phase"]["enum"]) == {p.value for p in BackupPhase}
    assert set(schema("restores")["status"]["properties"]["phase"]["enum"]) == {p.value for p in RestorePhase}
    assert set(schema("backups")["spec"]["properties"]["trigger"]["enum"]) == {t.value for t in Trigger}
    assert set(schema("backups")["spec"]["properties"]["deletionPolicy"]["enum"]) == {d.value for d in DeletionPolicy}
    backup_spec = schema("backuppolicies")["spec"]["properties"]["backup"]["properties"]
    assert set(backup_spec["compression"]["enum"]) == {x.value for x in Compression}
