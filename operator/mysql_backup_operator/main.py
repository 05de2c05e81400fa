"""The operator process: kopf handlers wired to the reconcilers.

Handlers stay thin: turn kopf's view of the object into a plain dict, hand it to the
reconciler, classify what escapes. Timers (not create handlers) drive the state machines, so
the same code path serves new objects, restarts and retries.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from . import __version__, metrics
from .api import BACKUPS, GROUP, POLICIES, RESTORES, VERSION, BackupPhase, RestorePhase
from .kube import Kube
from .models import DEFAULT_AGENT_IMAGE
from .objectstore import StorageError
from .policy import PolicyReconciler
from .reconcile import Reconciler, Settings, scrub

LOG = logging.getLogger("mysql_backup_operator")
INTERVAL = float(os.environ.get("MBO_RECONCILE_INTERVAL", "2"))
POLICY_INTERVAL = float(os.environ.get("MBO_POLICY_INTERVAL", "5"))
FINALIZER = f"{GROUP}/delete-data"

_state: dict[str, Reconciler] = {}
_state_lock = threading.Lock()


def reconciler() -> Reconciler:
    with _state_lock:
        if "r" not in _state:
            settings = Settings(
                lock_namespace=os.environ.get("MBO_LOCK_NAMESPACE")
                or os.environ.get("POD_NAMESPACE")
                or "mysql-backup-operator",
                agent_image=os.environ.get("MBO_AGENT_IMAGE", DEFAULT_AGENT_IMAGE),
            )
            _state["r"] = Reconciler(Kube(), settings)
        return _state["r"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False  # we post our own, meaningful events
    settings.execution.max_workers = int(os.environ.get("MBO_MAX_WORKERS", "16"))
    settings.watching.server_timeout = 120
    reconciler()
    port = int(os.environ.get("MBO_METRICS_PORT", "9090"))
    if port:
        metrics.serve(port)
    LOG.info("mysql-backup-operator %s started (metrics on :%s)", __version__, port or "off")


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }


def _backup_active(status: kopf.Status, **_: Any) -> bool:
    return not BackupPhase(status.get("phase") or "Pending").terminal


def _restore_active(status: kopf.Status, **_: Any) -> bool:
    return not RestorePhase(status.get("phase") or "Pending").terminal


def _classified(step: Callable[[dict[str, Any]], None], body: kopf.Body) -> None:
    """The error boundary: API failures that escape a reconciler become retries with a delay and a
    one-line reason, never a crash or a hot loop."""
    try:
        step(_plain(body))
    except ApiException as e:
        if e.status == 403 and "NamespaceTerminating" in str(e.body):
            raise kopf.TemporaryError("namespace is being deleted", delay=30) from None
        if e.status == 403:
            raise kopf.TemporaryError(
                f"forbidden by RBAC: {e.reason}; check the operator's ClusterRole", delay=30
            ) from None
        if e.status == 409:
            raise kopf.TemporaryError("conflicting update; retrying", delay=1) from None
        raise kopf.TemporaryError(f"Kubernetes API error {e.status} {e.reason}", delay=10) from None


@kopf.timer(GROUP, VERSION, BACKUPS, interval=INTERVAL, sharp=False, when=_backup_active)
def backup_timer(body: kopf.Body, **_: Any) -> None:
    _classified(reconciler().backup, body)


@kopf.timer(GROUP, VERSION, RESTORES, interval=INTERVAL, sharp=False, when=_restore_active)
def restore_timer(body: kopf.Body, **_: Any) -> None:
    _classified(reconciler().restore, body)


@kopf.timer(GROUP, VERSION, POLICIES, interval=POLICY_INTERVAL, sharp=False)
def policy_timer(body: kopf.Body, **_: Any) -> None:
    _classified(PolicyReconciler(reconciler()).reconcile, body)


@kopf.on.delete(GROUP, VERSION, BACKUPS)
def backup_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
    """Holds the finalizer until the Backup's objects are gone (deletionPolicy Delete)."""
    obj = _plain(body)
    try:
        done = reconciler().delete_backup_data(obj)
    except StorageError as e:
        ns = body.metadata.namespace or ""
        if e.no_credentials and reconciler().kube.namespace_terminating(ns):
            # The namespace controller deletes Secrets and Backups together; holding the finalizer
            # would wedge the namespace forever. The objects stay in the bucket (sync can re-import).
            LOG.warning(
                "Backup %s/%s: namespace is being deleted and %s; leaving its objects", ns, body.metadata.name, e
            )
            return
        delay = min(5 * 2**retry, 300)
        message = scrub(f"could not delete backup data yet: {e}; retrying in {delay}s", [])
        reconciler().kube.event(obj, warning=True, reason="DeletionPending", message=message)
        raise kopf.TemporaryError(message, delay=delay) from None
    LOG.info("Backup %s/%s deleted: %s", body.metadata.namespace, body.metadata.name, done)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("MBO_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # kopf logs every successful timer run at INFO; our reconcilers log what actually changes.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = [n for n in os.environ.get("MBO_WATCH_NAMESPACES", "").split(",") if n]
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=os.environ.get("MBO_PEERING", "") == "",
        peering_name=os.environ.get("MBO_PEERING") or None,
        # kopf pauses *every* peer when two share a priority, so equal replicas would all stand
        # still; a random priority per process makes exactly one of them the active one.
        priority=int(os.environ.get("MBO_PEERING_PRIORITY") or secrets.randbelow(2**31) + 1),
        liveness_endpoint=os.environ.get("MBO_LIVENESS_ENDPOINT") or None,
    )


if __name__ == "__main__":
    main()
