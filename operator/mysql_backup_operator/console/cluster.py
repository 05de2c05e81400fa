"""The console's access to Kubernetes: the user's kubeconfig, their RBAC, nothing else.

All calls go through `Cluster.call`, which turns an ApiException into `ApiError` carrying the
server's own message (RBAC, admission policy, not found), so no stack trace reaches a page.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import views
from ._operator import (
    API_VERSION,
    BACKUPS,
    GROUP,
    POLICIES,
    RESTORES,
    VERSION,
    Kube,
    lock_name,
    manual_backup_name,
    user_config,
)

WATCHED = (POLICIES, BACKUPS, RESTORES)


class ApiError(Exception):
    """An API answer the user must see: status plus the payload from `views.api_error`."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload.get("message", "error"))
        self.payload = payload

    @property
    def status(self) -> int:
        return int(self.payload.get("status") or 500)


@dataclass(frozen=True)
class Connection:
    kubeconfig: str | None
    context: str | None
    namespace: str | None
    operator_namespace: str


class Cluster:
    """The console's calls, through the operator's Kubernetes door (k8s/kube.py) with the user's
    own kubeconfig; only the error shape (`ApiError` for a page) is the console's own."""

    def __init__(self, conn: Connection) -> None:
        from kubernetes import client

        user = user_config(kubeconfig=conn.kubeconfig, context=conn.context, namespace=conn.namespace)
        self.context = user.context
        self.namespace = user.namespace
        self.operator_namespace = conn.operator_namespace
        self.client = client
        self.kube = Kube(user.api_client)
        self.custom = self.kube.custom
        self.core = self.kube.core
        self.coordination = self.kube.coordination
        self.authz = self.kube.authz

    def call(self, fn: Callable[..., Any], *a: Any, verb: str = "", what: str = "", **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except self.client.ApiException as e:
            raise ApiError(views.api_error(e.status or 500, e.body, e.reason, verb=verb, what=what)) from None
        except OSError as e:
            raise ApiError({"status": 502, "title": "Cannot reach the cluster", "message": str(e)}) from None

    # Reads.
    def list_objects(self, plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call(
            self.kube.list_objects, plural, self.namespace, verb="list", what=plural
        )
        return items

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return dict(self.call(self.kube.read, plural, self.namespace, name, verb="read", what=f"{plural} {name}"))

    def events_for(self, name: str) -> list[dict[str, Any]]:
        res = self.call(
            self.core.list_namespaced_event,
            self.namespace,
            field_selector=f"involvedObject.name={name}",
            verb="list",
            what="events",
        )
        out = []
        for e in res.items:
            when = e.last_timestamp or e.event_time or e.first_timestamp or e.metadata.creation_timestamp
            out.append(
                {
                    "type": e.type,
                    "reason": e.reason,
                    "message": e.message,
                    "kind": e.involved_object.kind,
                    "count": e.count,
                    "time": when.isoformat() if isinstance(when, dt.datetime) else when,
                }
            )
        return sorted(out, key=lambda x: str(x["time"] or ""))

    def job_logs(self, job_name: str, *, tail: int = 200) -> list[dict[str, Any]]:
        """The last lines of each pod of a Job (the agent's JSON-lines log; it never logs secrets)."""
        pods = self.call(
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"job-name={job_name}",
            verb="list",
            what="pods",
        ).items
        out = []
        for p in sorted(pods, key=lambda p: p.metadata.creation_timestamp):
            entry: dict[str, Any] = {"pod": p.metadata.name, "phase": p.status.phase}
            try:
                entry["log"] = self.call(
                    self.core.read_namespaced_pod_log, p.metadata.name, self.namespace, tail_lines=tail,
                    verb="read the logs of", what=f"pod {p.metadata.name}",
                )  # fmt: skip
            except ApiError as e:
                entry["error"] = e.payload
            out.append(entry)
        return out

    def lease_holders(self, keys: list[str]) -> tuple[dict[str, str | None], str | None]:
        """Lock holders read from the operator's Leases; (holders, why not) when the user may not read them."""
        holders: dict[str, str | None] = {}
        for key in keys:
            try:
                lease = self.call(
                    self.coordination.read_namespaced_lease, lock_name(key), self.operator_namespace,
                    verb="read", what=f"Leases in namespace {self.operator_namespace}",
                )  # fmt: skip
            except ApiError as e:
                if e.status == 404:
                    holders[key] = None
                    continue
                return {}, str(e.payload.get("message"))
            holders[key] = lease.spec.holder_identity or None
        return holders, None

    def can(self, verb: str, resource: str) -> bool:
        """A SelfSubjectAccessReview: lets a page explain up front what this user may not do."""
        body = {
            "spec": {
                "resourceAttributes": {
                    "namespace": self.namespace,
                    "verb": verb,
                    "group": GROUP,
                    "resource": resource,
                }
            }
        }
        try:
            res = self.call(self.authz.create_self_subject_access_review, body)
        except ApiError:
            return True  # unknown: let the real call answer
        return bool(res.status.allowed)

    # Writes.
    def create_backup(self, *, policy: str, description: str | None) -> dict[str, Any]:
        name = manual_backup_name(policy, dt.datetime.now(dt.UTC))
        spec: dict[str, Any] = {"policyRef": {"name": policy}, "trigger": "manual"}
        if description:
            spec["description"] = description
        body = {"apiVersion": API_VERSION, "kind": "Backup", "metadata": {"name": name}, "spec": spec}
        return dict(
            self.call(
                self.kube.create_object, BACKUPS, self.namespace, body,
                verb="create", what=f"Backups in namespace {self.namespace}",
            )
        )  # fmt: skip

    def create_restore(self, *, backup: str, databases: list[str] | None, target: str | None) -> dict[str, Any]:
        name = f"restore-{backup}-{uuid.uuid4().hex[:5]}"[:253]
        spec: dict[str, Any] = {"backupRef": {"name": backup}}
        if databases:
            spec["databases"] = databases
        if target:
            spec["target"] = target
        body = {"apiVersion": API_VERSION, "kind": "Restore", "metadata": {"name": name}, "spec": spec}
        return dict(
            self.call(
                self.kube.create_object, RESTORES, self.namespace, body,
                verb="create", what=f"Restores in namespace {self.namespace} (an admin action)",
            )
        )  # fmt: skip

    def delete_backup(self, name: str, *, dry_run: bool = False) -> None:
        """With dry_run the API server runs RBAC and admission (the scheduled-Backup policy) but deletes nothing."""
        self.call(
            self.kube.delete_object, BACKUPS, self.namespace, name, dry_run=dry_run,
            verb="delete", what=f"Backups in namespace {self.namespace}",
        )  # fmt: skip

    # Live updates.
    def watch(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """Change notices for policies, backups, restores and events, fed by API watches (no polling).

        One thread per watched resource pushes into a queue; a watch that ends is resumed from its
        last resourceVersion, and a 410 Gone restarts it from "now" with a `resync` notice so pages
        refetch. A heartbeat every 15 s lets the HTTP side notice a closed browser tab.
        """
        from kubernetes import watch

        q: queue.Queue[dict[str, Any]] = queue.Queue()

        def run(plural: str) -> None:
            rv: str | None = None
            while not stop.is_set():
                w = watch.Watch()
                kw: dict[str, Any] = {"timeout_seconds": 30, "allow_watch_bookmarks": True}
                if rv:
                    kw["resource_version"] = rv
                try:
                    if plural == "events":
                        stream = w.stream(self.core.list_namespaced_event, self.namespace, **kw)
                    else:
                        stream = w.stream(
                            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, plural, **kw
                        )
                    for ev in stream:
                        if stop.is_set():
                            w.stop()
                            return
                        obj = ev["object"]
                        if ev["type"] == "BOOKMARK":
                            continue
                        if plural == "events":
                            name = obj.involved_object.name
                            q.put({"resource": "events", "type": ev["type"], "name": name})
                        else:
                            m = obj.get("metadata") or {}
                            st = obj.get("status") or {}
                            q.put(
                                {
                                    "resource": plural,
                                    "type": ev["type"],
                                    "name": m.get("name"),
                                    "phase": st.get("phase"),
                                }
                            )
                    rv = w.resource_version
                except self.client.ApiException as e:
                    if e.status == 410:
                        rv = None
                        q.put({"resource": plural, "type": "resync"})
                        continue
                    q.put({"resource": plural, "type": "error", **views.api_error(e.status or 500, e.body, e.reason)})
                    return
                except Exception as e:  # network trouble: say so, retry after a pause
                    q.put({"resource": plural, "type": "error", "status": 502, "message": f"watch interrupted: {e}"})
                    stop.wait(3)

        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in (*WATCHED, "events")]
        for t in threads:
            t.start()
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                yield q.get(timeout=15)
                continue
            yield {"type": "heartbeat"}
