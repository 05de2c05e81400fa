"""kopf peering: a replica kopf pauses must also stop its own work queue (kopf's pause stops
watches, not the keys our runtime already queued). Against the fake door: milliseconds."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mysql_backup_operator.controllers.operation import Context, Settings
from mysql_backup_operator.controllers.peering import Peering, must_pause
from mysql_backup_operator.controllers.runtime import Runtime, Tuning

from tests.unit.fakes import FakeKube, build_cache
from tests.unit.test_controllers import NS, backup, world

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
ME = 5_000


def peer(priority: int, seen: dt.datetime = NOW, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lastseen": seen.isoformat(), "lifetime": lifetime}


def test_kopfs_rule_higher_or_equal_live_peers_pause_us() -> None:
    assert not must_pause({}, priority=ME, now=NOW)
    assert not must_pause({"me": peer(ME)}, priority=ME, now=NOW)
    assert not must_pause({"me": peer(ME), "newer": peer(ME - 1)}, priority=ME, now=NOW)
    assert must_pause({"me": peer(ME), "older": peer(ME + 1)}, priority=ME, now=NOW)
    # A tie: kopf pauses every peer, so must we.
    assert must_pause({"me": peer(ME), "twin": peer(ME)}, priority=ME, now=NOW)
    # A dead peer (lastseen + lifetime passed) pauses nobody, whatever its priority.
    old = NOW - dt.timedelta(seconds=61)
    assert not must_pause({"me": peer(ME), "gone": peer(ME + 1, seen=old)}, priority=ME, now=NOW)


def paused_runtime(kube: FakeKube) -> Runtime:
    ctx = Context(kube, Settings(lock_namespace="sys", agent_image="img"), cache=build_cache(kube))  # type: ignore[arg-type]
    return Runtime(ctx, Tuning(paused_retry_seconds=7), peering=Peering(name="mbo", priority=ME))


def test_a_paused_replica_keeps_its_queued_keys_and_does_nothing_until_resumed() -> None:
    kube, _ = world()
    backup(kube, "b1")
    kube.peerings[(None, "mbo")] = {"me": peer(ME), "other": peer(ME + 1)}
    rt = paused_runtime(kube)
    assert rt.check_peering(NOW) and rt.paused.is_set()
    rt.backup_event("ADDED", kube.objects[("backups", NS, "b1")])
    kube.calls.clear()
    assert rt.queue.process_one(timeout=0)
    assert kube.calls == [] and (NS, "backup-b1") not in kube.jobs  # no step ran
    assert rt.queue.due_in(("Backup", NS, "b1")) is not None  # still queued, for later

    kube.peerings[(None, "mbo")]["other"] = peer(ME + 1, seen=NOW - dt.timedelta(minutes=5))  # it died
    assert not rt.check_peering(NOW) and not rt.paused.is_set()
    rt.queue.add(("Backup", NS, "b1"))
    assert rt.queue.process_one(timeout=0)
    assert (NS, "backup-b1") in kube.jobs  # resumed: the step ran


def test_namespaced_peerings_are_read_in_each_watched_namespace() -> None:
    kube, _ = world()
    kube.peerings[("b", "mbo")] = {"other": peer(ME + 1)}
    ctx = Context(kube, Settings(lock_namespace="sys", agent_image="img"), cache=build_cache(kube))  # type: ignore[arg-type]
    rt = Runtime(ctx, Tuning(), peering=Peering(name="mbo", priority=ME, namespaces=("a", "b")))
    assert rt.check_peering(NOW)
    assert [c for c in kube.calls if c[0] == "peering_status"] == [
        ("peering_status", ("mbo", "a")),
        ("peering_status", ("mbo", "b")),
    ]
