from __future__ import annotations

import datetime as dt

from mysql_backup_operator.api import Reason
from mysql_backup_operator.api.backup import BackupStatus
from mysql_backup_operator.api.common import iso, set_condition
from mysql_backup_operator.api.schema import from_wire

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    first = set_condition([], type_="Queued", status=True, reason="r", message="m", generation=1, now=T0)
    second = set_condition(first, type_="Queued", status=True, reason="r", message="m2", generation=2, now=T1)
    assert second[0]["lastTransitionTime"] == iso(T0)
    assert second[0]["observedGeneration"] == 2
    third = set_condition(second, type_="Queued", status=False, reason="r", message="m", generation=2, now=T1)
    assert third[0]["lastTransitionTime"] == iso(T1)


def test_queued_patches_only_on_visible_change() -> None:
    p = BackupStatus().queued(holder="Backup ns/a", position=2, reason=Reason.DATABASE_BUSY, generation=1, now=T0)
    assert p is not None and p["phase"] == "Pending" and p["reason"] == "DatabaseBusy"
    assert "Backup ns/a" in p["message"]
    again = from_wire(BackupStatus, p)
    assert again.queued(holder="Backup ns/a", position=2, reason=Reason.DATABASE_BUSY, generation=1, now=T1) is None


def test_completed_and_failed_carry_duration_and_ready_condition() -> None:
    running = from_wire(BackupStatus, BackupStatus().running(job_name="j", generation=1, now=T0))
    done = running.completed(result={"location": "s3://b/k", "sha256": "x", "sizeBytes": 10}, generation=1, now=T1)
    assert done["phase"] == "Completed" and done["durationSeconds"] == 300.0 and done["sha256"] == "x"
    ready = next(x for x in done["conditions"] if x["type"] == "Ready")
    assert ready["status"] == "True"
    bad = running.failed(reason=Reason.AUTHENTICATION_FAILED, message="no", generation=1, now=T1)
    assert bad["phase"] == "Failed" and bad["reason"] == "AuthenticationFailed"


def test_a_status_round_trips_through_its_model() -> None:
    """from_wire then to_wire keeps every declared field (nested objects, lists, enums)."""
    from mysql_backup_operator.api.schema import to_wire

    wire = {
        "phase": "Completed",
        "storage": {"bucket": "b", "endpoint": None, "forcePathStyle": True},
        "binlog": {"file": "mysql-bin.000001", "position": 4, "gtid": "0-1-2"},
        "databases": ["shop"],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Completed"}],
    }
    status = from_wire(BackupStatus, wire)
    assert status.phase.terminal if status.phase else False
    assert to_wire(status) == {**wire, "storage": {"bucket": "b", "forcePathStyle": True}}
