"""The sync controller: recovery of Backup objects from object storage, and the DataMissing check.

Object storage is the source of truth (as in Velero): with `storage.sync`, the policy controller
calls `run` every `syncIntervalSeconds`; it imports every dump that has a valid manifest and its
complete object but no Backup, and flags Backups whose objects vanished. Imported Backups are
complete as they are (no Job runs for them) and keep their data when deleted (Retain).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .. import jobs, naming
from ..api import ANNOTATION_IMPORTED_FROM, API_VERSION, BACKUPS, COND_DATA_MISSING, LABEL_IMPORTED
from ..api.backup import BackupPhase, BackupStatus, Trigger
from ..api.common import iso, set_condition
from ..api.policy import PolicySpec
from ..backends import Target
from ..contract.keys import is_manifest
from ..objectstore import Location, StorageError, Store, holds_all_of, result_from_manifest
from .operation import Context, utcnow

LOG = logging.getLogger(__name__)


class SyncController:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.kube = ctx.kube

    def run(self, obj: Mapping[str, Any], policy: PolicySpec, now: dt.datetime) -> dict[str, Any]:
        """Recovery from storage. Rare (every syncIntervalSeconds), so it reads the Backups live:
        it needs their full status (locations, conditions), which the cache deliberately omits."""
        m = obj["metadata"]
        ns = m["namespace"]
        probe = Location.for_policy(policy, "", "")
        try:
            store = self.ctx.store(ns, probe)
        except StorageError as e:
            self.kube.event(obj, warning=True, reason="SyncFailed", message=str(e))
            return {"lastSyncTime": iso(now), "lastSyncError": str(e)}
        imported = 0
        try:
            everything = self.kube.list_namespaced(BACKUPS, ns, "")
            known = {(b.get("status") or {}).get("location") for b in everything}
            backups = [b for b in everything if (b.get("spec") or {}).get("policyRef", {}).get("name") == m["name"]]
            target = Target.of(policy)
            prefix = "/".join(p for p in (target.prefix, ns, policy.name) if p) + "/"
            # One listing of the policy's folder gives every key and size the pass needs: no HEAD
            # per object (S3 refuses HEAD of an SSE-C object without the customer key).
            listed = store.sizes(prefix)
            for key in sorted(k for k in listed if is_manifest(k)):
                manifest = store.read_json(key)
                if not manifest or not manifest.get("sha256") or not manifest.get("object"):
                    continue
                location = target.url(manifest["object"])
                if location in known:
                    continue
                if not holds_all_of(manifest, listed):
                    continue  # a manifest without its complete dump (every object of it) is not a backup
                self._import(obj, policy=policy, manifest_key=key, manifest=manifest)
                known.add(location)
                imported += 1
            self._check_missing(store, ns, backups, listed=listed, prefix=prefix)
        except StorageError as e:
            self.kube.event(obj, warning=True, reason="SyncFailed", message=str(e))
            return {"lastSyncTime": iso(now), "lastSyncError": str(e)}
        finally:
            store.close()
        if imported:
            self.kube.event(
                obj, warning=False, reason="Imported", message=f"imported {imported} backup(s) from storage"
            )
        return {"lastSyncTime": iso(now), "lastSyncError": None}

    def _import(
        self, obj: Mapping[str, Any], *, policy: PolicySpec, manifest_key: str, manifest: Mapping[str, Any]
    ) -> None:
        ns = obj["metadata"]["namespace"]
        target = Target.of(policy)
        location = target.url(manifest["object"])
        info = manifest.get("backup") or {}
        name = str(info.get("name") or manifest_key.rsplit("/", 2)[-2])
        if self.kube.get_backup(ns, name) is not None:
            name = naming.bounded(f"{name}-imported-{naming.database_key(location)[:8]}", 253)
        trigger = str(info.get("trigger")) if info.get("trigger") in {t.value for t in Trigger} else "manual"
        # Imported data is kept when the CR is deleted: this cluster did not create it.
        body = jobs.render_backup(
            name=name,
            namespace=ns,
            policy=policy,
            trigger=trigger,
            description=f"imported from {target.url(manifest_key)}",
            labels={LABEL_IMPORTED: "true"},
            annotations={ANNOTATION_IMPORTED_FROM: target.url(manifest_key)},
            deletion_policy="Retain",
        )
        self.kube.create(BACKUPS, ns, body)
        self.complete_import(ns, name, policy=policy, manifest_key=manifest_key, manifest=manifest)
        LOG.info("imported Backup %s/%s from %s", ns, name, location)

    def _check_missing(
        self, store: Store, ns: str, backups: Sequence[Mapping[str, Any]], *, listed: Mapping[str, int], prefix: str
    ) -> None:
        """DataMissing from the pass's listing; a key outside the listed folder (a Backup whose
        policy's prefix changed since) is looked up on its own."""

        def exists(key: str) -> bool:
            return key in listed if key.startswith(prefix) else store.exists(key)

        for b in backups:
            st = b.get("status") or {}
            if st.get("phase") != BackupPhase.COMPLETED or not st.get("location"):
                continue
            bucket, key = naming.parse_s3_url(st["location"])
            if bucket != store.bucket:
                continue
            mkey = naming.parse_s3_url(st["manifestLocation"])[1] if st.get("manifestLocation") else None
            missing = not exists(key) or (mkey is not None and not exists(mkey))
            self.set_data_missing(b, missing)

    def complete_import(
        self, namespace: str, name: str, *, policy: PolicySpec, manifest_key: str, manifest: Mapping[str, Any]
    ) -> None:
        obj = self.kube.get_backup(namespace, name)
        if obj is None or (obj.get("status") or {}).get("phase"):
            return
        target = Target.of(policy)
        result = result_from_manifest(target.bucket, manifest_key, manifest, backend=target.backend)
        now = utcnow()
        status = BackupStatus(started_at=manifest.get("startedAt")).completed(result=result, generation=1, now=now)
        status["completedAt"] = manifest.get("completedAt") or status["completedAt"]
        status["durationSeconds"] = manifest.get("durationSeconds")
        status["message"] = f"imported from storage: {result['location']}"
        status["storage"] = Location.for_policy(policy, manifest["object"], manifest_key).to_status()
        status["startedAt"] = manifest.get("startedAt")
        status["conditions"] = set_condition(
            status["conditions"],
            type_="Imported",
            status=True,
            reason="RecoveredFromStorage",
            message=f"imported from {target.url(manifest_key)}",
            generation=1,
            now=now,
        )
        self.kube.patch_status(BACKUPS, namespace, name, status)

    def set_data_missing(self, backup: Mapping[str, Any], missing: bool) -> None:
        st = backup.get("status") or {}
        current = next((c for c in st.get("conditions") or [] if c.get("type") == COND_DATA_MISSING), None)
        if current is None and not missing:
            return
        if current is not None and (current.get("status") == "True") == missing:
            return
        m = backup["metadata"]
        message = f"objects missing from {st.get('location')}" if missing else "objects present"
        conditions = set_condition(
            st.get("conditions") or [],
            type_=COND_DATA_MISSING,
            status=missing,
            reason="ObjectsMissing" if missing else "ObjectsPresent",
            message=message,
            generation=int(m.get("generation") or 1),
            now=utcnow(),
        )
        self.kube.patch_status(BACKUPS, m["namespace"], m["name"], {"conditions": conditions})
        if missing:
            backup_obj = {"apiVersion": API_VERSION, "kind": "Backup", **dict(backup)}
            self.kube.event(backup_obj, warning=True, reason="DataMissing", message=message)
