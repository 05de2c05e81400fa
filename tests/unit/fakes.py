"""A fake Kubernetes door for controller tests: an in-memory API with the methods of kube.Kube.

It records every call, so a test can also assert what a step did *not* do (no API call for a
finished object). Leases follow the real semantics the lock relies on: create fails with 409 when
the Lease exists, replace and delete check resourceVersion.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from kubernetes.client.rest import ApiException
from mysql_backup_operator.controllers.cache import Cache

_rv = itertools.count(1)
_uid = itertools.count(1)


class FakeCoordination:
    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}

    def _obj(self, lease: dict[str, Any]) -> Any:
        return SimpleNamespace(
            spec=SimpleNamespace(holder_identity=lease["spec"].get("holderIdentity")),
            metadata=SimpleNamespace(resource_version=lease["metadata"]["resourceVersion"]),
        )

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        if (namespace, name) not in self.leases:
            raise ApiException(status=404)
        return self._obj(self.leases[(namespace, name)])

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> None:
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            raise ApiException(status=409)
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(next(_rv))
        self.leases[key] = body

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        cur = self.leases.get((namespace, name))
        if cur is None:
            raise ApiException(status=404)
        if body["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(next(_rv))
        self.leases[(namespace, name)] = body

    def delete_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        cur = self.leases.get((namespace, name))
        if cur is None:
            raise ApiException(status=404)
        if body["preconditions"]["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        del self.leases[(namespace, name)]


class FakeKube:
    """Custom objects, Jobs, pods, Secrets and Events in dicts; `calls` lists (method, args)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.coordination = FakeCoordination()
        self.peerings: dict[tuple[str | None, str], dict[str, Any]] = {}  # (namespace, name) -> status
        self.between_pages: Callable[[str, str], None] | None = None

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    # ---------------------------------------------------------------- custom resources

    def add(self, plural: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(dict(body))
        m = body.setdefault("metadata", {})
        m.update(namespace=namespace, uid=m.get("uid") or f"uid-{next(_uid)}", resourceVersion=str(next(_rv)))
        m.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        m.setdefault("generation", 1)
        body.setdefault("status", {})
        self.objects[(plural, namespace, m["name"])] = body
        return body

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._call("get", plural, namespace, name)
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("backuppolicies", namespace, name)

    def get_backup(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("backups", namespace, name)

    def get_restore(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("restores", namespace, name)

    def list_all(self, plural: str, label_selector: str, *, namespaces: Sequence[str] = ()) -> list[dict[str, Any]]:
        """`key=value` or `!key` (no such label), the two selectors the operator uses."""
        self._call("list", plural, ",".join(namespaces) or "*", label_selector)
        absent = label_selector.startswith("!")
        key, _, value = label_selector.lstrip("!").partition("=")

        def match(labels: Mapping[str, str]) -> bool:
            return key not in labels if absent else labels.get(key) == value

        return [
            copy.deepcopy(o)
            for (p, _, _), o in self.objects.items()
            if p == plural
            and match(o["metadata"].get("labels") or {})
            and (not namespaces or o["metadata"]["namespace"] in namespaces)
        ]

    def list_page(
        self, plural: str, *, namespace: str | None, limit: int, continue_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Pages in name order; `between_pages` runs before each page after the first (what the
        watch delivers meanwhile). Unlike the real apiserver the pages are not one snapshot: a
        harder case for the cache's merge, not an easier one."""
        self._call("list_page", plural, namespace, continue_token)
        if continue_token is not None and self.between_pages is not None:
            self.between_pages(plural, continue_token)
        start = int(continue_token or 0)
        names = sorted((ns, n) for (p, ns, n) in self.objects if p == plural and namespace in (None, ns))
        page = [copy.deepcopy(self.objects[(plural, ns, n)]) for ns, n in names[start : start + limit]]
        return page, (str(start + limit) if start + limit < len(names) else None)

    def list_namespaced(self, plural: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self._call("list", plural, namespace, label_selector)
        return [copy.deepcopy(o) for (p, ns, _), o in self.objects.items() if p == plural and ns == namespace]

    def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> bool:
        self._call("create", plural, namespace, body["metadata"]["name"])
        if (plural, namespace, body["metadata"]["name"]) in self.objects:
            return False
        self.add(plural, namespace, body)
        return True

    def delete(self, plural: str, namespace: str, name: str) -> None:
        self._call("delete", plural, namespace, name)
        self.objects.pop((plural, namespace, name), None)

    def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._call("patch_status", plural, namespace, name)
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            return
        st = obj.setdefault("status", {})
        for k, v in status.items():
            if v is None:
                st.pop(k, None)
            else:
                st[k] = copy.deepcopy(v)
        obj["metadata"]["resourceVersion"] = str(next(_rv))

    def patch_labels(self, plural: str, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        self.patch_metadata(plural, namespace, name, resource_version=None, labels=labels)

    def patch_metadata(
        self,
        plural: str,
        namespace: str,
        name: str,
        *,
        resource_version: str | None,
        labels: Mapping[str, str] | None = None,
        finalizers: list[str] | None = None,
    ) -> None:
        self._call("patch_metadata", plural, namespace, name)
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            return
        m = obj["metadata"]
        if resource_version and resource_version != m["resourceVersion"]:
            raise ApiException(status=409)
        m.setdefault("labels", {}).update(labels or {})
        if finalizers is not None:
            m["finalizers"] = list(finalizers)
            if not finalizers and m.get("deletionTimestamp"):
                del self.objects[(plural, namespace, name)]
                return
        m["resourceVersion"] = str(next(_rv))

    # ---------------------------------------------------------------- jobs, pods, secrets, events

    def create_job(self, body: Mapping[str, Any]) -> bool:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self._call("create_job", *key)
        if key in self.jobs:
            return False
        self.jobs[key] = copy.deepcopy(dict(body))
        return True

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._call("get_job", namespace, name)
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job else None

    def delete_job(self, namespace: str, name: str) -> None:
        self._call("delete_job", namespace, name)
        self.jobs.pop((namespace, name), None)

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        self._call("job_pods", namespace, job_name)
        return copy.deepcopy(self.pods.get((namespace, job_name), []))

    def _agent_exited(self, namespace: str, name: str, *, code: int, result: Mapping[str, Any], **status: Any) -> None:
        """The Job's one pod, its agent container terminated with `code` and `result` as message."""
        import json

        term = {"exitCode": code, "message": json.dumps(dict(result))}
        self.pods[(namespace, name)] = [
            {
                "metadata": {"name": f"{name}-x", "creationTimestamp": "2026-01-01T00:00:01Z"},
                "status": {**status, "containerStatuses": [{"name": "agent", "state": {"terminated": term}}]},
            }
        ]

    def finish_job(self, namespace: str, name: str, *, ok: bool, result: Mapping[str, Any]) -> None:
        """What the Job controller and the agent leave behind: a condition and a termination message."""
        self.jobs[(namespace, name)]["status"] = {
            "conditions": [{"type": "Complete" if ok else "Failed", "status": "True", "reason": "Done"}]
        }
        self._agent_exited(namespace, name, code=0 if ok else 1, result=result)

    def agent_pod_succeeded(self, namespace: str, name: str, *, result: Mapping[str, Any]) -> None:
        """What the kubelet reports ~2 s before the Job controller marks the Job complete: the agent
        container exited 0 with its result, the pod still Running, the Job's status untouched."""
        self._agent_exited(namespace, name, code=0, result=result, phase="Running")

    def secret_values(self, namespace: str, name: str) -> dict[str, str] | None:
        self._call("secret_values", namespace, name)
        return self.secrets.get((namespace, name))

    def namespace_terminating(self, name: str) -> bool:
        return False

    def peering_status(self, name: str, namespace: str | None) -> dict[str, Any]:
        self._call("peering_status", name, namespace)
        return dict(self.peerings.get((namespace, name), {}))

    def event(self, obj: Mapping[str, Any], *, warning: bool, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], reason, message))


def build_cache(kube: FakeKube) -> Cache:
    """The cache as the watch events would have filled it for the fake's current objects."""
    cache = Cache()
    kinds = {"backups": "Backup", "restores": "Restore", "backuppolicies": "BackupPolicy"}
    for (plural, _, _), obj in kube.objects.items():
        cache.put(kinds[plural], obj)
    cache.synced.set()
    return cache
