"""The operator's only door to the Kubernetes API: typed wrappers around the client calls it makes.

Errors are classified here, at the boundary: a 404 becomes None, a conflict on create becomes
"already exists" (which callers treat as done), and transient failures become TransientError,
which the work queue turns into a retry after its delay. kopf is not imported here: the I/O layer
does not depend on the framework that delivers the events.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..api import BACKUPS, GROUP, POLICIES, RESTORES, VERSION

LOG = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class TransientError(Exception):
    """The API could not answer now; retry the whole reconcile step after `delay` seconds."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def transient(fn: Callable[P, R]) -> Callable[P, R]:
    """Turns apiserver hiccups into TransientError so the caller retries with a delay."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            if e.status in TRANSIENT_STATUSES or e.status is None or e.status == 0:
                raise TransientError(f"Kubernetes API unavailable ({e.status} {e.reason})", delay=5) from None
            raise
        except (ConnectionError, TimeoutError, OSError) as e:
            raise TransientError(f"Kubernetes API unreachable: {type(e).__name__}", delay=5) from None

    return wrapper


@dataclass(frozen=True)
class UserConfig:
    """A client built from a person's own kubeconfig (the plugin, the console): their credentials,
    so their RBAC decides; the namespace is the one asked for, else the context's, else default."""

    api_client: Any
    context: str
    namespace: str


def user_config(*, kubeconfig: str | None, context: str | None, namespace: str | None) -> UserConfig:
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    if context:
        active = next((c for c in contexts if c["name"] == context), active)
    return UserConfig(
        api_client=client.ApiClient(cfg),
        context=str(active.get("name") or ""),
        namespace=namespace or (active.get("context") or {}).get("namespace") or "default",
    )


class Kube:
    def __init__(self, api_client: Any | None = None) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.api = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.authz = client.AuthorizationV1Api(api_client)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        return dict(self.api.sanitize_for_serialization(obj))

    # ---------------------------------------------------------------- custom resources

    @transient
    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(POLICIES, namespace, name)

    def get_backup(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(BACKUPS, namespace, name)

    def get_restore(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(RESTORES, namespace, name)

    @transient
    def list_all(self, plural: str, label_selector: str, *, namespaces: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every object with the labels, cluster-wide, or in each of `namespaces` (the operator's
        watch scope: with `watchNamespaces` it may only list there)."""
        if not namespaces:
            res = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, label_selector=label_selector)
            return list(res.get("items") or [])
        items: list[dict[str, Any]] = []
        for ns in namespaces:
            res = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural, label_selector=label_selector)
            items += res.get("items") or []
        return items

    @transient
    def list_page(
        self, plural: str, *, namespace: str | None, limit: int, continue_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a LIST (cluster-wide for namespace None) and the token for the next page
        (None after the last). All pages of one listing are one consistent snapshot (the token
        pins the first page's resourceVersion); an expired token is a 410 ApiException: list
        again from the start."""
        extra: dict[str, Any] = {"limit": limit}
        if continue_token:
            extra["_continue"] = continue_token
        if namespace is None:
            res = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **extra)
        else:
            res = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **extra)
        token = (res.get("metadata") or {}).get("continue") or None
        return list(res.get("items") or []), token

    @transient
    def list_namespaced(self, plural: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        res = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, label_selector=label_selector
        )
        return list(res.get("items") or [])

    @transient
    def delete(self, plural: str, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as e:
            if e.status != 404:
                raise

    @transient
    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
        except ApiException as e:
            if e.status != 404:
                raise

    @transient
    def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> bool:
        """True if created, False if it already existed (a repeat after a restart)."""
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, dict(body))
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    @transient
    def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": dict(status)}
            )
        except ApiException as e:
            if e.status != 404:
                raise

    @transient
    def patch_labels(self, plural: str, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, {"metadata": {"labels": dict(labels)}}
        )

    @transient
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
        """One merge patch for labels and the whole finalizer list, guarded by resourceVersion so a
        concurrent writer's finalizer is never dropped (a 409 makes the caller retry on fresh data)."""
        meta: dict[str, Any] = {}
        if resource_version:
            meta["resourceVersion"] = resource_version
        if labels:
            meta["labels"] = dict(labels)
        if finalizers is not None:
            meta["finalizers"] = finalizers
        try:
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, {"metadata": meta})
        except ApiException as e:
            if e.status != 404:
                raise

    @transient
    def peering_status(self, name: str, namespace: str | None) -> dict[str, Any]:
        """The peers kopf records in its (Cluster)KopfPeering object; {} when there is none yet."""
        try:
            if namespace is None:
                obj = self.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
            else:
                obj = self.custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name)
        except ApiException as e:
            if e.status == 404:
                return {}
            raise
        return dict(obj.get("status") or {})

    # ---------------------------------------------------------------- as a person (plugin, console)
    # These return the server's answer as it is and raise ApiException for every refusal: a person
    # must see "not found", "forbidden" or the admission policy's own message, and no retry
    # happens behind their back (no TransientError, unlike the operator's calls above).

    def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of a kind in one namespace, or in all namespaces for None."""
        if namespace is None:
            res = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        else:
            res = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        return list(res.get("items") or [])

    def read(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))

    def create_object(self, plural: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, dict(body)))

    def delete_object(self, plural: str, namespace: str, name: str, *, dry_run: bool = False) -> None:
        """With dry_run the apiserver runs RBAC and admission (the scheduled-Backup policy) but deletes nothing."""
        extra = {"dry_run": "All"} if dry_run else {}
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, **extra)

    # ---------------------------------------------------------------- jobs and pods

    @transient
    def create_job(self, body: Mapping[str, Any]) -> bool:
        try:
            self.batch.create_namespaced_job(body["metadata"]["namespace"], dict(body))
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    @transient
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.to_dict(self.batch.read_namespaced_job(name, namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    @transient
    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}")
        return [self.to_dict(p) for p in pods.items]

    @transient
    def pods_version(self, namespace: str | None, *, label_selector: str) -> str:
        """The resourceVersion to watch pods from "now": a LIST of at most one pod, so a (re)started
        watch is not first handed every matching pod that already exists."""
        kw: dict[str, Any] = {"label_selector": label_selector, "limit": 1}
        res = (
            self.core.list_pod_for_all_namespaces(**kw)
            if namespace is None
            else self.core.list_namespaced_pod(namespace, **kw)
        )
        return str(res.metadata.resource_version)

    def watch_pods(
        self,
        namespace: str | None,
        *,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
    ) -> Iterator[tuple[str, dict[str, Any], str]]:
        """(event type, pod, resourceVersion to resume from) for pods that match, until the server
        ends the watch after `timeout_seconds`. Raises ApiException (410 when the version is too
        old: take a new one from `pods_version`)."""
        from kubernetes import watch

        w = watch.Watch()
        kw: dict[str, Any] = {
            "label_selector": label_selector,
            "resource_version": resource_version,
            "timeout_seconds": timeout_seconds,
            "allow_watch_bookmarks": True,
            "_request_timeout": timeout_seconds + 30,
        }
        if namespace is None:
            stream = w.stream(self.core.list_pod_for_all_namespaces, **kw)
        else:
            stream = w.stream(self.core.list_namespaced_pod, namespace, **kw)
        for ev in stream:
            obj = ev.get("object")
            pod = obj if isinstance(obj, dict) else self.to_dict(obj)
            yield str(ev.get("type")), pod, str(w.resource_version or resource_version)

    @transient
    def namespace_terminating(self, name: str) -> bool:
        try:
            ns = self.core.read_namespace(name)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return ns.metadata.deletion_timestamp is not None

    # ---------------------------------------------------------------- deployments (binlog archivers)

    @transient
    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.to_dict(self.apps.read_namespaced_deployment(name, namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    @transient
    def apply_deployment(self, body: Mapping[str, Any], *, resource_version: str | None) -> None:
        """Creates the Deployment, or replaces it (guarded by resource_version) when it exists."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            if resource_version is None:
                self.apps.create_namespaced_deployment(ns, dict(body))
            else:
                meta = {**body["metadata"], "resourceVersion": resource_version}
                self.apps.replace_namespaced_deployment(name, ns, {**body, "metadata": meta})
        except ApiException as e:
            if e.status == 409:
                raise TransientError(f"Deployment {ns}/{name} changed meanwhile", delay=1) from None
            raise

    @transient
    def delete_deployment(self, namespace: str, name: str) -> None:
        try:
            self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    # ---------------------------------------------------------------- secrets

    @transient
    def secret_values(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            s = self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (s.data or {}).items()}

    # ---------------------------------------------------------------- events

    def event(self, obj: Mapping[str, Any], *, warning: bool, reason: str, message: str) -> None:
        """Posts a core/v1 Event. Best effort: an event that cannot be posted never fails a handler."""
        meta = obj["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": "Warning" if warning else "Normal",
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "mysql-backup-operator", "host": os.environ.get("HOSTNAME", "")},
            "reportingComponent": "mysql-backup-operator",
            "reportingInstance": os.environ.get("HOSTNAME", "mysql-backup-operator"),
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except Exception as e:
            LOG.warning("could not post event %s on %s: %s", reason, meta["name"], type(e).__name__)
