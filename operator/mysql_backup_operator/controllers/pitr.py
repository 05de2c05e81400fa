"""Point-in-time recovery, operator side: the archiver Deployment per policy, the policy's
recoverable windows read from the archive's index, and the plan of a point-in-time Restore.

Hooks: the policy reconciler calls `policy_pass` (and wakes again after `checkIntervalSeconds`,
the requeue-after of the event-driven core: the archiver reports only through storage, so the
index must be re-read, but nothing polls per object in between); the Restore state machine calls
`resolve_restore` at its first step and `job_config` when it renders the restore Job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from .. import jobs, metrics, naming, pitr
from ..api import API_VERSION, BACKUPS, COND_BINLOG_GAP, GROUP, LABEL_MANAGED_BY, LABEL_POLICY, MANAGED_BY
from ..api.backup import BackupPhase
from ..api.common import parse_iso, set_condition
from ..api.policy import PolicySpec
from ..api.restore import RestoreSpec
from ..backends import Target
from ..contract import binlog as bl
from ..k8s.kube import TransientError
from ..objectstore import Location, StorageError, Store

LOG = logging.getLogger(__name__)
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT = "binlog-archiver"
STATUS_KEY = "pointInTimeRecovery"


def archiver_name(policy: str) -> str:
    return naming.bounded(f"binlog-archiver-{policy}")


def policy_dir(policy: PolicySpec) -> str:
    """The policy's folder in the bucket: the backups' folders and `binlog/` live under it."""
    return "/".join(p for p in (Target.of(policy).prefix.strip("/"), policy.namespace, policy.name) if p)


def render_archiver(policy: PolicySpec, *, policy_uid: str) -> dict[str, Any]:
    """The archiver Deployment: one replica, Recreate (never two archivers on purpose), the
    agent's restricted pod with a disk emptyDir for binlog files, owned by the policy."""
    assert policy.pitr is not None
    cfg = jobs.agent_connection_config(policy)
    cfg["archive"] = {
        "directory": policy_dir(policy),
        "segmentSeconds": policy.pitr.segment_seconds,
        "pollSeconds": policy.pitr.poll_seconds,
        "policy": policy.name,
    }
    pod = jobs.agent_pod_spec(
        policy=policy, operation="archive", agent_config=cfg, restart_policy="Always", work_volume="binlogs"
    )
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_POLICY: naming.bounded(policy.name), LABEL_COMPONENT: COMPONENT}
    spec = {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": archiver_name(policy.name),
            "namespace": policy.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_SPEC_HASH: digest},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "BackupPolicy",
                    "name": policy.name,
                    "uid": policy_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def _epoch(text: str | None) -> int | None:
    return int(parse_iso(text).timestamp()) if text else None


def full_backup(obj: Mapping[str, Any]) -> pitr.FullBackup | None:
    """A completed Backup with a binlog position, as the planner needs it; None otherwise."""
    st = obj.get("status") or {}
    binlog = st.get("binlog") or {}
    completed = _epoch(st.get("completedAt"))
    if st.get("phase") != BackupPhase.COMPLETED or not binlog.get("file") or completed is None:
        return None
    return pitr.FullBackup(
        name=obj["metadata"]["name"],
        completed=completed,
        file=str(binlog["file"]),
        position=int(binlog.get("position") or 4),
        gtid=binlog.get("gtid"),
    )


class PitrController:
    def __init__(self, base: Any) -> None:
        self.base = base  # the controllers' shared Context: kube, cache, policy(), store()
        self.kube = base.kube
        self._backups: dict[str, pitr.FullBackup | None] = {}  # uid -> what a completed Backup gives
        self._applied: dict[tuple[str, str], str] = {}  # archiver Deployment -> spec hash applied

    # ------------------------------------------------------------------ storage (the one place)

    def read_index(self, policy: PolicySpec) -> bl.Index:
        """One GET of index.json; an archive that has not written one yet is empty."""
        store = self._store(policy)
        try:
            doc = store.read_json(bl.index_key(policy_dir(policy)))
        except StorageError as e:
            if e.missing:
                return bl.Index()
            raise
        finally:
            store.close()
        return bl.Index.parse(doc) if doc else bl.Index()

    def write_retention(self, policy: PolicySpec, floor: int) -> None:
        store = self._store(policy)
        try:
            body = json.dumps({"before": floor}).encode()
            store.put(bl.retention_key(policy_dir(policy)), body)
        except Exception as e:
            raise StorageError(f"write the binlog retention floor: {type(e).__name__}") from None
        finally:
            store.close()

    def _store(self, policy: PolicySpec) -> Store:
        return self.base.store(policy.namespace, Location.for_policy(policy, "", ""))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ the policy's side

    def full_backups(self, policy: PolicySpec) -> list[pitr.FullBackup]:
        """The policy's completed Backups with binlog positions. The watch-fed cache says which exist;
        each completed one is read once (its binlog position is not in the cache rows)."""
        out = []
        rows = self.base.cache.backups_of_policy(policy.namespace, policy.name)
        for row in rows:
            if row.phase != BackupPhase.COMPLETED:
                continue
            if row.uid not in self._backups:
                obj = self.kube.get_backup(policy.namespace, row.name)
                self._backups[row.uid] = full_backup(obj) if obj else None
            fb = self._backups[row.uid]
            if fb is not None:
                out.append(fb)
        live = {r.uid for r in rows}
        for uid in [u for u in self._backups if u not in live]:
            del self._backups[uid]
        return out

    def policy_pass(
        self, obj: Mapping[str, Any], policy: PolicySpec, conditions: list[dict[str, Any]], now: dt.datetime
    ) -> tuple[dict[str, Any], list[dict[str, Any]], float | None]:
        """Keeps the archiver Deployment in line with the spec and the status in line with the
        archive. Returns (status patch, conditions, seconds until the next look or None)."""
        m = obj["metadata"]
        ns, name = m["namespace"], m["name"]
        status = obj.get("status") or {}
        gen = int(m.get("generation") or 1)
        if policy.pitr is None:
            if status.get(STATUS_KEY) is None:
                return {}, conditions, None
            self.kube.delete_deployment(ns, archiver_name(name))
            self._applied.pop((ns, archiver_name(name)), None)
            kept = [c for c in conditions if c.get("type") != COND_BINLOG_GAP]
            return {STATUS_KEY: None}, kept, None
        body = render_archiver(policy, policy_uid=m["uid"])
        self._ensure_archiver(obj, body)
        wake = float(policy.pitr.check_interval_seconds)
        try:
            index = self.read_index(policy)
        except (StorageError, bl.BinlogError) as e:
            msg = f"cannot read the binlog index: {e}"
            return {STATUS_KEY: {**(status.get(STATUS_KEY) or {}), "message": msg}}, conditions, wake
        backups = self.full_backups(policy)
        windows = pitr.windows(index, backups)
        last = max((s.last_time or 0 for s in index.segments), default=0)
        previous = status.get(STATUS_KEY) or {}
        floor = pitr.retention_floor(index, backups)
        retain_from = previous.get("retainFrom")
        if floor is not None and pitr.iso(floor) != retain_from:
            try:
                self.write_retention(policy, floor)
                retain_from = pitr.iso(floor)
            except StorageError as e:
                LOG.warning("BackupPolicy %s/%s: %s", ns, name, e)
        block: dict[str, Any] = {
            "retainFrom": retain_from,
            "archiver": body["metadata"]["name"],
            "segments": len(index.segments),
            "lastArchivedTime": pitr.iso(last) if last else None,
            "windows": [w.to_status() for w in windows],
            "gaps": pitr.gap_status(index.gaps),
            "message": None,
        }
        if last:
            metrics.binlog_archived(namespace=ns, policy=name, timestamp=last, segments=len(index.segments))
        seen = {(g.get("after"), g.get("before")) for g in previous.get("gaps") or []}
        for g in index.gaps:
            if (g.after, g.before) not in seen:
                self.kube.event(obj, warning=True, reason=COND_BINLOG_GAP, message=f"{g.reason}: {g.message}")
        newest = max(index.gaps, key=lambda g: g.detected, default=None)
        conditions = set_condition(
            conditions,
            type_=COND_BINLOG_GAP,
            status=newest is not None,
            reason=newest.reason if newest else "NoGap",
            message=newest.message if newest else "the archived binlogs form an unbroken chain",
            generation=gen,
            now=now,
        )
        return {STATUS_KEY: block}, conditions, wake

    def _ensure_archiver(self, obj: Mapping[str, Any], body: dict[str, Any]) -> None:
        """Creates or replaces the Deployment when its rendered spec changed. The hash this process
        last applied is remembered, so a pass that changes nothing makes no request; after a
        restart each policy costs one GET."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        want = body["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
        if self._applied.get((ns, name)) == want:
            return
        current = self.kube.get_deployment(ns, name)
        have = ((current or {}).get("metadata") or {}).get("annotations", {}).get(ANNOTATION_SPEC_HASH)
        if current is None or have != want:
            rv = current["metadata"]["resourceVersion"] if current else None
            self.kube.apply_deployment(body, resource_version=rv)
            verb = "created" if current is None else "updated"
            self.kube.event(obj, warning=False, reason="Archiver", message=f"binlog archiver {verb}")
        self._applied[(ns, name)] = want

    # ------------------------------------------------------------------ the Restore's side

    def resolve_restore(
        self, obj: Mapping[str, Any], spec: RestoreSpec, policy_of_backup: str | None
    ) -> tuple[RestoreSpec, dict[str, Any] | None, str | None]:
        """(the spec with its backup chosen, the status patch recording the plan, a refusal
        message). The plan is computed once, at the first step, and read back from status after."""
        recorded = (obj.get("status") or {}).get("pointInTime") or {}
        if recorded.get("backup"):
            return dataclasses.replace(spec, backup=str(recorded["backup"])), None, None
        ns = obj["metadata"]["namespace"]
        policy_name = spec.policy or policy_of_backup or ""
        _, policy = self.base.policy(ns, policy_name)
        if policy is None:
            return spec, None, f'BackupPolicy "{policy_name}" not found'
        if policy.pitr is None:
            return spec, None, f'BackupPolicy "{policy_name}" does not archive binlogs (spec.pointInTimeRecovery)'
        index = self.read_index(policy)
        backups = [
            fb
            for b in self.kube.list_namespaced(BACKUPS, ns, f"{LABEL_POLICY}={naming.bounded(policy.name)}")
            if (fb := full_backup(b)) is not None
        ]
        try:
            plan = pitr.plan(
                index,
                backups,
                time=pitr.epoch(spec.target_time) if spec.target_time else None,
                gtid=spec.target_gtid,
                base=spec.backup or None,
            )
        except pitr.NotRecoverable as e:
            return spec, None, str(e)
        databases = policy.database.databases
        patch = {
            "pointInTime": {
                **plan.to_status(),
                "policy": policy.name,
                "database": databases[0] if len(databases) == 1 else None,
            }
        }
        return dataclasses.replace(spec, backup=plan.backup), patch, None


def job_config(status: Mapping[str, Any], policy: PolicySpec) -> dict[str, Any] | None:
    """What the restore Job's agent needs of the recorded plan (None: not a point-in-time restore).
    Constant-size: the agent reads the segment list from the index and checks it against the plan."""
    rec = status.get("pointInTime") or {}
    if not rec.get("backup"):
        return None
    return {
        "directory": policy_dir(policy),
        "firstSegment": rec["firstSegment"],
        "lastSegment": rec["lastSegment"],
        "segmentCount": int(rec["segmentCount"]),
        "segmentsDigest": rec["segmentsDigest"],
        "startPosition": int(rec["startPosition"]),
        "stopTime": pitr.epoch(rec["stopTime"]) if rec.get("stopTime") else None,
        "stopGtid": rec.get("stopGtid"),
        "database": rec.get("database"),
    }


def resolve_point_in_time(
    base: Any, obj: Mapping[str, Any], spec: RestoreSpec
) -> tuple[RestoreSpec, dict[str, Any] | None, str | None]:
    """The Restore state machine's hook: picks the backup of a point-in-time Restore (see
    PitrController.resolve_restore). A storage failure is transient: retried by the queue."""
    recorded = (obj.get("status") or {}).get("pointInTime") or {}
    if recorded.get("backup"):  # planned at the first step: no I/O on later steps
        return dataclasses.replace(spec, backup=str(recorded["backup"])), None, None
    policy_of_backup = None
    if spec.backup and not spec.policy:
        backup = base.kube.get_backup(obj["metadata"]["namespace"], spec.backup)
        policy_of_backup = ((backup or {}).get("spec") or {}).get("policyRef", {}).get("name")
    try:
        return PitrController(base).resolve_restore(obj, spec, policy_of_backup)
    except StorageError as e:
        raise TransientError(f"cannot read the binlog index: {e}", delay=10) from None
