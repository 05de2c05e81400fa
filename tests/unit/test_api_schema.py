"""The typed models and crds/*.yaml must agree: a status field the operator writes but the schema
does not declare is silently pruned by the apiserver, an enum value the schema lacks makes every
status patch fail, and a default the parser assumes differently from the schema changes behaviour
between a spec that spells a value out and one that leaves it to the apiserver.

The CRDs are rendered from the models (hack/gen-crds.py); these tests fail when the committed
files are stale, and check what generation cannot: that the transitions write declared fields
only, and that the schema's defaults are the parser's defaults."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from mysql_backup_operator.api import Compression, Reason, backup, crds, policy, restore
from mysql_backup_operator.api.backup import BackupPhase, BackupStatus, DeletionPolicy, Trigger
from mysql_backup_operator.api.restore import RestorePhase, RestoreStatus
from mysql_backup_operator.api.schema import apply_defaults, from_wire
from mysql_backup_operator.controllers.cache import BackupRow
from mysql_backup_operator.controllers.policy import PolicyController
from mysql_backup_operator.retention import parse_retention

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
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
    started = from_wire(BackupStatus, start)
    patches = [
        BackupStatus().running(job_name="j", generation=1, now=NOW),
        started.completed(result=RESULT, generation=1, now=NOW),
        started.failed(reason=Reason.DUMP_FAILED, message="m", generation=1, now=NOW),
        BackupStatus().queued(holder="h", position=1, reason=Reason.DATABASE_BUSY, generation=1, now=NOW) or {},
        BackupStatus().pending(message="m", generation=1) or {},
    ]
    written = {k for p in patches for k in p} | {"storage"}
    assert written <= status_fields("backups"), written - status_fields("backups")


def test_every_restore_status_transition_writes_declared_fields_only() -> None:
    started = RestoreStatus(started_at="2026-01-01T00:00:00Z", pre_restore_backup="p")
    patches = [
        RestoreStatus().backing_up(pre_restore="p", generation=1, now=NOW),
        started.restoring(job_name="j", databases=("d",), generation=1),
        started.completed(generation=1, now=NOW),
        RestoreStatus().failed(reason=Reason.RESTORE_FAILED, message="m", generation=1, now=NOW),
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


def test_committed_crds_are_the_generator_output() -> None:
    for name, text in crds.rendered().items():
        assert (CRDS / name).read_text() == text, f"crds/{name} is stale or edited by hand: run `make crds`"


MINIMAL_POLICY: dict[str, Any] = {
    "database": {"host": "db", "user": "u", "passwordSecretRef": {"name": "pw"}, "tls": {"caSecretRef": {"name": "c"}}},
    "storage": {"s3": {"bucket": "bkt", "credentialsSecretRef": {"name": "s3"}, "caBundleSecretRef": {"name": "ca"}}},
    "retention": {},
}


def test_the_schema_defaults_are_the_parsers_defaults() -> None:
    """A spec as the apiserver stores it (defaults filled in) parses to the same model as the bare
    spec: the parser's fallbacks and the CRD's defaults are the same constants."""
    defaulted = apply_defaults(policy.SPEC_SCHEMA, MINIMAL_POLICY)
    assert defaulted != MINIMAL_POLICY  # the schema did fill something in
    bare = policy.parse_policy(name="p", namespace="n", spec=MINIMAL_POLICY)
    assert policy.parse_policy(name="p", namespace="n", spec=defaulted) == bare
    assert parse_retention(defaulted["retention"]).keep_failed == parse_retention({}).keep_failed
    assert defaulted["timeZone"] == policy.DEFAULT_TIME_ZONE
    assert defaulted["storage"]["syncIntervalSeconds"] == policy.DEFAULT_SYNC_INTERVAL_SECONDS
    b = {"policyRef": {"name": "p"}}
    assert backup.parse_backup(apply_defaults(backup.SPEC_SCHEMA, b)) == backup.parse_backup(b)
    r = {"backupRef": {"name": "b"}}
    assert restore.parse_restore(apply_defaults(restore.SPEC_SCHEMA, r)) == restore.parse_restore(r)


def test_every_status_field_of_the_schema_has_a_model_field_and_back() -> None:
    """The status schemas are rendered from the status models; both directions, by name."""
    from mysql_backup_operator.api.schema import wire_fields

    for plural, model in (
        ("backups", BackupStatus),
        ("restores", RestoreStatus),
        ("backuppolicies", policy.PolicyStatus),
    ):
        assert status_fields(plural) == set(wire_fields(model)), plural
