from __future__ import annotations

import datetime as dt

from mysql_backup_operator import conditions as c
from mysql_backup_operator.api import Reason

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    first = c.set_condition([], type_="Queued", status=True, reason="r", message="m", generation=1, now=T0)
    second = c.set_condition(first, type_="Queued", status=True, reason="r", message="m2", generation=2, now=T1)
    assert second[0]["lastTransitionTime"] == c.iso(T0)
    assert second[0]["observedGeneration"] == 2
    third = c.set_condition(second, type_="Queued", status=False, reason="r", message="m", generation=2, now=T1)
    assert third[0]["lastTransitionTime"] == c.iso(T1)


def test_queued_patches_only_on_visible_change() -> None:
    p = c.queued({}, holder="Backup ns/a", position=2, reason=Reason.DATABASE_BUSY, generation=1, now=T0)
    assert p is not None and p["phase"] == "Pending" and p["reason"] == "DatabaseBusy"
    assert "Backup ns/a" in p["message"]
    assert c.queued(p, holder="Backup ns/a", position=2, reason=Reason.DATABASE_BUSY, generation=1, now=T1) is None


def test_completed_and_failed_carry_duration_and_ready_condition() -> None:
    running = c.backup_running({}, job_name="j", generation=1, now=T0)
    done = c.backup_completed(
        running, result={"location": "s3://b/k", "sha256": "x", "sizeBytes": 10}, generation=1, now=T1
    )
    assert done["phase"] == "Completed" and done["durationSeconds"] == 300.0 and done["sha256"] == "x"
    ready = next(x for x in done["conditions"] if x["type"] == "Ready")
    assert ready["status"] == "True"
    bad = c.failed(running, reason=Reason.AUTHENTICATION_FAILED, message="no", generation=1, now=T1)
    assert bad["phase"] == "Failed" and bad["reason"] == "AuthenticationFailed"
